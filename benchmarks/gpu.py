"""The paper-size models on one GPU: teachers' throughput, SlowFast R50 training, projected GPU-hours.

    bash benchmarks/gpu.sh [--device cuda] [--batch 32] [--budget-s 420] [--compile]
    bash benchmarks/gpu.sh --device cpu --quick       # the same code paths, tiny sizes (the tests run it)

Every model has random weights (nothing is downloaded); what is timed does not depend on them
except the 100DOH detector's detections (random weights give few, so its post-processing is
light). On CUDA: bf16 autocast, channels-last(-3d), ``cudnn.benchmark``, a synchronize before
each clock read. Rows (written to the results file as they are measured, so a run stopped by
its time budget keeps what it measured):

* the three paper-size teachers' ``predict`` on uint8 frames of Kinetics' usual 340x256
  (each teacher's own preprocessing included, decoding not): ResNet-152 object teacher
  (``resnet152:IMAGENET1K_V2`` layout) frames/s, the 100DOH detector (``teachers/hoi100doh.py``,
  short side 600) frames/s, the ego teacher (``slow_r50``, 8-frame windows at 224) clips/s;
* SlowFast 8x8 R50 training (all Ego-Exo heads and losses, SGD) at a 224 crop: clips/s on
  synthetic input against the goal of 150 clips/s per H200, and clips/s with real decoding
  (``ClipDataset`` over 10 s 340x256 H.264 clips, one DataLoader worker per CPU core) against
  synthetic input;
* the achieved share of the GPU's dense bf16 peak (FLOPs of one training step counted by
  ``torch.utils.flop_counter.FlopCounterMode``);
* projected GPU-hours of Kinetics-400 stage 1 (240,000 clips x 10 s at 4 fps through the three
  teachers, one after the other on one GPU, as an extraction actor runs them) against the goal
  of 8 H200-hours, and of 200 epochs of stage 2 against the goal rate's hours.

``--quick`` shrinks everything so a 2-core CPU runs it in tens of seconds: 32 px clips, short
side 64 for the detector (ResNet-50 instead of 101), ResNet-18 as the object teacher,
the SlowFast and Slow R50 at a quarter of their width, a batch of 2, one step (no warm-up). Its
figures only show that the script works.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, add_result_args, report, write_results

KINETICS_CLIPS, KINETICS_SECONDS, TEACHER_FPS = 240_000, 10.0, 4.0
STAGE2_EPOCHS = 200
PREFETCH = 2  # batches each DataLoader worker prepares ahead
STAGE1_GOAL_HOURS = 8.0  # all three teachers over Kinetics-400, H200-hours
TRAIN_GOAL_CLIPS_PER_S = 150.0  # SlowFast R50 training per H200 (PySlowFast: about 5.7 per V100)
# Dense bf16 peak (no sparsity) by device name, TFLOPS: NVIDIA's data sheets (H100/H200 SXM
# 989.4; H100 PCIe 756; A100 312; L40S 362; RTX 4090 165.2 with fp32 accumulate).
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "4090": 165.2}


def bf16_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


class Bench:
    """Device, precision and sizes of one run, and the clock."""

    def __init__(self, args):
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.quick = args.quick
        self.batch = 2 if args.quick else args.batch
        self.warmup, self.iters = (0, 1) if args.quick else (3, args.iters)
        self.width = 16 if args.quick else 64  # the R50 backbones' stem width (64: the paper's)
        self.crop = 32 if args.quick else 224
        self.compile = args.compile
        self.cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()

    @property
    def precision(self) -> str:
        return "bf16 autocast" if self.cuda else "fp32"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def seconds_per_call(self, fn) -> float:
        """Mean seconds of ``fn()`` over ``iters`` calls after ``warmup`` calls."""
        for _ in range(self.warmup):
            fn()
        self.sync()
        t0 = time.perf_counter()
        for _ in range(self.iters):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / self.iters


# ---------------------------------------------------------------- stage 1: the teachers


def teacher_rates(b: Bench, tmp: Path) -> dict[str, float]:
    """frames/s of the object and 100DOH teachers' predict, windows/s of the ego teacher's."""
    import torchvision

    from teachers import ego, hoi100doh, load_teacher

    rng = np.random.default_rng(0)
    frames_per_clip = 2 if b.quick else 8
    # Clips per predict call: two forward batches of the object and ego teachers, eight of the detector's.
    clips = {"object": 32, "handobj": 8, "ego": 64} if not b.quick else {"object": 1, "handobj": 1, "ego": 1}
    frames = rng.integers(0, 256, (max(clips.values()), frames_per_clip, 256, 340, 3), dtype=np.uint8)
    times = np.tile(np.arange(frames_per_clip, dtype=np.float32) / TEACHER_FPS, (len(frames), 1))
    arch, weights = ("resnet18", "IMAGENET1K_V1") if b.quick else ("resnet152", "IMAGENET1K_V2")
    torch.save(torchvision.models.get_model(arch).state_dict(), tmp / f"{arch}.pth")
    teachers = {"object": load_teacher(f"{arch}:{weights}@{tmp / f'{arch}.pth'}", b.device)}
    short_side, max_size, depth = (64, 107, 50) if b.quick else (hoi100doh.SHORT_SIDE, hoi100doh.MAX_SIZE, 101)
    teachers["handobj"] = hoi100doh.HandObject100DOHTeacher(
        hoi100doh.build(depth=depth), hoi100doh.make_meta(short_side=short_side, max_size=max_size), b.device)
    spec = replace(ego.SLOW_SPEC, size=b.crop)
    teachers["ego"] = ego.EgoTeacher(ego.build("slow_r50", width=b.width), ego.make_meta(spec), b.device)
    if b.cuda:
        teachers["ego"].model.to(memory_format=torch.channels_last_3d)
        teachers["object"].model.to(memory_format=torch.channels_last)
    rates = {}
    batch = {"object": 128, "handobj": 8, "ego": 32}  # extract-teachers' defaults (TeacherBatch; 100DOH caps at 8)
    for kind, teacher in teachers.items():
        teacher.use_precision("bf16")
        n = clips[kind]
        with teacher.autocast():
            s = b.seconds_per_call(lambda: teacher.predict(frames[:n], times[:n], max_batch=batch[kind]))
        units = n * (math.ceil(frames_per_clip / spec.num_frames) if kind == "ego" else frames_per_clip)
        rates[kind] = units / s
        print(f"  {kind:8s} {teacher.meta.get('arch', type(teacher.model).__name__):24s} {rates[kind]:9.1f} "
              f"{'windows' if kind == 'ego' else 'frames'}/s")
        teacher.model.cpu()  # frees the GPU for the next one
    teachers.clear()
    if b.cuda:
        torch.cuda.empty_cache()
    return rates


# ---------------------------------------------------------------- stage 2: SlowFast R50 training


def slowfast_student(width: int = 64):
    from student.backbones import create_backbone
    from student.heads import EgoExoStudent

    torch.manual_seed(0)
    return EgoExoStudent(create_backbone("slowfast_r50", width=width), num_actions=400, num_objects=1000, dropout=0.0)


class Trainer:
    """One Ego-Exo training step of SlowFast R50 (every head and loss term, SGD with Nesterov)."""

    def __init__(self, b: Bench):
        from student.losses import PAPER_WEIGHTS

        self.b = b
        self.model = slowfast_student(b.width).to(b.device)
        if b.cuda:
            self.model.to(memory_format=torch.channels_last_3d)
        self.forward = torch.compile(self.model) if b.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        self.weights = PAPER_WEIGHTS
        self.model.eval()
        with torch.no_grad():
            grid = self.model(torch.zeros(1, 3, 32, b.crop, b.crop, device=b.device))["interaction_map"].shape[2:]
        self.model.train()
        n = b.batch
        self.targets = {"ego": torch.randn(n, 2, device=b.device), "object": torch.randn(n, 1000, device=b.device),
                        "interaction_map": torch.rand(n, 2, *grid, device=b.device),
                        "interaction_map_valid": torch.ones(n, grid[0], dtype=torch.bool, device=b.device)}

    def step(self, video: torch.Tensor, labels: torch.Tensor, eager: bool = False) -> None:
        from student.losses import egoexo_losses

        video = video.to(self.b.device, non_blocking=True)
        if self.b.cuda:
            video = video.contiguous(memory_format=torch.channels_last_3d)  # a no-op when it is already
        with self.b.autocast():
            outputs = (self.model if eager else self.forward)(video)
        outputs = {k: v.float() for k, v in outputs.items()}
        targets = {"action": labels.to(self.b.device, non_blocking=True), **self.targets}
        loss = sum(egoexo_losses(outputs, targets, self.weights).values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def flops_per_step(self, video: torch.Tensor, labels: torch.Tensor) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.step(video, labels, eager=True)
        return float(counter.get_total_flops())


def textured_clip(args: tuple[str, float, int, int, int, int]) -> str:
    """A textured H.264 clip (moving gradients + noise: real decoding work), as bench_frame_cache writes."""
    from benchmarks.bench_frame_cache import textured_clip as write

    path, seconds, width, height, fps, seed = args
    return write(Path(path), seconds, width, height, fps, seed)


def real_loader(b: Bench, tmp: Path):
    """A training DataLoader over textured clips: Kinetics-size (10 s, 340x256, 30 fps) with
    SlowFast 8x8's sampling, or tiny ones with ``--quick``."""
    from student.dataset import ClipDataset, ClipRef, Sampling

    if b.quick:
        n, seconds, (w, h), fps, jitter, workers = 2, 2.2, (80, 60), 30, (36, 45), 0
    else:
        n, seconds, (w, h), fps, jitter, workers = max(32, 2 * b.batch), 10.0, (340, 256), 30, (256, 320), b.cpus
    jobs = [(str(tmp / f"clip{i}.mp4"), seconds, w, h, fps, i) for i in range(n)]
    with ProcessPoolExecutor(max(1, min(b.cpus, n))) as pool:
        paths = list(pool.map(textured_clip, jobs))
    sampling = Sampling.from_config(32, 2, 30.0, jitter, b.crop, jitter[0], alpha=4)
    clips = [ClipRef(p, 0.0, seconds, (i % 400,), i) for i, p in enumerate(paths)]
    dataset = ClipDataset(clips, 400, sampling, train=True)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    return torch.utils.data.DataLoader(dataset, batch_size=b.batch, sampler=sampler, num_workers=workers,
                                       pin_memory=b.cuda, persistent_workers=workers > 0, drop_last=True,
                                       prefetch_factor=PREFETCH if workers else None), workers


