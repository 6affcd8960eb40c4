"""EPIC-Kitchens-100 action annotations (``EPIC_100_train.csv`` / ``EPIC_100_validation.csv``) -> ClipTable.

Header (as released): ``narration_id,participant_id,video_id,narration_timestamp,
start_timestamp,stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,
noun_class,all_nouns,all_noun_classes``; timestamps are ``HH:MM:SS.ss``. The test file
(``EPIC_100_test_timestamps.csv``) has only the first nine columns, so its clips are
unlabelled. One row per action segment; the action is the (verb, noun) pair, so clips are
labelled with the verb class (97, ``classes``) and keep the noun class in ``extras``.

On disk (the download scripts' layout): ``<participant>/videos/<video_id>.MP4`` and
``<participant>/rgb_frames/<video_id>/frame_0000000001.jpg`` ... (extracted from
``<video_id>.tar``). The frames, and the ``start_frame``/``stop_frame`` numbers that index
them, are at 60 fps for the EPIC-55 videos (``P01_01``) and 50 fps for the extension
(``P01_101``), whatever the camera's rate: ``EPIC_100_video_info.csv`` lists 59.94 for most
EPIC-55 videos and 29.97, 47.95 or 90 for a few, yet their frame numbers are ``t x 60``
(checked to within one frame on every video of the released validation, test and
UDA-train files). A time ``t`` is frame ``t x fps`` to within one frame; frames count from 1.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .table import (
    Clip, ClipTable, ManifestError, Scan, file_sha256, parse_rows, raise_first, read_csv_rows, scan_csv_rows,
)

REQUIRED = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp")
VIDEO_INFO = "EPIC_100_video_info.csv"
_TIMESTAMP = re.compile(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)")
_EXTENSION_VIDEO = re.compile(r"P\d+_1\d\d")  # EPIC-100's new videos: three-digit numbers from 101


def parse_timestamp(text: str) -> float:
    """Seconds from an EPIC ``HH:MM:SS.ss`` timestamp (``00:01:02.50`` -> 62.5); ValueError otherwise."""
    m = _TIMESTAMP.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a HH:MM:SS.ss timestamp")
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def read_epic_video_info(path: str | Path) -> dict[str, float]:
    """``{video_id: fps}`` from ``EPIC_100_video_info.csv`` (columns ``video_id,duration,fps,resolution``)."""
    out = {}
    for line_no, r in read_csv_rows(path, ("video_id", "fps")):
        try:
            fps = float(r["fps"])
        except ValueError:
            fps = 0.0
        if not fps > 0:
            raise ManifestError(f"{path}:{line_no}: fps {r['fps']!r} is not a positive number")
        out[r["video_id"]] = fps
    return out


def _find_video_info(path: Path, video_root: str | Path | None) -> Path | None:
    for d in (path.parent, Path(video_root) if video_root else None):
        if d is not None and (d / VIDEO_INFO).is_file():
            return d / VIDEO_INFO
    return None


def frames_fps(video_id: str) -> float:
    """The rate of a video's released ``rgb_frames`` and of its frame numbers: 50 for extension videos, else 60."""
    return 50.0 if _EXTENSION_VIDEO.fullmatch(video_id) else 60.0


def _split_from_name(path: Path) -> str:
    stem = path.stem.lower()
    if "validation" in stem or stem.endswith("_val"):
        return "validation"
    return "test" if "test" in stem else "train"


def _timestamp(r: dict[str, str], column: str) -> float:
    try:
        return parse_timestamp(r[column])
    except ValueError:
        raise ValueError(f"{column} {r[column]!r} is not a HH:MM:SS.ss timestamp") from None


