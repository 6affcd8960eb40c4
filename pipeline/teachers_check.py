"""``pipeline teachers check``: load the teachers an extract-teachers config names and run them on one clip.

A dry run of stage 1 for one clip, before a cluster job: every weights file loads (or says
which file is missing and where it comes from), every output has the shape the signals store
will give it, and the time per frame on this machine shows what the run will cost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError

MAX_TRIES = 10  # resolvable clips tried before giving up on decoding one


@dataclass
class OutputCheck:
    kind: str  # teacher kind, e.g. "object"
    name: str  # output (store array) name, e.g. "object/logits"
    shape: tuple[int, ...]  # per clip, as predicted
    dtype: str  # as predicted
    store_dtype: str  # as the signals store keeps it
    device: str
    weights_dtype: str  # the model's parameters
    ms_per_frame: float


def check_teachers(cfg) -> tuple[dict, list[OutputCheck]]:
    """Run every teacher of an ExtractConfig on the manifest's first clip that decodes.

    Returns (the clip: id, path, frames, seconds, decoded size, teachers; one OutputCheck per output).
    Raises PipelineError when no clip decodes, or an output's shape is not the one the teacher
    declares for the store, or holds NaN/inf.
    """
    import torch

    from data_manifests.formats import clip_frame_rate, resolve_videos
    from pipeline.io.video import VideoReadError, probe, read_frames, sample_times
    from pipeline.stages.common import load_table, pick_device
    from pipeline.stages.extract import _teacher_paths, decode_short_side
    from teachers import load_teacher

    device = pick_device(cfg.device)
    sources = _teacher_paths(cfg)
    teachers = {kind: load_teacher(p, device=device) for kind, p in sources.items()}
    for teacher in teachers.values():  # as extract-teachers runs them: its autocast precision on a GPU
        teacher.use_precision(cfg.precision)
    wanted = max(decode_short_side(t) for t in teachers.values())
    rates = {kind: t.spec.frame_rate for kind, t in teachers.items()}
    if len(set(rates.values())) != 1:
        raise PipelineError(f"the teachers must share one frame rate to share frame_time; got {rates}")
    fps = next(iter(rates.values()))

    table = load_table(cfg.manifest, cfg.manifest_format, cfg.classes)
    resolved = [(c, p) for c, p in zip(table, resolve_videos(table, list(table), cfg.video_root)) if p is not None]
    if not resolved:
        raise PipelineError(f"none of the {len(table)} videos of {cfg.manifest} is under {cfg.video_root}")
    problems = []
    for clip, path in resolved[:MAX_TRIES]:
        rate = clip_frame_rate(table, clip, path)
        try:
            info = probe(path, frame_rate=rate)
            end = clip.end if clip.end is not None else info.duration or cfg.max_frames / fps
            times = sample_times(clip.start, end, fps)[: cfg.max_frames]
            # as extract-teachers decodes: the short side the teachers need, never upscaled
            got = read_frames(path, times, short_side=min(wanted, info.width, info.height), frame_rate=rate)
            break
        except VideoReadError as e:
            problems.append(f"{clip.clip_id}: {e.reason}")
    else:
        raise PipelineError(f"none of the first {len(problems)} videos found decodes: {'; '.join(problems)}")
    frames = got.frames[None]
    frame_time = np.where(got.valid, got.frame_time, np.nan).astype(np.float32)[None]
    num_frames = frames.shape[1]
    clip_info = {"clip_id": clip.clip_id, "path": str(path), "frames": num_frames, "fps": fps,
                 "seconds": (float(times[0]), float(times[-1]) + 1 / fps), "size": (frames.shape[3], frames.shape[2]),
                 "skipped": problems, "teachers": {k: f"{t.meta['arch']} from {sources[k]}" for k, t in teachers.items()}}

    checks = []
    for kind, teacher in teachers.items():
        batch = getattr(cfg.batch, kind)
        with teacher.autocast():
            teacher.predict(frames[:, :1], frame_time[:, :1], max_batch=batch)  # warm-up: lazy init, kernels, caches
            start = time.perf_counter()
            out = teacher.predict(frames, frame_time, max_batch=batch)
        if teacher.device.type == "cuda":
            torch.cuda.synchronize(teacher.device)
        ms = (time.perf_counter() - start) * 1000 / num_frames
        weights_dtype = str(next(teacher.model.parameters()).dtype).removeprefix("torch.")
        if teacher.device.type == "cuda" and teacher.precision != "fp32":
            weights_dtype += f"/{teacher.precision}"  # the autocast dtype the forward runs in
        for name, (tail, store_dtype) in teacher.output_shapes(num_frames).items():
            value = out[name][0]
            if value.shape != tuple(tail):
                raise PipelineError(f"{kind}: {name} came out {list(value.shape)} per clip, but the teacher "
                                    f"declares {list(tail)} for the signals store")
            if not np.isfinite(value).all():
                raise PipelineError(f"{kind}: {name} holds NaN or inf on clip {clip.clip_id}")
            checks.append(OutputCheck(kind, name, value.shape, str(value.dtype), store_dtype, str(teacher.device),
                                      weights_dtype, ms))
    return clip_info, checks


def format_checks(clip: dict, checks: list[OutputCheck]) -> str:
    """The table ``pipeline teachers check`` prints."""
    lines = [f"clip {clip['clip_id']} ({clip['path']}): {clip['frames']} frames at {clip['fps']:g} fps from "
             f"{clip['seconds'][0]:g} to {clip['seconds'][1]:g} s, decoded at {clip['size'][0]}x{clip['size'][1]}"]
    lines += [f"  skipped {p}" for p in clip["skipped"]]
    lines += [f"{kind:<8} {source}" for kind, source in clip["teachers"].items()]
    header = f"{'teacher':<8} {'output':<16} {'shape':<14} {'dtype':<8} {'store':<8} {'device':<7} {'weights':<9} ms/frame"
    lines.append(header)
    for c in checks:
        lines.append(f"{c.kind:<8} {c.name:<16} {str(list(c.shape)):<14} {c.dtype:<8} {c.store_dtype:<8} "
                     f"{c.device:<7} {c.weights_dtype:<9} {c.ms_per_frame:8.1f}")
    return "\n".join(lines)