def training_rates(b: Bench, tmp: Path) -> dict[str, float]:
    trainer = Trainer(b)
    video = torch.randn(b.batch, 3, 32, b.crop, b.crop)
    labels = torch.randint(0, 400, (b.batch,))
    if b.cuda:
        video = video.to(b.device).contiguous(memory_format=torch.channels_last_3d)
        labels = labels.to(b.device)
    synthetic = b.batch / b.seconds_per_call(lambda: trainer.step(video, labels))
    print(f"  SlowFast R50 training, synthetic input: {synthetic:.1f} clips/s")
    flops = trainer.flops_per_step(video, labels)
    loader, workers = real_loader(b, tmp)
    it = iter(loader)

    def real_step():
        batch = next(it)
        trainer.step(batch["video"], batch["label"])

    # Steady state: the workers fill up to workers x PREFETCH batches ahead while the first steps
    # run, so that many steps are consumed before the clock starts (the rate is then decoding's).
    for _ in range(workers * PREFETCH):
        real_step()
    real = b.batch / b.seconds_per_call(real_step)
    print(f"  SlowFast R50 training, real decoding ({workers} workers): {real:.1f} clips/s")
    del it, loader
    return {"synthetic": synthetic, "real": real, "flops_per_clip": flops / b.batch, "workers": workers}


