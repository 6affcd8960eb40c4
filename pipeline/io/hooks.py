"""Builders one part hands another that may not import it.

``teachers/`` and ``student/`` never import each other (DESIGN.md section 4). The paper-size
ego teacher is nevertheless built on the student's PySlowFast backbone, so Kinetics
checkpoints load by the same names into both: the ``pipeline`` package, which may import
both, puts the student's backbone builder here when it is first imported (which any import
of ``teachers`` causes, as teachers import ``pipeline.io``), and ``teachers.ego`` takes it. Nothing heavy is imported by either.
"""
from __future__ import annotations

from typing import Any, Callable

# "pyslowfast": (arch, **kwargs) -> backbone module with ``out_channels`` (student.backbones.create_backbone)
VIDEO_BACKBONES: dict[str, Callable[..., Any]] = {}
