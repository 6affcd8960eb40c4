"""Frames/s of each teacher's ``predict`` on this machine: the demo teachers and ResNet-152.

    .venv/bin/python -m benchmarks.bench_teachers [--quick] [--repeats 3] [--json results.json]

Times ``Teacher.predict`` (preprocessing included, video decoding not) on random uint8 frames:

* the three demo teachers (untrained, the demo architectures and sizes) on 160x120 frames,
  the demo world's size, 2 clips of 8 frames at a time;
* the paper's Object-Score teacher, ResNet-152 with random weights loaded the way
  ``resnet152:IMAGENET1K_V2@FILE`` is (short side 232, centre crop 224), on 340x256 frames
  (Kinetics' usual size), 2 clips of 8 frames at a time (2 clips of 2 frames with ``--quick``).

Also times the ResNet-152 teacher's preprocessing alone (``weights.transforms()`` on the
batch: short side 256 -> 232, centre crop 224, normalise). Target: it takes <= 5 % of that
teacher's time per frame, so keeping the aspect ratio costs nothing that matters. Absolute
frames/s depend on the machine and its load; the share holds better. Always exits 0;
prints PASS/FAIL and writes its rows to the results file (``benchmarks/common.py``). Uses a
GPU only with ``--device cuda``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from benchmarks.common import Row, add_result_args, report
from teachers import ego, handobj, load_teacher, objects, save_teacher

TARGET = 0.05  # the largest share of the ResNet-152 teacher's time its preprocessing may take
DEMO_TEACHERS = {  # kind: (module, arch kwargs, meta) -- the demo's architectures at their default sizes
    "ego": (ego, {}, ego.make_meta()),
    "object": (objects, {"num_classes": 10}, objects.make_meta([f"object_{i}" for i in range(10)])),
    "handobj": (handobj, {}, handobj.make_meta()),
}


def frames_per_s(teacher, frames: np.ndarray, repeats: int) -> float:
    times = np.tile(np.arange(frames.shape[1], dtype=np.float32) / teacher.spec.frame_rate, (len(frames), 1))
    teacher.predict(frames[:, :1], times[:, :1])  # warm-up: lazy initialisation, allocator, kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        teacher.predict(frames, times)
        if teacher.device.type == "cuda":
            torch.cuda.synchronize(teacher.device)
        best = min(best, time.perf_counter() - start)
    return frames.shape[0] * frames.shape[1] / best


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ResNet-152 on 2 clips of 2 frames, one repeat (for make bench)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    add_result_args(ap)
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} threads, device {args.device}"
    print(f"machine: {machine}; best of {repeats}")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teachers = {}
        for kind, (module, kwargs, meta) in DEMO_TEACHERS.items():
            model = module.build(module.DEFAULT_ARCH, **kwargs)
            path = save_teacher(Path(tmp) / f"{kind}.pt", model, kind, module.DEFAULT_ARCH, kwargs, meta)
            teachers[f"demo {kind}"] = (load_teacher(path, args.device), (2, 8, 120, 160))
        # the paper-size teachers, random weights, at their real input sizes (one frame / one window
        # with --quick: on this CPU a 100DOH frame at 600 px takes seconds)
        from teachers import ego, hoi100doh

        teachers["handobj 100doh"] = (hoi100doh.HandObject100DOHTeacher(
            hoi100doh.build(), hoi100doh.make_meta(), args.device), (1, 1 if args.quick else 4, 256, 340))
        teachers["ego slow_r50"] = (ego.EgoTeacher(ego.build("slow_r50"), ego.make_meta(ego.SLOW_SPEC), args.device),
                                    (1, 8 if args.quick else 16, 256, 340))
        torch.save(torchvision.models.resnet152().state_dict(), Path(tmp) / "resnet152.pth")
        big = load_teacher(f"resnet152:IMAGENET1K_V2@{Path(tmp) / 'resnet152.pth'}", args.device)
        teachers["object resnet152"] = (big, (2, 2 if args.quick else 8, 256, 340))
        for name, (teacher, (b, f, h, w)) in teachers.items():
            frames = rng.integers(0, 256, (b, f, h, w, 3), dtype=np.uint8)
            fps = frames_per_s(teacher, frames, repeats)
            rows.append({"teacher": name, "arch": teacher.meta.get("arch", name.split()[-1]), "frames": f"{b}x{f} of {w}x{h}",
                         "input": teacher.spec.size, "frames_per_s": round(fps, 2), "ms_per_frame": round(1000 / fps, 2)})
            print(f"  {name:<17} {rows[-1]['arch']:<20} {b}x{f} frames of {w}x{h} -> {teacher.spec.size:>3} px "
                  f"{fps:8.1f} frames/s ({1000 / fps:.1f} ms per frame)")
        frames = rng.integers(0, 256, (16, 256, 340, 3), dtype=np.uint8)
        preprocess = min(_seconds(lambda: objects.classification_inputs(frames, big.meta["preprocess"], big.spec,
                                                                         big.device)) for _ in range(repeats))
    demo = 1 / sum(1 / r["frames_per_s"] for r in rows if r["teacher"].startswith("demo"))
    print(f"three demo teachers together: {demo:.1f} frames/s")
    share = preprocess / len(frames) * rows[-1]["frames_per_s"]
    print(f"resnet152 preprocessing alone: {len(frames) / preprocess:.1f} frames/s ({1000 * preprocess / len(frames):.1f} "
          f"ms per frame) = {share:.1%} of the teacher's time (target <= {TARGET:.0%}) -> "
          f"{'PASS' if share <= TARGET else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "repeats": repeats, "rows": rows,
                                         "demo_teachers_frames_per_s": round(demo, 2),
                                         "resnet152_preprocessing_share": round(share, 4)}, indent=1) + "\n")
        print(f"wrote {args.json}")
    # No other implementation of these teachers runs here, so each row's reference is the one
    # thing the same run offers: the teacher's work without its preprocessing (ResNet-152) or
    # the demo teachers one by one.
    big_fps = rows[-1]["frames_per_s"]
    results = [Row(f"teacher {r['teacher']} ({r['arch']}) predict", r["frames_per_s"], None, "frames/s", None,
                   f"{r['frames']} frames -> {r['input']} px, device {args.device}, best of {repeats}") for r in rows]
    results.append(Row("resnet152 teacher: preprocessing share of its time", preprocess / len(frames) * big_fps, 1.0,
                       "of the teacher's time", f"<= {TARGET}", "short side 232, centre crop 224, normalise, on 340x256"))
    report(results, args)


if __name__ == "__main__":
    main()
