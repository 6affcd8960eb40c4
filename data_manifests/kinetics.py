"""Kinetics-400/600/700 annotation CSVs -> ClipTable.

The DeepMind CSVs have the header ``label,youtube_id,time_start,time_end,split``
(newer releases add ``is_cc``; test CSVs may have no ``label``). A downloaded clip
is already trimmed to ``time_start .. time_end`` and named
``<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>``, so the clip spans
``0 .. time_end - time_start`` seconds of its file. The split column is kept as
written (Kinetics-400 says ``val``, Kinetics-700 ``validate``).
"""
from __future__ import annotations

import os
from pathlib import Path

from .formats import VIDEO_SUFFIXES
from .table import Clip, ClipTable, Scan, file_sha256, parse_rows, raise_first, scan_csv_rows

REQUIRED = ("youtube_id", "time_start", "time_end", "split")
INDEX_DEPTH = 4  # folders below the video root that are listed: <root>/<a>/<b>/<c>/<file>


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


class KineticsIndex:
    """The video files under a Kinetics root by file stem, each folder listed once.

    Finds a clip wherever its ``<youtube_id>_<start>_<end>.<ext>`` file lies within
    ``INDEX_DEPTH`` folders of the root, with any video extension: the flat download,
    ``<split>/``, ``<split>/<label>/``, the ActivityNet crawler's ``<label>/``, mmaction2's
    ``videos_val/<label_with_underscores>/``, and Kinetics-700's ``validate`` rows against
    CVDF's ``val/`` folder. A stem found in several folders resolves to the one under a
    folder named after the clip's split (then its label), else the first in path order.
    """

    def __init__(self, video_root: str | Path):
        self.root = Path(video_root)
        # Paths kept as strings (a Path only for a clip found) and each folder read as it is
        # listed: a Kinetics root holds 240,000 files, and for 20,000 files the index peaked at
        # 6 MB this way against 27.5 MB as Path objects from a list of the folder's entries.
        self.by_stem: dict[str, list[str]] = {}
        self.folders_listed = 0
        extensions = {suffix[1:] for suffix in VIDEO_SUFFIXES}
        stack = [(str(self.root), 0)]
        while stack:
            folder, depth = stack.pop()
            try:
                entries = os.scandir(folder)
            except OSError:  # missing or unreadable folder: nothing in it is found
                continue
            self.folders_listed += 1
            with entries:  # read as listed, never held as a list of entries
                for e in entries:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir():
                        if depth < INDEX_DEPTH:
                            stack.append((e.path, depth + 1))
                        continue
                    stem, dot, ext = e.name.rpartition(".")
                    if dot and ext.lower() in extensions:
                        self.by_stem.setdefault(stem, []).append(e.path)
        for paths in self.by_stem.values():
            if len(paths) > 1:
                paths.sort(key=lambda p: Path(p).parts)  # path order, as Paths sort

    def find(self, clip: Clip) -> Path | None:
        paths = self.by_stem.get(clip.clip_id)
        if not paths:
            return None
        if len(paths) == 1:
            return Path(paths[0])
        label = clip.extras.get("label_name") or ""
        labels = {label, label.replace(" ", "_")} - {""}

        def score(p: Path) -> int:  # the split's folder first, then the label's
            folders = set(p.relative_to(self.root).parts[:-1])
            return 2 * (clip.split in folders) + bool(labels & folders)

        return max(map(Path, paths), key=score)  # max keeps the first of equal scores


def resolve_kinetics_path(video_root: str | Path, clip: Clip) -> Path | None:
    """Find one Kinetics clip's file under ``video_root`` (see :class:`KineticsIndex`), or None.

    This lists the whole tree; to resolve many clips build one ``KineticsIndex`` (as
    ``data_manifests.formats.resolve_videos`` does)."""
    return KineticsIndex(video_root).find(clip)