def _class_index(value: str, column: str, n: int) -> int:
    try:
        i = int(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not an integer") from None
    if not 0 <= i < n:
        raise ValueError(f"{column} {i} is outside the {n} classes")
    return i


def _clip(r: dict[str, str], n_verbs: int, n_nouns: int, split: str, video_fps: dict[str, float]) -> Clip:
    """One annotation row -> Clip (ValueError with the reason for a bad row)."""
    for column in ("narration_id", "participant_id", "video_id"):
        if not r[column]:
            raise ValueError(f"empty {column}")
    participant, video_id = r["participant_id"], r["video_id"]
    start, end = _timestamp(r, "start_timestamp"), _timestamp(r, "stop_timestamp")
    if end < start:
        raise ValueError(f"stop_timestamp {r['stop_timestamp']} is before start_timestamp {r['start_timestamp']}")
    frames = {}
    for column in ("start_frame", "stop_frame"):
        if r.get(column):
            if not r[column].isdigit():
                raise ValueError(f"{column} {r[column]!r} is not a frame number")
            frames[column] = int(r[column])
    verb = _class_index(r["verb_class"], "verb_class", n_verbs) if r.get("verb_class") else None
    noun = _class_index(r["noun_class"], "noun_class", n_nouns) if r.get("noun_class") else None
    try:
        all_nouns = tuple(int(i) for i in json.loads(r["all_noun_classes"])) if r.get("all_noun_classes") else ()
    except (ValueError, TypeError):
        raise ValueError(f"all_noun_classes {r['all_noun_classes']!r} is not a list of integers") from None
    return Clip(
        clip_id=r["narration_id"],
        path=f"{participant}/videos/{video_id}.MP4",
        start=start,
        end=end,
        labels=() if verb is None else (verb,),
        split=split,
        extras={
            "verb_class": verb,
            "noun_class": noun,
            "all_noun_classes": all_nouns,
            "participant_id": participant,
            "video_id": video_id,
            "start_frame": frames.get("start_frame"),
            "stop_frame": frames.get("stop_frame"),
            "narration": r.get("narration") or None,
            "frames_dir": f"{participant}/rgb_frames/{video_id}",
            "fps": frames_fps(video_id),
            "video_fps": video_fps.get(video_id),
        },
    )


def scan_epic100_csv(
    path: str | Path,
    video_root: str | Path | None = None,
    *,
    verb_classes: list[str] | None = None,
    noun_classes: list[str] | None = None,
    video_info: str | Path | dict[str, float] | None = None,
    split: str | None = None,
) -> Scan:
    """Tolerant parse: ``(table, lines, problems)`` as in ``data_manifests.generic``; see ``read_epic100_csv``."""
    from .classes import epic100_nouns, epic100_verbs

    path = Path(path)
    verb_classes = list(verb_classes) if verb_classes is not None else epic100_verbs()
    noun_classes = list(noun_classes) if noun_classes is not None else epic100_nouns()
    n_nouns = len(noun_classes)
    split = split or _split_from_name(path)
    if video_info is None:
        video_info = _find_video_info(path, video_root)
    video_fps = video_info if isinstance(video_info, dict) or video_info is None else read_epic_video_info(video_info)

    rows, problems = scan_csv_rows(path, REQUIRED)
    clips, lines = parse_rows(rows, lambda r: _clip(r, len(verb_classes), n_nouns, split, video_fps or {}), problems)
    problems.sort()
    table = ClipTable(clips, verb_classes, False, "epic100", str(path), file_sha256(path), noun_classes)
    return table, lines, problems


def read_epic100_csv(
    path: str | Path,
    video_root: str | Path | None = None,
    *,
    verb_classes: list[str] | None = None,
    noun_classes: list[str] | None = None,
    video_info: str | Path | dict[str, float] | None = None,
    split: str | None = None,
) -> ClipTable:
    """Parse an EPIC-Kitchens-100 action CSV into one clip per action segment.

    Per clip: ``clip_id`` the ``narration_id``; ``path`` ``<participant>/videos/<video_id>.MP4``;
    ``start``/``end`` the segment in seconds; ``labels`` ``(verb_class,)`` (empty in the test
    file) indexing ``classes`` = ``verb_classes`` (default: the 97 shipped verb keys).
    ``extras``: ``verb_class``, ``noun_class`` (index into ``noun_classes``, default the 300
    shipped noun keys), ``all_noun_classes``, ``participant_id``, ``video_id``,
    ``start_frame``, ``stop_frame``, ``narration``, ``frames_dir``
    (``<participant>/rgb_frames/<video_id>``), ``fps`` — the rate of that frames folder and of
    the frame numbers (60, or 50 for the extension's videos; see the module docstring) — and
    ``video_fps``, the MP4's own rate from ``video_info`` (a ``{video_id: fps}`` dict or the
    path of ``EPIC_100_video_info.csv``; by default that file next to the manifest or in
    ``video_root``), None when there is no such file.

    ``split`` defaults to ``train``/``validation``/``test`` from the file name. A bad row
    (timestamp not ``HH:MM:SS.ss``, stop before start, class index out of range) raises
    ``ManifestError`` naming the file and 1-based line.
    """
    scan = scan_epic100_csv(
        path, video_root, verb_classes=verb_classes, noun_classes=noun_classes, video_info=video_info, split=split
    )
    return raise_first(path, scan)


def resolve_epic_path(video_root: str | Path, clip: Clip) -> Path | None:
    """A clip's ``.MP4``, else its extracted frames folder, under ``video_root``; None if neither is there.

    Tries ``<root>/<participant>/videos/<video_id>.MP4`` (also ``.mp4``, and directly under
    ``<root>/<participant>/`` or ``<root>/``), then the folder
    ``<root>/<participant>/rgb_frames/<video_id>`` or ``<root>/<video_id>``.
    """
    root = Path(video_root)
    participant, video_id = clip.extras["participant_id"], clip.extras["video_id"]
    for d in (root / participant / "videos", root / participant, root):
        for ext in ("MP4", "mp4"):
            if (d / f"{video_id}.{ext}").is_file():
                return d / f"{video_id}.{ext}"
    for frames in (root / clip.extras["frames_dir"], root / video_id):
        if frames.is_dir():
            return frames
    return None
