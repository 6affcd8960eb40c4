"""Manifest format dispatch: one entry point that turns any supported manifest into a ClipTable."""
from __future__ import annotations

import csv
from pathlib import Path, PurePath

from data_manifests.table import Clip, ClipTable, ManifestError, Scan, raise_first

FORMATS = ("auto", "kinetics", "charades_ego", "epic100", "generic", "pyslowfast")
# Containers the reader decodes (matched without regard to case).
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv"}


def _looks_like_path(text: str) -> bool:
    return PurePath(text.strip()).suffix.lower() in VIDEO_SUFFIXES or "/" in text or "\\" in text


def check_manifest_file(path: Path) -> None:
    """A manifest must be an existing text file: one clear ``ManifestError`` otherwise."""
    if path.is_dir():
        raise ManifestError(f"{path} is a folder, not a manifest file (pass the CSV or list inside it)")
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        more = bool(f.read(1))
    try:
        head.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if not (more and e.reason == "unexpected end of data"):  # not a character cut off by the read
            hint = (" (EPIC-Kitchens ships a .pkl beside each .csv: pass the .csv)"
                    if path.suffix.lower() in (".pkl", ".pickle") else "")
            raise ManifestError(f"{path} is not a text manifest (binary data at byte {e.start}){hint}") from None
    if b"\0" in head:
        raise ManifestError(f"{path} is not a text manifest (binary data)")


def detect_format(path: str | Path) -> str:
    """Guess a manifest's format from its first non-blank line (a UTF-8 byte-order mark is ignored).

    Headers: ``youtube_id,time_start,time_end`` -> kinetics, ``id,...,actions`` ->
    charades_ego, ``narration_id,...`` -> epic100, ``path,label,...`` -> generic.
    Without a header: two or more comma-separated fields starting with a video path ->
    generic; ``<path> <integer>`` with no comma -> pyslowfast.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = next((line for line in f if line.strip()), "")
    header = next(csv.reader([first]), [])
    cols = {h.strip() for h in header}
    if {"youtube_id", "time_start", "time_end"} <= cols:
        return "kinetics"
    if {"id", "actions"} <= cols:
        return "charades_ego"
    if "narration_id" in cols:
        return "epic100"
    names = [h.strip().lower() for h in header]
    if len(names) >= 2 and (names[0] == "path" and "label" in names or _looks_like_path(names[0])):
        return "generic"
    words = first.split()
    if "," not in first and len(words) >= 2 and words[-1].isdigit():
        return "pyslowfast"
    raise ManifestError(
        f"{path}: cannot tell the manifest format from its first line {first.strip()!r}; "
        f"set manifest_format in the config, or --format for `pipeline data check` (one of {', '.join(FORMATS[1:])})"
    )


def load_manifest(
    path: str | Path,
    format: str = "auto",
    classes: list[str] | None = None,
    *,
    video_root: str | Path | None = None,
) -> ClipTable:
    """Parse ``path`` into the canonical clip table (row order kept).

    ``classes`` fixes the label order (EPIC-100: the verb classes). ``video_root`` is
    where EPIC-100 also looks for ``EPIC_100_video_info.csv``.
    """
    p = Path(path)
    check_manifest_file(p)
    fmt = detect_format(p) if format == "auto" else format
    return raise_first(p, scan_manifest(p, fmt, video_root, classes))


def scan_manifest(path: Path, fmt: str, video_root: str | Path | None = None, classes: list[str] | None = None) -> Scan:
    """Row-by-row parse of a manifest in format ``fmt``: ``(table, lines, problems)``, never raising for a bad row.

    ``classes`` default to the dataset's shipped list (:func:`~data_manifests.classes.shipped_classes`),
    so label ids match the model zoo's whatever subset a file holds; a label outside the list
    is a problem of its row. A file that is not UTF-8 text raises ``ManifestError``.
    """
    try:
        return _scan_manifest(path, fmt, video_root, classes)
    except UnicodeDecodeError as e:  # past the first 64 KiB, which check_manifest_file reads
        raise ManifestError(f"{path} is not a UTF-8 text manifest ({e.reason}, past its first 64 KiB)") from None


def _scan_manifest(path: Path, fmt: str, video_root, classes) -> Scan:
    if classes is None:
        from data_manifests.classes import shipped_classes

        classes = shipped_classes(fmt)
    if fmt == "kinetics":
        from data_manifests.kinetics import scan_kinetics_csv

        return scan_kinetics_csv(path, classes)
    if fmt == "charades_ego":
        from data_manifests.charades_ego import scan_charades_ego_csv

        return scan_charades_ego_csv(path, classes)
    if fmt == "epic100":
        from data_manifests.epic_kitchens import scan_epic100_csv

        return scan_epic100_csv(path, video_root, verb_classes=classes)
    if fmt == "generic":
        from data_manifests.generic import scan_generic_csv

        return scan_generic_csv(path, classes)
    if fmt == "pyslowfast":
        from data_manifests.generic import scan_pyslowfast_list

        return scan_pyslowfast_list(path, classes)
    raise ManifestError(f"unknown manifest format '{fmt}' (known: {', '.join(FORMATS)})")


def resolve_videos(table: ClipTable, clips, video_root: str | Path) -> list[Path | None]:
    """:func:`resolve_video` for many clips; Kinetics lists the video root's folders once
    instead of looking for each clip's file."""
    if table.format == "kinetics":
        from data_manifests.kinetics import KineticsIndex

        index = KineticsIndex(video_root)
        return [index.find(c) for c in clips]
    return [resolve_video(table, c, video_root) for c in clips]


def resolve_video(table: ClipTable, clip: Clip, video_root: str | Path) -> Path | None:
    """The clip's video on disk, or None when it is missing.

    Usually a file; for EPIC-100 the ``.MP4`` if present, else the video's extracted
    ``rgb_frames`` folder (read it at ``clip_frame_rate``). Kinetics finds the clip's file
    by its stem anywhere in the usual download layouts, any video extension
    (:class:`~data_manifests.kinetics.KineticsIndex`; use :func:`resolve_videos` for many clips).
    """
    root = Path(video_root)
    if table.format == "kinetics":
        from data_manifests.kinetics import resolve_kinetics_path

        return resolve_kinetics_path(root, clip)
    if table.format == "epic100":
        from data_manifests.epic_kitchens import resolve_epic_path

        return resolve_epic_path(root, clip)
    p = Path(clip.path) if Path(clip.path).is_absolute() else root / clip.path
    return p if p.exists() else None


def clip_frame_rate(table: ClipTable, clip: Clip, path: str | Path | None = None) -> float | None:
    """The frame rate to read a clip's frames folder at; None for a video file (its container knows its rate).

    Only EPIC-100 clips can resolve to a frames folder; pass the resolved ``path`` to get
    None when it turned out to be the ``.MP4``.
    """
    if table.format != "epic100" or (path is not None and not Path(path).is_dir()):
        return None
    return clip.extras.get("fps")
