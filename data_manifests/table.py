"""The canonical clip table every manifest parser produces and every stage consumes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


class ManifestError(ValueError):
    """A manifest row or header that cannot be parsed; the message names the file and 1-based line."""


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
        return ClipTable(keep, self.classes, self.multilabel, self.format, self.source, self.source_sha256)

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


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_csv_rows(path: str | Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_no, row)`` for each data row of a headed CSV, ``line_no`` 1-based where the row starts.

    Raises ``ManifestError`` if the header lacks a ``required`` column or a row has the
    wrong number of fields. Values are stripped; a quoted field may span lines, which is
    why the row's first line is tracked rather than counted.
    """
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ManifestError(f"{path}:1: empty file, expected a header with columns {', '.join(required)}")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise ManifestError(f"{path}:1: header lacks column(s) {', '.join(missing)} (found {', '.join(header)})")
        end_of_previous = reader.line_num
        for fields in reader:
            line_no, end_of_previous = end_of_previous + 1, reader.line_num
            if not fields or all(not v.strip() for v in fields):
                continue  # blank line
            if len(fields) != len(header):
                raise ManifestError(
                    f"{path}:{line_no}: expected {len(header)} fields ({','.join(header)}), found {len(fields)}"
                )
            yield line_no, {k: v.strip() for k, v in zip(header, fields)}
