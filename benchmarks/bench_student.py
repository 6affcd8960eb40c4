"""The student's data and training steps on the demo world, each against its reference, in the same run.

    .venv/bin/python -m benchmarks.bench_student [--quick] [--repeats 3]

Writes a small demo world (``make_demo`` at scale 0.05: 32 Kinetics-like clips of 2 s,
160x120) and a signals store for it with the demo teachers' arrays (random values of the
right shapes and ranges: what is timed does not depend on them), then measures:

* data step: a ``ClipDataset`` training item (decode, jitter, crop, flip, normalise) with the
  store's targets (ego and object soft logits, interaction maps) against the same item without
  the store. Target: overhead <= 5 %.
* train step: slow_tiny with every distillation head (ego, object, interaction map) and every
  loss term, forward + backward + SGD, against the same backbone with the action head alone.
  Target: <= 1.10 of its time.
* loader: clips/s of the training ``DataLoader`` (one worker process, as ``train-student``
  runs by default, with the store), decoding the MP4s and reading the demo's raw frame cache,
  against the clips/s of the train step with all heads. Target: the loader is faster (ratio >= 1).
* peak RSS of training (``student.train.fit``, one epoch, DataLoader in the main process so the
  dataset's memory counts) on 10x more clips (the same videos repeated, a store of 10x the
  rows) against the base count, each in a fresh process. Target: within 10 %.

Always exits 0; prints PASS/FAIL and writes its rows to the results file
(``benchmarks/common.py``). No GPU is used.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, add_result_args, peak_rss_mb, report

BATCH = 8  # clips per training step (the demo trains with 16; 8 keeps the run short)
NUM_OBJECTS = 10  # the demo object teacher's classes


def demo_clips(root: Path) -> tuple[list, int]:
    """The demo world's Kinetics-like training ClipRefs (rendered once under ``root``) and the class count."""
    from data_manifests.demo_world import make_demo
    from pipeline.stages.common import clip_refs, load_table

    world = make_demo(root / "world", scale=0.05, workers=1)
    table = load_table(world["kinetics_csv"], "kinetics", world["kinetics_classes"])
    clips, missing = clip_refs(table, list(range(len(table))), world["kinetics_video_dir"])
    assert not missing, missing
    return clips, len(table.classes)


