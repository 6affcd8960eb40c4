"""Stage 1, ``pipeline run extract-teachers``: run the teachers over a manifest into a signals store.

The driver creates (or reopens) the store, then hands whole shards of rows to Ray
actors. Each actor resolves its device where it runs, loads the teachers once, decodes
its shard's clips at the teachers' frame rate, predicts, and writes the shard itself
(data first, status last). Rerunning the same command resumes: shards whose rows are
all done are skipped.

Device: the config's ``device`` (auto | cpu | cuda[:N]) is resolved inside each actor,
so a CPU-only head node still gives GPU actors on GPU nodes. The driver only asks Ray
for GPUs when the device is not ``cpu`` and the cluster has some; ``device=cuda`` on a
cluster without GPUs starts the actors on CPUs, where each refuses with one message
naming its host.
"""
from __future__ import annotations

import math
import os
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_manifests.check import MAX_MISSING_FRACTION
from pipeline.config import dump_config
from pipeline.errors import PipelineError
from pipeline.stages.common import check_manifest_format, load_table, pick_device, progress, require

TEACHER_KINDS = ("ego", "object", "handobj")
PRECISIONS = ("bf16", "fp16", "fp32")
MISSING = "video file not found"  # the store's error text for a row whose video is absent
NON_FINITE = "non-finite teacher output"  # ... for a row a teacher gave NaN or inf for


@dataclass
class TeacherWeights:
    """Weights files of the teachers to run (or named weights, e.g. object: resnet152:IMAGENET1K_V2);
    leave one empty to skip that signal."""

    ego: str | None = None
    object: str | None = None
    handobj: str | None = None


@dataclass
class TeacherBatch:
    """Forward-pass batch of each teacher: ego windows, object frames, hand-object frames.

    A teacher gathers its windows or frames across all the clips of one predict call
    (``batch_clips`` clips) and runs them through the model this many at a time.
    """

    ego: int = 32
    object: int = 128
    handobj: int = 16


