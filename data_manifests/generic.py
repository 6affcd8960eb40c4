"""Plain video lists -> ClipTable: a generic ``path,label[,start,end]`` CSV and PySlowFast's ``path label`` lists.

Each comes as ``scan_*`` (tolerant) and ``read_*`` (strict); see ``data_manifests.table``.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path, PurePosixPath

from .table import Clip, ClipTable, Problem, Scan, csv_records, file_sha256, raise_first, split_from_name

GENERIC_COLUMNS = ("path", "label", "start", "end")


def _seconds(value: str, column: str) -> float | None:
    """A blank value is None; anything else must be a finite number of seconds >= 0."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not a number") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{column} {value!r} is not a number of seconds >= 0")
    return seconds


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _label_index(labels: list[str], classes: list[str] | None) -> tuple[list[str], dict[str, int]]:
    """The class list and a label-text -> index map.

    Given ``classes``, a label is looked up by name first, then as an integer index.
    Otherwise integer labels make classes ``"0" .. str(max)`` and any other labels make
    the sorted unique names (an integer among names is then a name too).
    """
    given = [lab for lab in labels if lab]
    if classes is None:
        numbers = [_as_int(lab) for lab in given]
        if given and all(n is not None and n >= 0 for n in numbers):
            classes = [str(i) for i in range(max(numbers) + 1)]
            return classes, {lab: int(lab) for lab in given}
        classes = sorted(set(given))
    index = {name: i for i, name in enumerate(classes)}
    for lab in given:
        n = _as_int(lab)
        if lab not in index and n is not None and 0 <= n < len(classes):
            index[lab] = n
    return list(classes), index


def _stem(path: str) -> str:
    p = PurePosixPath(path)
    return str(p.with_suffix("")) if p.suffix else path


def _span_id(stem: str, start: float, end: float | None) -> str:
    return f"{stem}_{start:g}_{'end' if end is None else f'{end:g}'}"


def _build(
    path: str | Path,
    records: list[tuple[int, str, str, float, float | None]],
    problems: list[Problem],
    classes: list[str] | None,
    split: str,
    fmt: str,
) -> Scan:
    """Clips from ``(line, video path, label text, start, end)`` records, in file order."""
    classes, index = _label_index([label for _, _, label, _, _ in records], classes)
    uses = Counter(video for _, video, _, _, _ in records)
    clips, lines = [], []
    for line_no, video, label, start, end in records:
        if label and label not in index:
            problems.append((line_no, f"label {label!r} is not one of the {len(classes)} classes"))
            continue
        spanned = start > 0 or end is not None
        # A file listed once keeps its plain id; one cut into several spans needs the span to tell them apart.
        clip_id = _span_id(_stem(video), start, end) if spanned and uses[video] > 1 else _stem(video)
        clips.append(
            Clip(
                clip_id=clip_id,
                path=video,
                start=start,
                end=end,
                labels=(index[label],) if label else (),
                split=split,
                extras={"label_name": classes[index[label]] if label else None},
            )
        )
        lines.append(line_no)
    problems.sort()
    table = ClipTable(clips, classes, multilabel=False, format=fmt, source=str(path), source_sha256=file_sha256(path))
    return table, lines, problems


def _is_generic_header(fields: list[str]) -> bool:
    names = [f.lower() for f in fields]
    return len(names) >= 2 and names[0] == "path" and "label" in names


def scan_generic_csv(path: str | Path, classes: list[str] | None = None, *, split: str | None = None) -> Scan:
    """Tolerant parse of a generic CSV; see ``read_generic_csv``."""
    records, problems = [], []
    columns = GENERIC_COLUMNS  # positional unless the file has a header
    for k, (line_no, fields) in enumerate(csv_records(path)):
        if k == 0 and _is_generic_header(fields):
            columns = tuple(f.lower() for f in fields)
            continue
        if len(fields) > len(columns) or len(fields) < 2:
            expected = f"expected 2 to {len(columns)} fields ({','.join(columns)})"
            problems.append((line_no, f"{expected}, found {len(fields)}"))
            continue
        row = dict(zip(columns, fields))
        video = row.get("path", "")
        if not video:
            problems.append((line_no, "empty path"))
            continue
        try:
            start = _seconds(row.get("start", ""), "start") or 0.0
            end = _seconds(row.get("end", ""), "end")
        except ValueError as e:
            problems.append((line_no, str(e)))
            continue
        if end is not None and end <= start:
            problems.append((line_no, f"end {end:g} is not after start {start:g}"))
            continue
        records.append((line_no, video, row.get("label", ""), start, end))
    return _build(path, records, problems, classes, split or split_from_name(path), "generic")


def read_generic_csv(path: str | Path, classes: list[str] | None = None, *, split: str | None = None) -> ClipTable:
    """Parse a generic ``path,label[,start,end]`` CSV (optional header row ``path,label,...``).

    ``path`` is relative to the video root unless absolute. ``label`` is a class name or an
    integer index into ``classes`` (blank: unlabelled). ``start``/``end`` are seconds within
    the file; blank means the whole file (``0`` .. its end). By default ``classes`` are
    ``"0" .. max`` when every label is an integer, else the sorted unique names.

    ``clip_id`` is the path without its extension; when the same path is listed more
    than once with spans, each gets ``_<start>_<end>`` (``end`` for an open end).
    ``split`` defaults to ``val``/``test``/``train`` from the file name. Raises
    ``ManifestError`` naming the file and 1-based line of the first bad row.
    """
    return raise_first(path, scan_generic_csv(path, classes, split=split))


def scan_pyslowfast_list(path: str | Path, classes: list[str] | None = None, *, split: str | None = None) -> Scan:
    """Tolerant parse of a PySlowFast list; see ``read_pyslowfast_list``."""
    records, problems = [], []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            # rsplit: PySlowFast splits on its separator (a space), but a path may hold spaces; the label never does.
            parts = line.strip().rsplit(None, 1)
            if len(parts) != 2:
                problems.append((line_no, f"expected 'path label', found {line.strip()!r}"))
                continue
            video, label = parts
            if _as_int(label) is None or int(label) < 0:
                problems.append((line_no, f"label {label!r} is not an integer >= 0"))
                continue
            records.append((line_no, video, str(int(label)), 0.0, None))
    return _build(path, records, problems, classes, split or split_from_name(path), "pyslowfast")


def read_pyslowfast_list(path: str | Path, classes: list[str] | None = None, *, split: str | None = None) -> ClipTable:
    """Parse a PySlowFast list (its Kinetics/ssv2 ``train.csv``/``val.csv``/``test.csv``): ``path label`` per line.

    Space-separated, no header, integer labels indexing ``classes`` (default ``"0" .. max``;
    pass ``kinetics400_classes()`` for names). Each clip is the whole file; ``clip_id`` is
    the path without its extension. ``split`` defaults from the file name. Raises
    ``ManifestError`` naming the file and 1-based line of the first bad row.
    """
    return raise_first(path, scan_pyslowfast_list(path, classes, split=split))
