"""The canonical clip table every manifest parser produces and every stage consumes.

Also what the parsers share. Every parser comes in two forms: ``scan_*`` parses tolerantly
and returns a ``Scan``, ``(table, lines, problems)`` — the clips of the good rows, each
clip's 1-based line, and ``(line, reason)`` for every row it skipped, sorted — and
``read_*`` = ``raise_first(path, scan_*(...))`` returns the table, raising ``ManifestError``
for the first problem. ``data_manifests.check`` uses the scans.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar


class ManifestError(ValueError):
    """A manifest row or header that cannot be parsed; the message names the file and 1-based line."""


Problem = tuple[int, str]  # (1-based line, reason)
Row = TypeVar("Row")
Parsed = TypeVar("Parsed")


@dataclass(frozen=True)
class Clip:
    """One row of a manifest: a span of one video file and its labels.

    ``start``/``end`` are seconds *within the file* (a downloaded Kinetics clip
    is already trimmed, so its span is ``0 .. time_end - time_start``); ``end``
    is ``None`` when the clip runs to the end of the file.
    """

    clip_id: str
    path: str  # relative to the video root unless absolute
    start: float = 0.0
    end: float | None = None
    labels: tuple[int, ...] = ()
    split: str = "train"
    extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass
class ClipTable:
    """Clips in manifest row order plus the class list that their labels index."""

    clips: list[Clip]
    classes: list[str]
    multilabel: bool = False
    format: str = "generic"
    source: str | None = None  # manifest path
    source_sha256: str | None = None
    noun_classes: list[str] = field(default_factory=list)  # EPIC-100: the nouns ``extras["noun_class"]`` indexes

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    def __getitem__(self, i: int) -> Clip:
        return self.clips[i]

    def select(self, split: str | None = None, **extras: Any) -> "ClipTable":
        """Rows whose split (and each given extra) match, keeping row order."""
        keep = [
            c
            for c in self.clips
            if (split is None or c.split == split)
            and all(c.extras.get(k) == v for k, v in extras.items())
        ]
        return ClipTable(keep, self.classes, self.multilabel, self.format, self.source, self.source_sha256,
                         self.noun_classes)

    def label_matrix(self):
        """[N, num_classes] 0/1 float32 matrix of the labels (multi-hot)."""
        import numpy as np

        y = np.zeros((len(self.clips), len(self.classes)), dtype=np.float32)
        for i, c in enumerate(self.clips):
            y[i, list(c.labels)] = 1.0
        return y

    @property
    def fingerprint(self) -> str:
        """A hash of the rows themselves (ids, paths, spans, labels), for store provenance."""
        h = hashlib.sha256()
        for c in self.clips:
            h.update(f"{c.clip_id}\t{c.path}\t{c.start}\t{c.end}\t{c.labels}\t{c.split}\n".encode())
        return h.hexdigest()


Scan = tuple[ClipTable, list[int], list[Problem]]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def csv_records(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of each non-blank CSV record, values stripped; ``line`` is the 1-based line where
    the record starts (a quoted field may span lines, which is why it is tracked rather than counted)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        end_of_previous = 0
        for fields in reader:
            line_no, end_of_previous = end_of_previous + 1, reader.line_num
            if fields and any(v.strip() for v in fields):
                yield line_no, [v.strip() for v in fields]


def scan_csv_rows(
    path: str | Path, required: tuple[str, ...]
) -> tuple[list[tuple[int, dict[str, str]]], list[Problem]]:
    """``(line, row)`` of each data row of a headed CSV, and a problem for each row with the wrong number of fields.

    An empty file or a header without a ``required`` column raise ``ManifestError``:
    nothing in the file can be read then.
    """
    records = csv_records(path)
    first = next(records, None)
    if first is None:
        raise ManifestError(f"{path}:1: empty file, expected a header with columns {', '.join(required)}")
    header_line, header = first
    missing = [c for c in required if c not in header]
    if missing:
        raise ManifestError(
            f"{path}:{header_line}: header lacks column(s) {', '.join(missing)} (found {', '.join(header)})"
        )
    rows, problems = [], []
    for line_no, fields in records:
        if len(fields) != len(header):
            problems.append((line_no, f"expected {len(header)} fields ({','.join(header)}), found {len(fields)}"))
        else:
            rows.append((line_no, dict(zip(header, fields))))
    return rows, problems


def parse_rows(
    rows: Iterable[tuple[int, Row]], parse: Callable[[Row], Parsed], problems: list[Problem]
) -> tuple[list[Parsed], list[int]]:
    """``parse`` of each ``(line, row)``: the results and their lines; a row whose ``parse`` raises
    ``ValueError`` is appended to ``problems`` as ``(line, reason)`` instead."""
    parsed, lines = [], []
    for line_no, row in rows:
        try:
            parsed.append(parse(row))
            lines.append(line_no)
        except ValueError as e:
            problems.append((line_no, str(e)))
    return parsed, lines


def _raise_first_problem(path: str | Path, problems: list[Problem]) -> None:
    if problems:
        line_no, reason = min(problems)
        raise ManifestError(f"{path}:{line_no}: {reason}")


def read_csv_rows(path: str | Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``scan_csv_rows``'s rows, raising ``ManifestError`` for the first row with the wrong number of fields."""
    rows, problems = scan_csv_rows(path, required)
    _raise_first_problem(path, problems)
    return iter(rows)


def raise_first(path: str | Path, scan: Scan) -> ClipTable:
    """The scanned table, or ``ManifestError`` for the first problem (the strict readers' behaviour)."""
    table, _, problems = scan
    _raise_first_problem(path, problems)
    return table


def split_from_name(path: str | Path, splits: tuple[str, ...] = ("val", "test")) -> str:
    """One of ``splits`` named in a manifest's file name (``val.csv``, ``kinetics_test.csv``, ...), else ``train``."""
    stem = Path(path).stem.lower()
    for split in splits:
        if stem == split or stem.startswith(split + "_") or f"_{split}" in stem or f"-{split}" in stem:
            return split
    return "train"