# ---------------------------------------------------------------- rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny inputs (a CPU smoke run; the tests use it)")
    ap.add_argument("--batch", type=int, default=32, help="training clips per step")
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per measurement")
    ap.add_argument("--compile", action="store_true", help="torch.compile the student (adds compile time)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip what is left after this many seconds")
    add_result_args(ap)
    args = ap.parse_args()
    b = Bench(args)
    t_start = time.perf_counter()
    where = (f"{torch.cuda.get_device_name(b.device)}, {b.cpus} CPU cores" if b.cuda
             else f"{b.device}, {b.cpus} CPU cores") + f", {b.precision}" + (", quick sizes" if b.quick else "")
    print(f"gpu.sh on {where}")
    rows: list[Row] = []

    def emit(new: list[Row]) -> None:
        rows.extend(new)
        if not args.no_results:
            write_results(new, args.machine, args.results)

    def over_budget(what: str) -> bool:
        if time.perf_counter() - t_start > args.budget_s:
            print(f"  skipped {what}: past --budget-s {args.budget_s:g}")
            return True
        return False

    frames = KINETICS_CLIPS * KINETICS_SECONDS * TEACHER_FPS
    with tempfile.TemporaryDirectory() as tmp:
        if not over_budget("the teachers"):
            r = teacher_rates(b, Path(tmp))
            size = "340x256 uint8 frames" + (" (quick: ResNet-18 object teacher, 100DOH on ResNet-50 at short "
                                             "side 64, Slow R50 at 1/4 width and 32 px)" if b.quick else "")
            emit([Row("ResNet-152 object teacher predict", r["object"], None, "frames/s", None,
                      f"{where}; {size} -> short side 232, crop 224; random weights"),
                  Row("100DOH hand-object detector predict", r["handobj"], None, "frames/s", None,
                      f"{where}; {size} -> short side {64 if b.quick else 600}; random weights"),
                  Row("ego teacher (slow_r50) predict", r["ego"], None, "clips/s", None,
                      f"{where}; 8-frame windows at {b.crop} px"),
                  ])
            windows = KINETICS_CLIPS * math.ceil(KINETICS_SECONDS * TEACHER_FPS / 8)
            hours = (frames / r["object"] + frames / r["handobj"] + windows / r["ego"]) / 3600
            emit([Row("projected GPU-hours, Kinetics-400 stage 1 (three teachers)", hours, STAGE1_GOAL_HOURS, "h",
                      "<= 1.0", f"{KINETICS_CLIPS:,} clips x {KINETICS_SECONDS:g} s at {TEACHER_FPS:g} fps = "
                      f"{frames / 1e6:.1f} M frames through object + hand-object, {windows / 1e6:.1f} M ego windows; "
                      f"reference: the goal of {STAGE1_GOAL_HOURS:g} H200-hours; decoding not included")])
        if not over_budget("training"):
            r = training_rates(b, Path(tmp))
            geometry = f"batch {b.batch}, 32x{b.crop}x{b.crop} (slow 8 frames), all Ego-Exo heads and losses, SGD"
            emit([Row("SlowFast 8x8 R50 training, synthetic input", r["synthetic"], TRAIN_GOAL_CLIPS_PER_S,
                      "clips/s", ">= 1.0", f"{where}; {geometry}; reference: the goal per H200 (PySlowFast: "
                      "about 5.7 clips/s per V100)"),
                  Row("SlowFast 8x8 R50 training, real decoding vs synthetic", r["real"], r["synthetic"], "clips/s",
                      None, f"{where}; {geometry}; ClipDataset over {'2.2 s 80x60' if b.quick else '10 s 340x256'} "
                      f"H.264 clips, {r['workers']} DataLoader workers")])
            peak = bf16_peak_tflops(b.device)
            achieved = r["flops_per_clip"] * r["synthetic"] / 1e12
            emit([Row("SlowFast 8x8 R50 training, share of the bf16 peak", achieved, peak, "TFLOPS", None,
                      f"{r['flops_per_clip'] / 1e9:.0f} GFLOPs per clip (forward + backward, FlopCounterMode) x "
                      f"synthetic clips/s; " + ("dense bf16 peak of the data sheet" if peak else
                                                "no bf16 peak known for this device"))])
            goal_hours = STAGE2_EPOCHS * KINETICS_CLIPS / TRAIN_GOAL_CLIPS_PER_S / 3600
            for kind in ("synthetic", "real"):
                emit([Row(f"projected GPU-hours, {STAGE2_EPOCHS} epochs of stage 2 ({kind} input)",
                          STAGE2_EPOCHS * KINETICS_CLIPS / r[kind] / 3600, goal_hours, "h", "<= 1.0",
                          f"{STAGE2_EPOCHS} x {KINETICS_CLIPS:,} clips at the measured rate; reference: "
                          f"{TRAIN_GOAL_CLIPS_PER_S:g} clips/s per GPU")])
    print(f"gpu.sh done in {time.perf_counter() - t_start:.0f} s")
    args.no_results = True  # written row by row above
    report(rows, args)


if __name__ == "__main__":
    main()