@dataclass
class ExtractConfig:
    manifest: str = ""
    manifest_format: str = "auto"
    classes: str | None = None  # class list file; None: the dataset's shipped list (Kinetics-400, Charades, EPIC-100)
    video_root: str = ""
    out: str = ""  # the signals store (a .zarr folder)
    teachers: TeacherWeights = field(default_factory=TeacherWeights)
    max_frames: int = 40  # teacher frames kept per clip (10 s at 4 fps)
    shard_rows: int = 32  # rows per unit of work (and per zarr shard)
    batch_clips: int = 8  # clips per teacher predict call (their frames are batched together)
    batch: TeacherBatch = field(default_factory=TeacherBatch)
    workers: int = 2  # Ray actors
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # 0: 1 GPU per actor when GPUs are used; 0.25 packs 4 actors on a GPU
    device: str = "auto"  # auto | cpu | cuda[:N], resolved by each actor where it runs
    precision: str = "bf16"  # bf16 | fp16 | fp32: autocast dtype of the teachers on a GPU (CPU runs fp32)
    ray_address: str | None = None  # None: start a local Ray instance
    max_failed_fraction: float = 0.05  # undecodable videos tolerated before the run fails
    max_missing_fraction: float = MAX_MISSING_FRACTION  # absent videos tolerated (Kinetics downloads lack 2-13 %)

    def validate(self) -> None:
        require(self, "manifest", "video_root", "out")
        check_manifest_format(self.manifest_format)
        if not any(getattr(self.teachers, k) for k in TEACHER_KINDS):
            raise ValueError("no teacher weights given: set at least one of teachers.ego, teachers.object, teachers.handobj")
        for key in ("max_failed_fraction", "max_missing_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"'{key}' must lie in [0, 1]")
        for key in ("max_frames", "shard_rows", "batch_clips", "workers"):
            if getattr(self, key) < 1:
                raise ValueError(f"'{key}' must be at least 1")
        for kind in TEACHER_KINDS:
            if getattr(self.batch, kind) < 1:
                raise ValueError(f"'batch.{kind}' must be at least 1")
        if self.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", self.device):
            raise ValueError(f"'device' must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"'precision' must be one of {list(PRECISIONS)}, got {self.precision!r}")


@dataclass
class ExtractResult:
    store: Path
    rows: int
    ok: int
    failed: int  # rows marked failed, missing videos included
    missing: int  # of those, videos absent from disk
    skipped_shards: int
    failure_reasons: dict[str, int]


def _teacher_paths(cfg: ExtractConfig) -> dict[str, str]:
    from teachers import source_kind

    paths = {k: getattr(cfg.teachers, k) for k in TEACHER_KINDS if getattr(cfg.teachers, k)}
    for kind, p in paths.items():
        if not Path(p).is_file() and source_kind(p) != kind:  # a named source, e.g. object: resnet152:IMAGENET1K_V2
            raise PipelineError(f"teachers.{kind}: weights file not found: {p}")
    return paths


def _frames_per_clip(table, fps: float, max_frames: int) -> int:
    spans = [c.end - c.start for c in table if c.end is not None]
    longest = max(spans) if spans else max_frames / fps
    return max(1, min(max_frames, int(math.ceil(longest * fps - 1e-6))))


class ShardWorker:
    """Resolves its device and loads the teachers once; ``run_shard`` decodes, predicts and
    writes one shard of rows.

    Usable without Ray (tests call it directly); the stage builds one inside each Ray actor
    (:class:`RemoteShardWorker`), so ``device`` is resolved in the process that computes.
    ``batch`` maps a teacher kind to its forward-pass batch (absent kinds: :class:`TeacherBatch`'s).
    """

    def __init__(self, teacher_paths: dict[str, str], store_path: str, device: str = "auto", threads: int = 1,
                 batch_clips: int = 8, batch: dict[str, int] | None = None, precision: str = "bf16"):
        import torch

        from pipeline.io.store import open_store
        from teachers.base import load_teacher

        try:
            self.device = torch.device(pick_device(device))
        except PipelineError as e:
            raise PipelineError(f"extract-teachers worker on host {socket.gethostname()}: {e}; set device=cpu or "
                                "run on GPU nodes") from None
        torch.set_num_threads(max(1, threads))
        self.teachers = {kind: load_teacher(p, device=self.device) for kind, p in teacher_paths.items()}
        self.batch = {kind: int((batch or {}).get(kind, getattr(TeacherBatch, kind))) for kind in self.teachers}
        for teacher in self.teachers.values():
            teacher.use_precision(precision)
        self.store = open_store(store_path, mode="r+")
        first = next(iter(self.teachers.values()))
        self.fps = first.spec.frame_rate
        self.size = max(t.spec.size for t in self.teachers.values())
        self.num_frames = self.store.num_frames
        self.batch_clips = batch_clips

    def describe(self) -> dict:
        """Where this worker computes: host, device, autocast dtype and batch of each teacher."""
        return {"host": socket.gethostname(), "device": str(self.device),
                "precision": {k: t.precision for k, t in self.teachers.items()}, "batch": dict(self.batch)}

    def run_shard(self, start: int, stop: int, clips: list[tuple[str | None, float, float | None, float | None]]) -> dict:
        """``clips``: (video path or None when missing, start, end, frame rate of a frames folder or None)."""
        from pipeline.io.store import FAILED, OK
        from pipeline.io.video import VideoReadError, probe, read_frames, sample_times

        n, F, S = stop - start, self.num_frames, self.size
        frames = np.zeros((n, F, S, S, 3), dtype=np.uint8)
        frame_time = np.full((n, F), np.nan, dtype=np.float32)
        status = np.full(n, FAILED, dtype=np.uint8)
        errors = [""] * n
        for i, (path, t0, t1, rate) in enumerate(clips):
            if path is None:
                errors[i] = MISSING
                continue
            try:
                end = t1 if t1 is not None else (probe(path, frame_rate=rate).duration or F / self.fps)
                times = sample_times(t0, end, self.fps)[:F]
                got = read_frames(path, times, size=(S, S), frame_rate=rate)
            except VideoReadError as e:
                errors[i] = e.reason
                continue
            k = len(times)
            frames[i, :k] = got.frames
            frames[i, k:] = got.frames[-1]  # padding frames repeat the last one; their time stays NaN
            frame_time[i, :k] = np.where(got.valid, got.frame_time, np.nan)
            status[i] = OK
        arrays = {"frame_time": frame_time}
        ok_rows = np.flatnonzero(status == OK)
        for kind, teacher in self.teachers.items():
            shapes = teacher.output_shapes(F)
            outs = {name: np.zeros((n, *tail), dtype=np.float32) for name, (tail, _) in shapes.items()}
            for b in range(0, len(ok_rows), self.batch_clips):
                rows = ok_rows[b : b + self.batch_clips]
                with teacher.autocast():
                    pred = teacher.predict(frames[rows], frame_time[rows], max_batch=self.batch[kind])
                for name in outs:
                    outs[name][rows] = pred[name]
            for name, (_, dtype) in shapes.items():
                with np.errstate(over="ignore"):  # an overflow becomes inf, caught here
                    arrays[name] = outs[name].astype(dtype)
                # NaN/inf from the model, or beyond the store's dtype (float16 overflows past 65504)
                bad = (status == OK) & ~np.isfinite(arrays[name].reshape(n, -1)).all(axis=1)
                for i in np.flatnonzero(bad):
                    status[i], errors[i] = FAILED, f"{NON_FINITE} ({name})"
                    arrays[name][i] = 0
        ok_rows = np.flatnonzero(status == OK)
        self.store.write_shard(start, stop, arrays, status, errors)
        return {"start": start, "stop": stop, "ok": int(len(ok_rows)), "errors": [e for e in errors if e]}


class RemoteShardWorker:
    """The Ray actor: builds its :class:`ShardWorker` in ``start``, not in ``__init__``, so an
    error there (no GPU on this node, unreadable weights) reaches the driver as that error;
    Ray reports a failed actor constructor only as a dead actor with a traceback in text."""

    def start(self, *args, **kwargs) -> dict:
        self.worker = ShardWorker(*args, **kwargs)
        return self.worker.describe()

    def run_shard(self, *job) -> dict:
        return self.worker.run_shard(*job)


def run_extract(cfg: ExtractConfig) -> ExtractResult:
    """Run stage 1. Raises PipelineError (exit 1) when more than ``max_failed_fraction`` of the rows
    could not be decoded, or more than ``max_missing_fraction`` have no video on disk."""
    from data_manifests.formats import clip_frame_rate, resolve_videos
    from pipeline.io.store import FAILED, OK, check_provenance, create_store, open_store
    from teachers.base import load_teacher

    table = load_table(cfg.manifest, cfg.manifest_format, cfg.classes)
    if len(table) == 0:
        raise PipelineError(f"manifest {cfg.manifest} has no rows")
    if not Path(cfg.video_root).is_dir():
        raise PipelineError(f"video root not found: {cfg.video_root}")
    paths = _teacher_paths(cfg)
    teachers = {kind: load_teacher(p, device="cpu") for kind, p in paths.items()}
    rates = {kind: t.spec.frame_rate for kind, t in teachers.items()}
    if len(set(rates.values())) != 1:
        raise PipelineError(f"the teachers must share one frame rate to share frame_time; got {rates}")
    fps = next(iter(rates.values()))
    F = _frames_per_clip(table, fps, cfg.max_frames)
    outputs: dict[str, tuple[tuple[int, ...], str]] = {}
    for t in teachers.values():
        outputs.update(t.output_shapes(F))
    provenance = {
        "manifest": {"path": str(Path(cfg.manifest).resolve()), "sha256": table.source_sha256, "rows": table.fingerprint, "format": table.format},
        "classes": table.classes,
        "frame_rate": fps,
        "num_frames": F,
        "teachers": {kind: t.meta for kind, t in teachers.items()},
        "video_root": str(Path(cfg.video_root).resolve()),
    }
    del teachers
    store_path = Path(cfg.out)
    if store_path.exists():
        store = open_store(store_path, mode="r+")
        check_provenance(store, {k: provenance[k] for k in ("frame_rate", "num_frames", "teachers")}
                         | {"manifest_rows": table.fingerprint})
    else:
        store = create_store(
            store_path, [c.clip_id for c in table], F, outputs,
            {**provenance, "manifest_rows": table.fingerprint}, shard_rows=cfg.shard_rows,
        )
    dump_config(cfg, store_path / "extract-teachers.config.yaml")

    pending = store.pending_shards()
    skipped = len(store.shards()) - len(pending)
    resolved = resolve_videos(table, list(table), cfg.video_root)
    absent = sum(p is None for p in resolved)
    if absent:
        print(f"extract-teachers: {absent} of {len(table)} videos ({absent / len(table):.1%}) are missing under "
              f"{cfg.video_root}; their rows are marked failed ('pipeline data check' lists them)")
    jobs = [
        (a, b, [(str(resolved[i]) if resolved[i] else None, table[i].start, table[i].end,
                 clip_frame_rate(table, table[i], resolved[i]) if resolved[i] else None) for i in range(a, b)])
        for a, b in pending
    ]
    if jobs:
        _run_on_ray(cfg, paths, store_path, jobs)

    status = store.status()
    reasons = Counter(e for e, s in zip(store.errors(), status) if s == FAILED)
    failed, missing = int((status == FAILED).sum()), reasons.get(MISSING, 0)
    result = ExtractResult(store_path, len(status), int((status == OK).sum()), failed, missing, skipped, dict(reasons))
    undecodable = failed - missing
    keep = f"The store at {store_path} keeps every completed row; fix the inputs and rerun to fill the rest."
    if undecodable / result.rows > cfg.max_failed_fraction:
        detail = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(6) if r != MISSING)
        raise PipelineError(
            f"{undecodable} of {result.rows} clips could not be decoded ({undecodable / result.rows:.1%} > "
            f"max_failed_fraction {cfg.max_failed_fraction:.1%}): {detail}. {keep}"
        )
    if missing / result.rows > cfg.max_missing_fraction:
        raise PipelineError(
            f"{missing} of {result.rows} videos are missing under {cfg.video_root} ({missing / result.rows:.1%} > "
            f"max_missing_fraction {cfg.max_missing_fraction:.1%}); is the video root right? {keep}"
        )
    return result


def actor_gpus(cfg: ExtractConfig, cluster_gpus: float) -> float:
    """GPUs to request per actor: none for ``device=cpu`` or a cluster without GPUs (where a
    ``cuda`` actor then refuses by itself), else ``gpus_per_worker`` or one."""
    if cfg.device == "cpu" or cluster_gpus <= 0:
        return 0.0
    return cfg.gpus_per_worker or 1.0


def _run_on_ray(cfg: ExtractConfig, paths: dict[str, str], store_path: Path, jobs: list) -> None:
    import ray
    from ray.util import ActorPool

    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_ACCEPT_CLOUD_SERVICES", "0")
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, **kwargs)
        else:
            ncpu = max(os.cpu_count() or 1, int(math.ceil(cfg.workers * cfg.cpus_per_worker)))
            ray.init(num_cpus=ncpu, **kwargs)
    try:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
        gpus = actor_gpus(cfg, cluster_gpus)
        workers = min(cfg.workers, len(jobs))
        if gpus:  # an actor Ray cannot place would wait forever with its shards
            workers = max(1, min(workers, int(cluster_gpus // gpus)))
        Actor = ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=gpus)(RemoteShardWorker)
        threads = max(1, int(cfg.cpus_per_worker))
        batch = {kind: getattr(cfg.batch, kind) for kind in TEACHER_KINDS}
        actors = [Actor.remote() for _ in range(workers)]
        try:
            placed = ray.get([a.start.remote(paths, str(store_path.resolve()), cfg.device, threads, cfg.batch_clips,
                                             batch, cfg.precision) for a in actors])
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, PipelineError):
                raise e.cause from None
            raise
        devices = Counter(f"{p['device']} ({p['host']})" for p in placed)
        print("extract-teachers: workers on " + ", ".join(f"{n} x {d}" for d, n in devices.items()))
        pool = ActorPool(actors)
        total = sum(b - a for a, b, _ in jobs)
        with progress(total=total, desc="extract-teachers", unit="clip") as bar:
            try:
                for res in pool.map_unordered(lambda actor, job: actor.run_shard.remote(*job), jobs):
                    bar.update(res["stop"] - res["start"])
                    bar.set_postfix(failed=len(res["errors"]), refresh=False)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, PipelineError):  # e.g. a full disk: its one line, not Ray's traceback
                    raise e.cause from None
                raise
    finally:
        if started_here:
            ray.shutdown()
