"""Codes of the signals store's columns that the teachers write and the student reads.

Both sides import these names from here (``teachers/`` and ``student/`` never import each
other), so a hand box a teacher writes is a hand for the student, for inspection and for the
Ego-Exo release import/export. DESIGN.md section 5 has the store's layout.
"""
from __future__ import annotations

# ``kind`` column (index 5) of the ``handobj/boxes`` rows; also the channel of the student's interaction map.
HAND, OBJECT = 0, 1
HANDOBJ_KINDS = ("hand", "object")  # name of each kind code, by code
# ``contact`` column (index 6): 100DOH's hand contact states N, S, O, P, F (objects get 0).
CONTACT_STATES = ("no_contact", "self", "other_person", "portable_object", "stationary_object")
