"""Manifest format dispatch: one entry point that turns any supported manifest into a ClipTable."""
from __future__ import annotations

import csv
from pathlib import Path

from data_manifests.table import Clip, ClipTable, ManifestError

FORMATS = ("auto", "kinetics", "charades_ego")


def detect_format(path: str | Path) -> str:
    """Guess a manifest's format from its header line."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    cols = {h.strip() for h in header}
    if {"youtube_id", "time_start", "time_end"} <= cols:
        return "kinetics"
    if {"id", "actions"} <= cols:
        return "charades_ego"
    raise ManifestError(f"{path}: cannot tell the manifest format from its header {header!r}; set manifest_format")


def load_manifest(path: str | Path, format: str = "auto", classes: list[str] | None = None) -> ClipTable:
    """Parse ``path`` into the canonical clip table (row order kept)."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest not found: {p}")
    fmt = detect_format(p) if format == "auto" else format
    if fmt == "kinetics":
        from data_manifests.kinetics import read_kinetics_csv

        return read_kinetics_csv(p, classes=classes)
    if fmt == "charades_ego":
        from data_manifests.charades_ego import read_charades_ego_csv

        return read_charades_ego_csv(p, classes=classes)
    raise ManifestError(f"unknown manifest format '{fmt}' (known: {', '.join(FORMATS)})")


def resolve_video(table: ClipTable, clip: Clip, video_root: str | Path) -> Path | None:
    """The clip's video file on disk, or None when it is missing."""
    root = Path(video_root)
    if table.format == "kinetics":
        from data_manifests.kinetics import resolve_kinetics_path

        return resolve_kinetics_path(root, clip)
    p = Path(clip.path) if Path(clip.path).is_absolute() else root / clip.path
    return p if p.exists() else None
