"""``pipeline inspect``: look into a signals store with dask.

float16 logits overflow when summed in float16 (the mean of 2M of them came out NaN),
so every reduction casts to float32 per chunk first (``.astype("float32")``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError


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
        p_ego = 1 / (1 + da.exp(ego[..., 0] - ego[..., 1]))  # softmax over 2 = sigmoid of the difference
        lazy["ego_prob_mean"] = p_ego.mean()
        lazy["ego_prob_frac_over_half"] = (p_ego.mean(axis=1) > 0.5).mean()
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
        lazy["hands_per_frame"] = ((score > 0.5) & (kind == 0)).sum(axis=-1).mean()
        lazy["objects_per_frame"] = ((score > 0.5) & (kind == 1)).sum(axis=-1).mean()
        lazy["hand_contact_rate"] = (((score > 0.5) & (kind == 0) & (boxes[..., 6] > 0)).sum()
                                     / da.maximum(((score > 0.5) & (kind == 0)).sum(), 1))
    if stats["ok"]:
        (computed,) = dask.compute(lazy)
        for k, v in computed.items():
            stats[k] = np.asarray(v).tolist() if np.ndim(v) else float(v)
    return stats


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
    print("  statistics (completed rows, float32):")
    for k, v in stats.items():
        print(f"    {k:24s} {v if not isinstance(v, float) else round(v, 4)}")
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
        draw_clip(store, clip, out, video_root)
        print(f"wrote {out}")
    return code


def draw_clip(store, clip_id: str, out: str, video_root: str | None) -> None:
    """Teacher frames of one clip in a row, with hand (green) / object (blue) boxes, ego score and top object."""
    import cv2

    from data_manifests.formats import load_manifest, resolve_video
    from pipeline.io.video import read_frames

    ids = list(store.clip_ids())
    if clip_id not in ids:
        raise PipelineError(f"clip '{clip_id}' is not in {store.path}")
    row = ids.index(clip_id)
    sig = store.read_row(row)
    man = store.attrs["manifest"]
    table = load_manifest(man["path"], man["format"], store.attrs.get("classes"))  # the class list the store was written with
    root = video_root or store.attrs.get("video_root")
    if root is None:
        raise PipelineError("pass --video-root to draw a clip")
    path = resolve_video(table, table[row], root)
    if path is None:
        raise PipelineError(f"video of clip '{clip_id}' not found under {root}")
    ft = sig["frame_time"]
    keep = np.isfinite(ft)
    frames = read_frames(path, ft[keep], short_side=160).frames
    tiles = []
    for j, img in enumerate(frames):
        img = np.ascontiguousarray(img[..., ::-1])
        h, w = img.shape[:2]
        if "handobj/boxes" in sig:
            for x1, y1, x2, y2, score, kind, contact in sig["handobj/boxes"][np.flatnonzero(keep)[j]]:
                if score < 0.5:
                    continue
                color = (0, 200, 0) if kind == 0 else (255, 80, 0)
                cv2.rectangle(img, (int(x1 * w), int(y1 * h)), (int(x2 * w), int(y2 * h)), color, 1)
        label = f"t={ft[keep][j]:.2f}"
        if "object/logits" in sig:
            label += f" obj={int(np.argmax(sig['object/logits'][np.flatnonzero(keep)[j]]))}"
        cv2.putText(img, label, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
        tiles.append(img)
    sheet = np.concatenate(tiles, axis=1)
    if "ego/logits" in sig:
        e = sig["ego/logits"].mean(axis=0)
        p = 1 / (1 + np.exp(e[0] - e[1]))
        cv2.putText(sheet, f"ego score {p:.2f}", (2, sheet.shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet)