def signals_store(path: Path, rows: int, seed: int = 0) -> str:
    """A complete store of ``rows`` rows shaped as the demo teachers write it (8 teacher frames
    at 4 fps), filled with random logits and boxes."""
    from pipeline.io.store import OK, create_store
    from teachers import ego, handobj, objects

    F = 8
    metas = {"ego": ego.make_meta(), "object": objects.make_meta([f"object_{i}" for i in range(NUM_OBJECTS)]),
             "handobj": handobj.make_meta()}
    K = 8  # boxes per frame
    shapes = {"ego/logits": ((F // metas["ego"]["spec"]["num_frames"], 2), "float16"),
              "object/logits": ((F, NUM_OBJECTS), "float16"), "handobj/boxes": ((F, K, 7), "float16")}
    store = create_store(path, [f"clip{i:06d}" for i in range(rows)], F, shapes, {"teachers": metas}, shard_rows=64)
    rng = np.random.default_rng(seed)
    for a, b in store.shards():
        n = b - a
        corners = np.sort(rng.uniform(0, 1, (n, F, K, 2, 2)), axis=3)  # x1 < x2, y1 < y2
        boxes = np.concatenate([corners[..., 0, :], corners[..., 1, :], rng.uniform(0, 1, (n, F, K, 1)),
                                rng.integers(0, 2, (n, F, K, 1)), rng.integers(0, 5, (n, F, K, 1))], axis=-1)
        arrays = {"frame_time": np.tile(np.arange(F, dtype=np.float32) / 4.0, (n, 1)),
                  "ego/logits": rng.normal(size=(n, *shapes["ego/logits"][0])),
                  "object/logits": rng.normal(size=(n, F, NUM_OBJECTS)), "handobj/boxes": boxes}
        store.write_shard(a, b, arrays, np.full(n, OK, np.uint8), [""] * n)
    return str(path)


def student(distil: bool, num_actions: int):
    from student.backbones import create_backbone
    from student.heads import EgoExoStudent

    torch.manual_seed(0)
    return EgoExoStudent(create_backbone("slow_tiny"), num_actions, num_objects=NUM_OBJECTS if distil else 0,
                         dropout=0.5, interaction_maps=distil, ego_head=distil)


def dataset(clips, num_classes: int, store: str | None, model, frame_cache: str | None = None):
    """The training dataset as ``train-student`` builds it for ``model`` (its backbone's sampling)."""
    from pipeline.stages.common import resolve_sampling
    from pipeline.stages.train import map_grid
    from student.dataset import ClipDataset

    sampling = resolve_sampling(None, model.backbone)
    return ClipDataset(clips, num_classes, sampling, train=True, store_path=store,
                       map_grid=map_grid(model, sampling) if store else None, frame_cache=frame_cache)


def data_step_rows(clips, num_classes: int, store: str, repeats: int) -> Row:
    """ms per training item with the store's targets against without: each item timed both ways
    back to back (so load from other work hits both alike), its best of ``repeats`` kept."""
    with_store = dataset(clips, num_classes, store, student(True, num_classes))
    without = dataset(clips, num_classes, None, student(False, num_classes))
    n = len(clips)
    best = np.full((2, n), np.inf)
    for r in range(repeats + 1):  # the first pass warms up: store opened, files cached
        for i in range(n):
            for k, ds in enumerate((with_store, without)):
                t0 = time.perf_counter()
                ds[(r, i)]
                if r:
                    best[k, i] = min(best[k, i], time.perf_counter() - t0)
    return Row("student data step with store reads vs without the store", 1000 * best[0].mean(),
               1000 * best[1].mean(), "ms per clip", "<= 1.05",
               f"ClipDataset training item, slow_tiny sampling (8 frames, crop 64), {n} demo clips, "
               f"each the best of {repeats}")


class TrainStep:
    """Forward + losses + backward + SGD of one model on one batch, as ``fit`` runs it on a CPU."""

    def __init__(self, model, batch: dict, weights: dict):
        self.model = model.train().to(memory_format=torch.channels_last_3d)  # as the demo trains
        self.video = batch["video"].contiguous(memory_format=torch.channels_last_3d)
        self.targets = {k: v for k, v in batch.items() if k != "video"}
        self.weights = weights
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def __call__(self) -> float:
        from student.losses import egoexo_losses

        t0 = time.perf_counter()
        terms = egoexo_losses(self.model(self.video), self.targets, self.weights)
        self.optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        self.optimizer.step()
        return time.perf_counter() - t0


def train_rows(clips, num_classes: int, store: str, steps: int) -> tuple[Row, float]:
    """The train step with all heads against heads off, alternating step by step (best of
    ``steps`` each); returns the row and all-heads clips/s."""
    from student.losses import PAPER_WEIGHTS

    heads_on = student(True, num_classes)
    ds = dataset(clips, num_classes, store, heads_on)
    items = [ds[i] for i in range(BATCH)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("video", "ego", "object", "interaction_map",
                                                                 "interaction_map_valid")}
    batch["action"] = torch.stack([it["label"] for it in items])
    on = TrainStep(heads_on, batch, PAPER_WEIGHTS)
    off = TrainStep(student(False, num_classes), {"video": batch["video"], "action": batch["action"]}, {"action": 1.0})
    for _ in range(2):  # warm-up: allocator, kernels
        on(), off()
    t_on = t_off = float("inf")
    for _ in range(steps):
        t_on, t_off = min(t_on, on()), min(t_off, off())
    row = Row("student train step, all distillation heads vs heads off", 1000 * t_on, 1000 * t_off, "ms per step",
              "<= 1.10", f"slow_tiny, batch {BATCH} of 8x64x64, forward + losses + backward + SGD, channels-last-3d, "
              f"{torch.get_num_threads()} torch thread(s), best of {steps} steps each, alternating")
    return row, BATCH / t_on


def loader_row(clips, num_classes: int, store: str, train_clips_per_s: float, batches: int,
               frame_cache: str | None = None) -> Row:
    """clips/s of the training DataLoader (one worker process) against the train step's."""
    from student.train import OptimConfig, train_loader

    ds = dataset(clips, num_classes, store, student(True, num_classes), frame_cache)
    loader = train_loader(ds, OptimConfig(batch_size=BATCH, num_workers=1))
    it = iter(loader)
    next(it)  # worker start-up and the store's first read are not steady state
    n, t0 = 0, time.perf_counter()
    for _, batch in zip(range(batches), it):
        n += len(batch["video"])
    rate = n / (time.perf_counter() - t0)
    del it, loader
    source = "the demo's raw frame cache (short side 91)" if frame_cache else "decoding the MP4s"
    return Row(f"data loader vs train step (all heads), {'frame cache' if frame_cache else 'decoding'}", rate,
               train_clips_per_s, "clips/s", ">= 1.0",
               f"DataLoader, 1 worker process, batch {BATCH}, with the store, {source}; {n} clips after the first batch")


def train_rss(root: Path, clips_n: int) -> float:
    """Peak RSS (MB) of a fresh process training one epoch on ``clips_n`` clips (demo videos repeated)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_student", "--rss-child", str(clips_n), str(root)],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode:
        raise RuntimeError(f"training child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def rss_child(clips_n: int, root: Path) -> None:
    """In the child: one epoch of ``fit`` over ``clips_n`` clips with a store of as many rows."""
    from dataclasses import replace

    from student.train import LossWeights, OptimConfig, fit

    clips, num_classes = demo_clips(root)
    refs = [replace(clips[i % len(clips)], row=i) for i in range(clips_n)]
    store = signals_store(root / f"rss-{clips_n}.zarr", clips_n)
    model = student(True, num_classes)
    ds = dataset(refs, num_classes, store, model)
    weights = LossWeights(action=0.5, ego=0.1, object=0.5, hand_map=1.0, object_map=1.0)
    with tempfile.TemporaryDirectory(dir=root) as out:
        fit(model, ds, OptimConfig(epochs=1, batch_size=BATCH, num_workers=0, channels_last=True), weights,
            Path(out), False, log=lambda *_: None)
    print(json.dumps({"clips": clips_n, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and steps (make bench)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-clips", type=int, default=16, help="base clip count of the peak-RSS row (10x is the other)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the timed steps (0: torch's default)")
    ap.add_argument("--rss-child", nargs=2, metavar=("CLIPS", "DIR"), help=argparse.SUPPRESS)
    add_result_args(ap)
    args = ap.parse_args()
    if args.rss_child:
        torch.set_num_threads(1)
        return rss_child(int(args.rss_child[0]), Path(args.rss_child[1]))
    repeats, steps = (2, 8) if args.quick else (args.repeats, 20)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        clips, num_classes = demo_clips(root)
        store = signals_store(root / "signals.zarr", len(clips))
        print(f"demo world of {len(clips)} clips and its store written in {time.perf_counter() - t0:.1f} s")
        rows = [data_step_rows(clips, num_classes, store, repeats)]
        train, train_rate = train_rows(clips, num_classes, store, steps)
        from pipeline.io.frame_cache import write_frame_cache

        cache = str(root / "frames.h5")  # as the demo trains: raw frames at the top of slow_tiny's jitter
        write_frame_cache(cache, [(c.path, c.start, c.end) for c in clips], 91, "raw")
        batches = 3 if args.quick else 8
        rows += [train, loader_row(clips, num_classes, store, train_rate, batches),
                 loader_row(clips, num_classes, store, train_rate, batches, cache)]
        base = train_rss(root, args.rss_clips)
        big = train_rss(root, 10 * args.rss_clips)
        rows.append(Row("peak RSS of training, 10x more clips", big, base, "MB", "<= 1.10",
                        f"one epoch of fit on {10 * args.rss_clips} vs {args.rss_clips} clips (demo videos repeated, "
                        f"store of as many rows), DataLoader in the process, fresh process each"))
    report(rows, args)


if __name__ == "__main__":
    main()
