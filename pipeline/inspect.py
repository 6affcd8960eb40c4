"""``pipeline inspect``: look into a signals store with dask.

float16 logits overflow when summed in float16 (the mean of 2M of them came out NaN),
so every reduction casts to float32 per chunk first (``.astype("float32")``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.signals_schema import HAND, OBJECT

CONTACT_LETTERS = "NSOPF"  # 100DOH's letters for signals_schema.CONTACT_STATES: none, self, other, portable, stationary
HAND_COLOR, OBJECT_COLOR = (0, 200, 0), (255, 80, 0)  # BGR: hands green, objects blue


def ego_probability(logits):
    """P(ego) from exo/ego logits [..., 2] (numpy or dask): a softmax over 2 is the sigmoid of the difference."""
    return 1 / (1 + np.exp(logits[..., 0] - logits[..., 1]))


def clip_ego_scores(ego_logits, frame_time, frames_per_window: int | None):
    """Each clip's Ego-Score: the mean P(ego) over its ego-teacher windows that hold a frame.

    ``ego_logits`` [N, W, 2] and ``frame_time`` [N, F], numpy or dask. A window of padding
    only (past the clip's end) has logits 0, P = 0.5, and would pull every short clip toward
    0.5; it is known by its first frame's time being NaN (the teacher groups frames
    ``frames_per_window`` at a time; None: every window counts). NaN for a clip without one.
    """
    p = ego_probability(ego_logits)
    valid = np.isfinite(frame_time[:, ::frames_per_window]) if frames_per_window else np.ones_like(p, dtype=bool)
    count = valid.sum(axis=1)
    return np.where(count > 0, np.where(valid, p, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)


def store_manifest(store):
    """The manifest a store was written for, parsed with the store's class list (row i = store row i)."""
    from data_manifests.formats import load_manifest
    from data_manifests.table import ManifestError

    man = store.attrs.get("manifest") or {}
    if "path" not in man:
        raise PipelineError(f"{store.path} records no manifest")
    try:
        table = load_manifest(man["path"], man.get("format", "auto"), store.attrs.get("classes"))
    except ManifestError as e:
        raise PipelineError(f"the manifest of {store.path} cannot be read ({e})") from None
    if [c.clip_id for c in table] != store.clip_ids().tolist():
        raise PipelineError(f"manifest {man['path']} no longer matches {store.path} (clip ids differ)")
    return table


