"""Check a manifest against the videos on disk before any GPU time is spent.

``check_manifest`` parses row by row — a malformed row is reported with its 1-based line
and the rest are still checked — then looks for each clip's video, repeated clip ids and,
optionally, videos PyAV cannot open. ``CheckReport.summary()`` is the text to print.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .formats import FORMATS, check_manifest_file, detect_format, resolve_videos, scan_manifest
from .table import Clip, ManifestError

EXAMPLES = 10
# Kinetics downloads lack 2-13 % of their lists; more missing than this is a wrong video root
# (extract-teachers' default max_missing_fraction).
MAX_MISSING_FRACTION = 0.15


@dataclass
class CheckReport:
    """What ``check_manifest`` found; every problem carries the manifest line it comes from."""

    source: str
    format: str
    rows: int  # data rows in the file, readable or not
    clips: int  # readable rows
    classes: int
    splits: dict[str, int] = field(default_factory=dict)  # readable rows per split
    missing: list[tuple[int, str, str]] = field(default_factory=list)  # (line, clip_id, expected path)
    duplicates: list[tuple[int, str, int]] = field(default_factory=list)  # (line, clip_id, line of its first use)
    unreadable_rows: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    unreadable_videos: list[tuple[int, str, str]] = field(default_factory=list)  # (line, path, reason)
    video_root: str | None = None
    probed: bool = False

    @property
    def ok(self) -> bool:
        """No unreadable rows, repeated ids or unreadable videos, and not too many videos missing.

        Some missing videos are normal (Kinetics downloads lack 2-13 % of clips) and do not
        fail the check; more than ``MAX_MISSING_FRACTION`` usually means a wrong video root.
        """
        return not (self.unreadable_rows or self.duplicates or self.unreadable_videos or self.too_many_missing)

    @property
    def too_many_missing(self) -> bool:
        """More videos missing than extract-teachers tolerates (a wrong video root, usually)."""
        return self.video_root is not None and self.clips > 0 and len(self.missing) / self.clips > MAX_MISSING_FRACTION

    def summary(self, examples: int = EXAMPLES) -> str:
        lines = [
            f"manifest: {self.source} ({self.format})",
            f"rows: {self.rows} ({self.clips} readable, {self.rows - self.clips} unreadable)",
            f"classes: {self.classes}",
            "splits: " + (", ".join(f"{s} {n}" for s, n in self.splits.items()) or "-"),
        ]
        if self.video_root is None:
            lines.append("videos: not checked (no video root)")
        else:
            share = f" ({100 * len(self.missing) / self.clips:.1f} %)" if self.clips else ""
            lines.append(f"video root: {self.video_root}")
            files = len({p for _, _, p in self.missing})
            lines.append(f"missing videos: {len(self.missing)} of {self.clips} clips{share}, {files} distinct files")
            lines += [f"  line {ln}: {cid} -> {p}" for ln, cid, p in self.missing[:examples]]
            if self.missing and self.format == "kinetics":
                lines.append("  (also looked in <split>/ and <split>/<label>/, as .mp4/.webm/.mkv; Kinetics downloads")
                lines.append("  usually lack 2-13 % of clips: missing clips are reported, not an error)")
            if self.missing and self.format == "epic100":
                lines.append("  (also looked for the extracted frames folder <participant>/rgb_frames/<video_id>/)")
            if self.too_many_missing:
                lines.append(f"  more than {100 * MAX_MISSING_FRACTION:.0f} % of the videos are missing: is the video root "
                             "right? (extract-teachers stops above max_missing_fraction)")
        lines.append(f"duplicate clip ids: {len(self.duplicates)}")
        lines += [f"  line {ln}: {cid} (first on line {first})" for ln, cid, first in self.duplicates[:examples]]
        lines.append(f"unreadable rows: {len(self.unreadable_rows)}")
        lines += [f"  line {ln}: {reason}" for ln, reason in self.unreadable_rows[:examples]]
        if self.probed:
            lines.append(f"unreadable videos: {len(self.unreadable_videos)}")
            lines += [f"  line {ln}: {p}: {reason}" for ln, p, reason in self.unreadable_videos[:examples]]
        lines.append("result: " + ("OK" if self.ok else "PROBLEMS"))
        return "\n".join(lines)


def _expected_path(clip: Clip, root: Path) -> str:
    return str(Path(clip.path) if Path(clip.path).is_absolute() else root / clip.path)


def probe_video(path: Path) -> str | None:
    """Why PyAV cannot use ``path`` (a video file, or a folder of ``frame_*.jpg``), or None if it can."""
    if path.is_dir():
        return None if next(path.glob("frame_*.jpg"), None) is not None else "frames folder has no frame_*.jpg"
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
    except Exception as e:  # PyAV raises many kinds (FFmpegError, ValueError, OSError); each means unreadable
        return f"{type(e).__name__}: {e}"
    return None


def check_manifest(
    path: str | Path,
    video_root: str | Path | None,
    format: str = "auto",
    probe_videos: bool = False,
    *,
    classes: list[str] | None = None,
) -> CheckReport:
    """Parse ``path`` row by row and check it against the videos under ``video_root``.

    Malformed rows are collected, not raised. Raises ``ManifestError`` only when the file
    itself cannot be read (missing, unknown format); a header without the needed columns is
    reported as the one unreadable row. With ``probe_videos`` each distinct
    video found is opened with PyAV (header only) and must have a video stream.
    """
    path = Path(path)
    check_manifest_file(path)
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS[1:]:
        raise ManifestError(f"unknown manifest format '{fmt}' (known: {', '.join(FORMATS)})")
    try:
        table, lines, problems = scan_manifest(path, fmt, video_root, classes)
    except ManifestError as e:  # no usable header: nothing else can be read
        line_no, _, reason = str(e).removeprefix(f"{path}:").partition(": ")
        problem = (int(line_no), reason) if line_no.isdigit() else (1, str(e))
        root = None if video_root is None else str(video_root)
        return CheckReport(str(path), fmt, rows=0, clips=0, classes=0, unreadable_rows=[problem], video_root=root)
    report = CheckReport(
        source=str(path),
        format=fmt,
        rows=len(table) + len(problems),
        clips=len(table),
        classes=len(table.classes),
        splits=dict(Counter(c.split for c in table)),
        unreadable_rows=list(problems),
        video_root=None if video_root is None else str(video_root),
        probed=probe_videos and video_root is not None,
    )

    first_line: dict[str, int] = {}
    for line_no, clip in zip(lines, table):
        if clip.clip_id in first_line:
            report.duplicates.append((line_no, clip.clip_id, first_line[clip.clip_id]))
        else:
            first_line[clip.clip_id] = line_no

    if video_root is not None:
        root = Path(video_root)
        probed: dict[Path, str | None] = {}
        for line_no, clip, found in zip(lines, table, resolve_videos(table, list(table), root)):
            if found is None:
                report.missing.append((line_no, clip.clip_id, _expected_path(clip, root)))
            elif probe_videos and found not in probed:  # EPIC: many clips share one video; open it once
                probed[found] = reason = probe_video(found)
                if reason is not None:
                    report.unreadable_videos.append((line_no, str(found), reason))
    return report
