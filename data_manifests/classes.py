"""The class lists of the real datasets, shipped as data files in ``data_manifests/classes/``.

Each file is the dataset's own list, unchanged:

- ``kinetics400.txt``: the 400 Kinetics-400 labels as written in the DeepMind CSVs, in
  their sorted order (index 0 ``abseiling`` .. 399 ``zumba``), the order PySlowFast and
  ``kinetics_400_labels.csv`` use.
- ``charades_v1_classes.txt``: ``Charades_v1_classes.txt``, 157 ``cNNN name`` lines.
- ``epic100_verbs.csv`` / ``epic100_nouns.csv``: ``EPIC_100_verb_classes.csv`` (97) and
  ``EPIC_100_noun_classes.csv`` (300), columns ``id,key,instances,category``.
"""
from __future__ import annotations

import csv
import functools
import io
from importlib.resources import as_file, files


def _text(name: str) -> str:
    return files("data_manifests").joinpath("classes", name).read_text(encoding="utf-8")


@functools.cache
def _kinetics400() -> tuple[str, ...]:
    return tuple(line.strip() for line in _text("kinetics400.txt").splitlines() if line.strip())


@functools.cache
def _charades() -> tuple[tuple[str, str], ...]:
    from .charades_ego import read_charades_classes

    with as_file(files("data_manifests").joinpath("classes", "charades_v1_classes.txt")) as path:
        return tuple(read_charades_classes(path))


@functools.cache
def _epic_keys(name: str) -> tuple[str, ...]:
    rows = list(csv.DictReader(io.StringIO(_text(name))))
    # Labels in the annotation CSVs are these ids, so the list must be exactly 0..N-1 in order.
    if [int(r["id"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"classes/{name}: ids are not 0..{len(rows) - 1} in order")
    return tuple(r["key"] for r in rows)


def kinetics400_classes() -> list[str]:
    """The 400 Kinetics-400 class names; pass as ``classes=`` to fix the label order."""
    return list(_kinetics400())


def charades_classes() -> list[tuple[str, str]]:
    """The 157 Charades classes as ``[(id, name), ...]`` (``("c000", "Holding some clothes")`` first).

    ``read_charades_ego_csv(classes=[cid for cid, _ in charades_classes()])`` gives all 157 columns.
    """
    return list(_charades())


def epic100_verbs() -> list[str]:
    """The 97 EPIC-Kitchens-100 verb class keys, index = ``verb_class`` (``take``, ``put``, ...)."""
    return list(_epic_keys("epic100_verbs.csv"))


def epic100_nouns() -> list[str]:
    """The 300 EPIC-Kitchens-100 noun class keys, index = ``noun_class`` (``tap``, ``spoon``, ...)."""
    return list(_epic_keys("epic100_nouns.csv"))
