"""Charades-Ego annotation CSVs (``CharadesEgo_v1_train.csv`` / ``_test.csv``) -> ClipTable.

Header (as released): ``id,subject,scene,quality,relevance,verified,script,objects,
descriptions,actions,length,egocentric,charades_video``. One row per video; the
first-person recording of a script is ``<id>EGO`` next to its third-person ``<id>``,
and ``egocentric`` says ``Yes``/``No``. ``actions`` is ``cNNN start end`` items joined
by ``;`` (empty when the video has none), times in seconds.
"""
from __future__ import annotations

import re
from pathlib import Path

from .table import Clip, ClipTable, ManifestError, Scan, file_sha256, parse_rows, raise_first, scan_csv_rows
from .table import split_from_name

EGO_SUFFIX = "EGO"
_CLASS_ID = re.compile(r"c\d{3}")


def read_charades_classes(path: str | Path) -> list[tuple[str, str]]:
    """Read ``Charades_v1_classes.txt`` (``c000 Holding some clothes`` per line) as ``[(id, name), ...]`` in file order.

    The ids are what ``read_charades_ego_csv(classes=...)`` takes:
    ``[cid for cid, _ in read_charades_classes(p)]``.
    """
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            cid, _, name = line.partition(" ")
            if not _CLASS_ID.fullmatch(cid) or not name.strip():
                raise ManifestError(f"{path}:{line_no}: expected 'cNNN class name', found {line!r}")
            out.append((cid, name.strip()))
    return out


def _parse_actions(text: str) -> list[tuple[str, float, float]]:
    """``[(class id, start, end), ...]`` from an ``actions`` value (ValueError naming a bad item)."""
    actions = []
    for item in filter(None, (a.strip() for a in text.split(";"))):
        parts = item.split()
        try:
            cid, start, end = parts[0], float(parts[1]), float(parts[2])
            if len(parts) != 3 or not _CLASS_ID.fullmatch(cid):
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"action {item!r} is not 'cNNN start end'") from None
        actions.append((cid, start, end))
    return actions


def _clip(r: dict[str, str], actions: list[tuple[str, float, float]], index: dict[str, int], split: str) -> Clip:
    """One annotation row and its parsed actions -> Clip (ValueError with the reason for a bad row)."""
    vid = r["id"]
    if not vid:
        raise ValueError("empty id")
    try:
        length = float(r["length"])
    except ValueError:
        raise ValueError(f"length {r['length']!r} is not a number") from None
    unknown = sorted({cid for cid, _, _ in actions if cid not in index})
    if unknown:
        raise ValueError(f"action class(es) {', '.join(unknown)} not in the class list "
                         "(by default Charades' 157 classes; set 'classes' to another list file)")
    egocentric = r.get("egocentric", "").lower()
    if egocentric in ("yes", "no"):
        ego = egocentric == "yes"
    elif egocentric:
        raise ValueError(f"egocentric {r['egocentric']!r} is not Yes or No")
    else:
        ego = vid.endswith(EGO_SUFFIX)
    action_idx = [(index[cid], start, end) for cid, start, end in actions]
    return Clip(
        clip_id=vid,
        path=f"{vid}.mp4",
        start=0.0,
        end=length,
        labels=tuple(sorted({i for i, _, _ in action_idx})),
        split=split,
        extras={
            "ego": ego,
            "actions": action_idx,
            "pair": vid[: -len(EGO_SUFFIX)] if vid.endswith(EGO_SUFFIX) else vid,
            "charades_video": r.get("charades_video") or None,
            "scene": r.get("scene") or None,
            "script": r.get("script") or None,
        },
    )


def scan_charades_ego_csv(path: str | Path, classes: list[str] | None = None, *, split: str | None = None) -> Scan:
    """Tolerant parse: ``(table, lines, problems)`` as in ``data_manifests.table``; see ``read_charades_ego_csv``."""
    rows, problems = scan_csv_rows(path, ("id", "actions", "length"))
    parsed, parsed_lines = parse_rows(rows, lambda r: (r, _parse_actions(r["actions"])), problems)
    if classes is None:
        top = max((int(cid[1:]) for _, acts in parsed for cid, _, _ in acts), default=-1)
        classes = [f"c{i:03d}" for i in range(top + 1)]
    index = {cid: i for i, cid in enumerate(classes)}
    split = split or split_from_name(path, ("test",))
    clips, lines = parse_rows(zip(parsed_lines, parsed), lambda p: _clip(*p, index, split), problems)
    table = ClipTable(clips, list(classes), True, "charades_ego", str(path), file_sha256(path))
    return table, lines, sorted(problems)


def read_charades_ego_csv(
    path: str | Path, classes: list[str] | None = None, *, split: str | None = None
) -> ClipTable:
    """Parse a Charades-Ego CSV into one multi-label clip per video (both views).

    ``classes`` are class ids (``c000`` ...) fixing the label order; by default
    ``c000 .. cMAX`` for the largest id in the file — pass the ids from
    ``read_charades_classes`` to get all 157 regardless of the file.
    ``split`` defaults to ``test`` for a file named ``*_test*``, else ``train``.

    Per clip: ``labels`` are the sorted unique class indices of its actions;
    ``extras`` hold ``ego`` (from ``egocentric``, or the ``EGO`` id suffix when that
    column is blank), ``actions`` as ``[(class_index, start, end), ...]``, ``pair``
    (the id shared by both views of a script: the id without ``EGO``) and the raw
    ``charades_video``, ``scene`` and ``script``. A bad row raises ``ManifestError``
    naming the file and 1-based line.
    """
    return raise_first(path, scan_charades_ego_csv(path, classes, split=split))
