"""Kinetics-400/600/700 annotation CSVs -> ClipTable.

The DeepMind CSVs have the header ``label,youtube_id,time_start,time_end,split``
(newer releases add ``is_cc``; test CSVs may have no ``label``). A downloaded clip
is already trimmed to ``time_start .. time_end`` and named
``<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>``, so the clip spans
``0 .. time_end - time_start`` seconds of its file. The split column is kept as
written (Kinetics-400 says ``val``, Kinetics-700 ``validate``).
"""
from __future__ import annotations

from pathlib import Path

from .table import Clip, ClipTable, Scan, file_sha256, parse_rows, raise_first, scan_csv_rows

REQUIRED = ("youtube_id", "time_start", "time_end", "split")
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv")


def kinetics_clip_id(youtube_id: str, time_start: int, time_end: int) -> str:
    """The file stem the Kinetics download scripts give a trimmed clip."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def _whole_seconds(value: str, column: str) -> int:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not a number") from None
    if not seconds.is_integer() or seconds < 0:
        raise ValueError(f"{column} {value!r} is not a whole number of seconds >= 0")
    return int(seconds)


def _clip(r: dict[str, str], index: dict[str, int], n_classes: int) -> Clip:
    """One annotation row -> Clip (ValueError with the reason for a bad row)."""
    youtube_id = r["youtube_id"]
    if not youtube_id:
        raise ValueError("empty youtube_id")
    start = _whole_seconds(r["time_start"], "time_start")
    end = _whole_seconds(r["time_end"], "time_end")
    if end <= start:
        raise ValueError(f"time_end {end} is not after time_start {start}")
    label = r.get("label") or None
    if label is not None and label not in index:
        raise ValueError(f"label {label!r} is not one of the {n_classes} classes of the class list (by default the "
                         "shipped Kinetics-400 list; for Kinetics-600/700 or your own labels set 'classes' to a "
                         "file with one label per line)")
    if not r["split"]:
        raise ValueError("empty split")
    clip_id = kinetics_clip_id(youtube_id, start, end)
    extras = {"label_name": label, "youtube_id": youtube_id, "time_start": start, "time_end": end}
    if r.get("is_cc"):
        extras["is_cc"] = int(r["is_cc"]) if r["is_cc"].isdigit() else r["is_cc"]
    return Clip(
        clip_id=clip_id,
        path=f"{clip_id}.mp4",
        start=0.0,
        end=float(end - start),
        labels=() if label is None else (index[label],),
        split=r["split"],
        extras=extras,
    )


def scan_kinetics_csv(path: str | Path, classes: list[str] | None = None) -> Scan:
    """Tolerant parse: ``(table, lines, problems)`` as in ``data_manifests.table``; see ``read_kinetics_csv``."""
    rows, problems = scan_csv_rows(path, REQUIRED)
    if classes is None:
        classes = sorted({r["label"] for _, r in rows if r.get("label")})
    index = {name: i for i, name in enumerate(classes)}
    clips, lines = parse_rows(rows, lambda r: _clip(r, index, len(classes)), problems)
    table = ClipTable(clips, list(classes), False, "kinetics", str(path), file_sha256(path))
    return table, lines, sorted(problems)


def read_kinetics_csv(path: str | Path, classes: list[str] | None = None) -> ClipTable:
    """Parse a Kinetics annotation CSV.

    ``classes`` fixes the label order (pass the train file's classes when reading
    val/test); by default it is the sorted unique labels of this file. A row whose
    label is not in ``classes``, or with a bad id or span, raises ``ManifestError``
    naming the file and 1-based line. Rows without a label (test CSVs) get no labels.
    """
    return raise_first(path, scan_kinetics_csv(path, classes))


def resolve_kinetics_path(video_root: str | Path, clip: Clip) -> Path | None:
    """Find a Kinetics clip's file under ``video_root``, or None if it is not there.

    Tries the layouts people download into: flat ``<root>/<id>.<ext>``,
    ``<root>/<split>/<id>.<ext>`` and ``<root>/<split>/<label>/<id>.<ext>`` (label
    as written and with spaces as underscores), for ext in mp4, webm, mkv.
    """
    root = Path(video_root)
    dirs = [root, root / clip.split]
    label = clip.extras.get("label_name")
    if label:
        dirs.append(root / clip.split / label)
        if " " in label:
            dirs.append(root / clip.split / label.replace(" ", "_"))
    for d in dirs:
        for ext in VIDEO_EXTENSIONS:
            candidate = d / f"{clip.clip_id}.{ext}"
            if candidate.is_file():
                return candidate
    return None
