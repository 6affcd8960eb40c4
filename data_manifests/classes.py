"""The class lists of the real datasets, shipped as data files in ``data_manifests/classes/``.

Each file is the dataset's own list, unchanged:

- ``kinetics400.txt``: the 400 Kinetics-400 labels as written in the DeepMind CSVs, in
  their sorted order (index 0 ``abseiling`` .. 399 ``zumba``), the order PySlowFast and
  ``kinetics_400_labels.csv`` use.
- ``charades_v1_classes.txt``: ``Charades_v1_classes.txt``, 157 ``cNNN name`` lines.
- ``epic100_verbs.csv`` / ``epic100_nouns.csv``: ``EPIC_100_verb_classes.csv`` (97) and
  ``EPIC_100_noun_classes.csv`` (300), columns ``id,key,instances,category``.
"""
from __future__ import annotations

import csv
import functools
import io
from importlib.resources import as_file, files


def _text(name: str) -> str:
    return files("data_manifests").joinpath("classes", name).read_text(encoding="utf-8")


@functools.cache
def _kinetics400() -> tuple[str, ...]:
    return tuple(line.strip() for line in _text("kinetics400.txt").splitlines() if line.strip())


@functools.cache
def _charades() -> tuple[tuple[str, str], ...]:
    from .charades_ego import read_charades_classes

    with as_file(files("data_manifests").joinpath("classes", "charades_v1_classes.txt")) as path:
        return tuple(read_charades_classes(path))


@functools.cache
def _epic_keys(name: str) -> tuple[str, ...]:
    rows = list(csv.DictReader(io.StringIO(_text(name))))
    # Labels in the annotation CSVs are these ids, so the list must be exactly 0..N-1 in order.
    if [int(r["id"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"classes/{name}: ids are not 0..{len(rows) - 1} in order")
    return tuple(r["key"] for r in rows)


def kinetics400_classes() -> list[str]:
    """The 400 Kinetics-400 class names; pass as ``classes=`` to fix the label order."""
    return list(_kinetics400())


def charades_classes() -> list[tuple[str, str]]:
    """The 157 Charades classes as ``[(id, name), ...]`` (``("c000", "Holding some clothes")`` first).

    ``read_charades_ego_csv(classes=[cid for cid, _ in charades_classes()])`` gives all 157 columns.
    """
    return list(_charades())


def epic100_verbs() -> list[str]:
    """The 97 EPIC-Kitchens-100 verb class keys, index = ``verb_class`` (``take``, ``put``, ...)."""
    return list(_epic_keys("epic100_verbs.csv"))


def epic100_nouns() -> list[str]:
    """The 300 EPIC-Kitchens-100 noun class keys, index = ``noun_class`` (``tap``, ``spoon``, ...)."""
    return list(_epic_keys("epic100_nouns.csv"))


def shipped_classes(fmt: str) -> list[str] | None:
    """The canonical label ids of a manifest format, the ones model-zoo checkpoints use:
    Kinetics-400's 400 names, Charades' 157 ``cNNN`` ids, EPIC-100's 97 verbs; None for the
    generic formats, whose classes come from the file."""
    if fmt == "kinetics":
        return kinetics400_classes()
    if fmt == "charades_ego":
        return [cid for cid, _ in charades_classes()]
    if fmt == "epic100":
        return epic100_verbs()
    return None


def read_class_list(path) -> list[str]:
    """A class list file as label ids in file order: a CSV with a ``key`` column (EPIC's class
    files), ``cNNN name`` lines (``Charades_v1_classes.txt``: the ids), or one label per line
    (Kinetics' ``kinetics_400_labels`` style lists; a ``name`` header line is skipped)."""
    import re
    from pathlib import Path

    from .table import ManifestError

    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"class list not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(f"{p}: not a text class list") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ManifestError(f"{p}: empty class list")
    header = next(csv.reader([lines[0]]))
    if "key" in header:
        return [r["key"].strip() for r in csv.DictReader(io.StringIO("\n".join(lines)))]
    if all(re.fullmatch(r"c\d{3}\s+\S.*", line) for line in lines):
        return [line.split()[0] for line in lines]
    if len(header) == 2 and header[0].strip() in ("id", "") and header[1].strip() == "name":
        return [next(csv.reader([line]))[1].strip() for line in lines[1:]]  # id,name CSV
    names = lines[1:] if lines[0].lower() in ("name", "label", "class") else lines
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ManifestError(f"{p}: class {dup!r} is listed twice")
    return names