def classes_by_ego_score(store, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
    """The manifest's classes ranked by the mean Ego-Score of their clips, highest first (the paper's
    sanity check: hand-centric classes rank highest). ``scores[j]`` is store row ``rows[j]``'s score;
    a multi-label clip counts for each of its classes; ``example_clip`` is one of the class's clips."""
    table = store_manifest(store)
    by_class: dict[int, list[tuple[float, str]]] = {}
    for row, score in zip(rows, scores):
        if np.isfinite(score):
            for c in table[int(row)].labels:
                by_class.setdefault(c, []).append((float(score), table[int(row)].clip_id))
    ranking = [{"class": table.classes[c], "clips": len(v), "ego_score": float(np.mean([s for s, _ in v])),
                "example_clip": v[0][1]} for c, v in by_class.items()]
    return sorted(ranking, key=lambda r: -r["ego_score"])


def open_signal(store_path: str | Path, name: str):
    """A dask array over one store array, chunked by shard (one task per shard, not per row)."""
    import dask.array as da
    import zarr

    arr = zarr.open_array(str(store_path), path=name, mode="r")
    chunks = arr.shards or arr.chunks
    return da.from_zarr(str(store_path), component=name, chunks=chunks)


def signal_stats(store_path: str | Path) -> dict:
    """Per-signal statistics over completed rows, computed with dask in float32."""
    import dask
    import dask.array as da

    from pipeline.io.store import OK, open_store

    store = open_store(store_path)
    ok = store.status() == OK
    stats: dict = {"rows": store.num_rows, "ok": int(ok.sum()), "failed": int((store.status() == 2).sum()),
                   "pending": int((store.status() == 0).sum())}
    lazy = {}
    ft = open_signal(store_path, "frame_time")[ok]
    lazy["frames_per_clip"] = da.isfinite(ft).sum(axis=1).mean()
    if "ego/logits" in store.output_names:
        ego = open_signal(store_path, "ego/logits")[ok].astype("float32")
        clip_ego = clip_ego_scores(ego, ft, ego_frames_per_window(store.attrs))
        lazy["ego_prob_mean"] = da.nanmean(clip_ego)
        lazy["ego_prob_frac_over_half"] = (clip_ego > 0.5).mean()
        lazy["clip_ego_score"] = clip_ego
    if "object/logits" in store.output_names:
        obj = open_signal(store_path, "object/logits")[ok].astype("float32")
        valid = da.isfinite(ft)
        top = obj.argmax(axis=-1)
        lazy["object_logit_mean"] = obj.mean()
        lazy["object_logit_std"] = obj.std()
        lazy["object_top1_hist"] = da.bincount(top[valid].ravel(), minlength=obj.shape[-1])
    if "handobj/boxes" in store.output_names:
        boxes = open_signal(store_path, "handobj/boxes")[ok].astype("float32")
        score, kind = boxes[..., 4], boxes[..., 5]
        lazy["hands_per_frame"] = ((score > 0.5) & (kind == HAND)).sum(axis=-1).mean()
        lazy["objects_per_frame"] = ((score > 0.5) & (kind == OBJECT)).sum(axis=-1).mean()
        lazy["hand_contact_rate"] = (((score > 0.5) & (kind == HAND) & (boxes[..., 6] > 0)).sum()
                                     / da.maximum(((score > 0.5) & (kind == HAND)).sum(), 1))
    if stats["ok"]:
        (computed,) = dask.compute(lazy)
        clip_ego = computed.pop("clip_ego_score", None)
        for k, v in computed.items():
            stats[k] = np.asarray(v).tolist() if np.ndim(v) else float(v)
        if clip_ego is not None:
            try:
                stats["classes_by_ego_score"] = classes_by_ego_score(store, np.flatnonzero(ok), clip_ego)
            except PipelineError as e:  # a moved manifest costs the ranking, not the statistics
                stats["classes_by_ego_score"] = f"not ranked: {e}"
    return stats


def ego_frames_per_window(attrs: dict) -> int | None:
    """Teacher frames per window of the store's ego teacher (None when its metadata does not say)."""
    return attrs.get("teachers", {}).get("ego", {}).get("spec", {}).get("num_frames")


def verify_store(store_path: str | Path) -> list[str]:
    """Problems found in completed rows (empty list: the store is sound)."""
    from pipeline.io.store import FAILED, OK, open_store

    store = open_store(store_path)
    status, errors = store.status(), store.errors()
    problems = []
    for i in np.flatnonzero((status == FAILED) & (errors == "")):
        problems.append(f"row {i}: failed without a reason")
    ok = np.flatnonzero(status == OK)
    ft = np.asarray(store.array("frame_time")[:])
    ids = store.clip_ids()
    for i in ok:
        t = ft[i][np.isfinite(ft[i])]
        if len(t) == 0:
            problems.append(f"row {i} ({ids[i]}): marked ok but has no frames")
        elif np.any(np.diff(t) <= 0):
            problems.append(f"row {i} ({ids[i]}): frame_time not increasing")
    for name in store.output_names:
        data = np.asarray(store.array(name)[:], dtype=np.float32)[ok]
        bad = ~np.isfinite(data.reshape(len(ok), -1)).all(axis=1)
        for i in ok[bad]:
            problems.append(f"row {i} ({ids[i]}): non-finite values in {name}")
        if name == "handobj/boxes" and len(ok):
            real = data[..., 4] > 0
            xy = data[..., :4][real]
            if np.any((xy < -1e-3) | (xy > 1 + 1e-3)):
                problems.append("handobj/boxes: coordinates outside [0, 1]")
            if np.any(xy[:, 2] < xy[:, 0]) or np.any(xy[:, 3] < xy[:, 1]):
                problems.append("handobj/boxes: boxes with x2 < x1 or y2 < y1")
    if len(set(ids.tolist())) != len(ids):
        problems.append("clip_id has duplicates")
    return problems


def inspect_store(store_path: str, verify: bool = False, clip: str | None = None, out: str | None = None,
                  video_root: str | None = None) -> int:
    from pipeline.io.store import open_store

    store = open_store(store_path)
    attrs = store.attrs
    print(f"signals store {store_path}")
    print(f"  schema {attrs['schema_version']}, written by egoexo-pipeline {attrs.get('package_version')}")
    man = attrs.get("manifest", {})
    print(f"  manifest {man.get('path')} ({man.get('format')}, sha256 {str(man.get('sha256'))[:12]})")
    print(f"  {attrs.get('num_frames')} teacher frames per clip at {attrs.get('frame_rate')} fps, {attrs['shard_rows']} rows per shard")
    for kind, meta in attrs.get("teachers", {}).items():
        print(f"  teacher {kind}: {meta.get('arch')} weights sha256 {str(meta.get('weights_sha256'))[:12]}")
    print("  arrays:")
    for name in ["clip_id", "status", "error", "frame_time", *store.output_names]:
        a = store.array(name)
        print(f"    {name:16s} {str(a.shape):18s} {str(a.dtype):14s} chunks {a.chunks} shards {a.shards}")
    stats = signal_stats(store_path)
    ranking = stats.pop("classes_by_ego_score", None)
    print("  statistics (completed rows, float32):")
    for k, v in stats.items():
        print(f"    {k:24s} {v if not isinstance(v, float) else round(v, 4)}")
    if isinstance(ranking, str):
        print(f"  classes by mean Ego-Score: {ranking}")
    elif ranking:
        print("  classes by mean Ego-Score (the paper's sanity check: hand-centric classes rank highest):")
        for i, r in enumerate(ranking, 1):
            print(f"    {i:3d}. {r['class']:32s} {r['ego_score']:.3f}  ({r['clips']} clips, e.g. {r['example_clip']})")
    code = 0
    if verify:
        problems = verify_store(store_path)
        if problems:
            print(f"verify: {len(problems)} problems")
            for p in problems[:50]:
                print(f"  {p}")
            code = 1
        else:
            print(f"verify: ok ({stats['ok']} completed rows checked)")
    if clip:
        if not out:
            raise PipelineError("--clip needs --out PNG")
        shown = draw_clip(store, clip, out, video_root)
        objects = ", ".join(f"{name} {p:.2f}" for name, p in shown["top_objects"])
        print(f"wrote {out}: {clip} ({shown['label']}), Ego-Score {shown['ego_score']:.2f}, top objects {objects}")
    return code


def draw_clip(store, clip_id: str, out: str | Path, video_root: str | None = None,
              grid: tuple[int, int] = (7, 7)) -> dict:
    """Draw one clip's teacher signals into the PNG ``out``; returns what they say about it.

    Top row: the teacher frames with hand (green) and object (blue) boxes, each hand with its
    contact state (100DOH's letters N S O P F), and the frame's top object class. Bottom row:
    the student's centre crop of each frame with the interaction map it is trained on
    (:func:`student.targets.interaction_map_targets` on a ``grid``: hand cells green, object
    cells blue, brighter for a higher score). Footer: label, Ego-Score and top objects.
    Returns ``{"clip_id", "label", "ego_score", "top_objects": [(class, mean probability)]}``.
    """
    import cv2

    from data_manifests.formats import resolve_video
    from pipeline.io.video import read_frames
    from student.targets import interaction_map_targets

    ids = store.clip_ids().tolist()
    if clip_id not in ids:
        raise PipelineError(f"clip '{clip_id}' is not in {store.path}")
    row = ids.index(clip_id)
    sig = store.read_row(row)
    table = store_manifest(store)
    root = video_root or store.attrs.get("video_root")
    if root is None:
        raise PipelineError("pass --video-root to draw a clip")
    path = resolve_video(table, table[row], root)
    if path is None:
        raise PipelineError(f"video of clip '{clip_id}' not found under {root}")
    ft = sig["frame_time"]
    keep = np.flatnonzero(np.isfinite(ft))
    frames = read_frames(path, ft[keep], short_side=160).frames
    shown = {"clip_id": clip_id, "label": ", ".join(table.classes[c] for c in table[row].labels) or "-",
             "ego_score": float("nan"), "top_objects": []}
    object_names = store.attrs.get("teachers", {}).get("object", {}).get("classes")
    if "object/logits" in sig:
        logits = sig["object/logits"][keep]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = (probs / probs.sum(axis=1, keepdims=True)).mean(axis=0)
        name = (lambda k: object_names[k]) if object_names else str
        shown["top_objects"] = [(name(int(k)), float(probs[k])) for k in np.argsort(-probs)[:3]]
    if "ego/logits" in sig:
        shown["ego_score"] = float(clip_ego_scores(sig["ego/logits"][None], ft[None], ego_frames_per_window(store.attrs))[0])

    h, w = frames.shape[1:3]
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2  # the student's test view: the centre crop of the short side
    crop = (x0 / w, y0 / h, (x0 + side) / w, (y0 + side) / h)
    maps = (interaction_map_targets(sig["handobj/boxes"], ft, ft[keep], crop, False, grid)
            if "handobj/boxes" in sig else None)
    columns = []
    for j, rgb in enumerate(frames):
        img = np.ascontiguousarray(rgb[..., ::-1])
        student_view = img[y0:y0 + side, x0:x0 + side].copy()
        for x1, y1, x2, y2, score, kind, contact in (sig["handobj/boxes"][keep[j]] if maps is not None else []):
            if score < 0.5:
                continue
            color = HAND_COLOR if kind == HAND else OBJECT_COLOR
            cv2.rectangle(img, (int(x1 * w), int(y1 * h)), (int(x2 * w), int(y2 * h)), color, 1)
            if kind == HAND:
                cv2.putText(img, CONTACT_LETTERS[int(contact)], (int(x1 * w) + 1, int(y2 * h) - 2),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1)
        label = f"t={ft[keep[j]]:.2f}"
        if "object/logits" in sig:
            k = int(np.argmax(sig["object/logits"][keep[j]]))
            label += f" {object_names[k] if object_names else k}"
        cv2.putText(img, label, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
        if maps is not None:
            img = np.concatenate([img, _map_tile(student_view, maps[:, j], w)], axis=0)
        columns.append(img)
    sheet = np.concatenate(columns, axis=1)
    footer = np.zeros((20, sheet.shape[1], 3), np.uint8)
    objects = ", ".join(f"{name} {p:.2f}" for name, p in shown["top_objects"])
    cv2.putText(footer, f"{clip_id}  label: {shown['label']}  Ego-Score {shown['ego_score']:.2f}  objects: {objects}",
                (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate([sheet, footer], axis=0))
    return shown


def _map_tile(view: np.ndarray, maps: np.ndarray, width: int) -> np.ndarray:
    """The student's view, dimmed, under its hand / object map [2, H, W] (cells scaled to the view),
    with the grid drawn; centred in a tile ``width`` wide."""
    import cv2

    side = view.shape[0]
    up = [cv2.resize(m, (side, side), interpolation=cv2.INTER_NEAREST) for m in maps]
    tile = view.astype(np.float32) * 0.4
    for channel, color in ((HAND, HAND_COLOR), (OBJECT, OBJECT_COLOR)):
        tile += up[channel][..., None] * np.array(color, np.float32) * 0.6
    tile = np.clip(tile, 0, 255).astype(np.uint8)
    for k in range(1, maps.shape[2]):
        x = round(k * side / maps.shape[2])
        cv2.line(tile, (x, 0), (x, side - 1), (90, 90, 90), 1)
    for k in range(1, maps.shape[1]):
        y = round(k * side / maps.shape[1])
        cv2.line(tile, (0, y), (side - 1, y), (90, 90, 90), 1)
    out = np.zeros((side, width, 3), np.uint8)
    left = (width - side) // 2
    out[:, left:left + side] = tile
    return out
