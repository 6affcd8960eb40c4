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
import yaml

from pipeline.config import to_dict
from pipeline.errors import PipelineError
from pipeline.stages.common import check_manifest_format, load_table, pick_device, progress, require

TEACHER_KINDS = ("ego", "object", "handobj")
PRECISIONS = ("bf16", "fp16", "fp32")
MISSING = "video file not found"  # the store's error text for a row whose video is absent
NON_FINITE = "non-finite teacher output"  # ... for a row a teacher gave NaN or inf for
TEACHER_ERROR = "teacher error"  # ... for rows whose computation raised (a teacher, the GPU), with the exception


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
    shards: str | None = None  # "A:B": only the store's shards A..B-1 (runs on disjoint ranges may write at once)
    retry_failed: bool = True  # a rerun also recomputes failed rows whose video is on disk now
    decode_threads: int = 0  # threads decoding ahead of the teachers in each actor (0: cpus_per_worker)
    decode_ahead: int = 0  # clips decoded ahead at most, per actor (0: 2 x batch_clips): bounds memory
    max_retries: int = 3  # restarts of a lost actor (process or node), and retries of the shard it ran
    progress_every_s: float = 60.0  # a JSON progress line on stdout this often (0: none), for cluster logs

    def validate(self) -> None:
        require(self, "manifest", "video_root", "out")
        check_manifest_format(self.manifest_format)
        if not any(getattr(self.teachers, k) for k in TEACHER_KINDS):
            raise ValueError("no teacher weights given: set at least one of teachers.ego, teachers.object, teachers.handobj")
        for key in ("max_failed_fraction", "max_missing_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"'{key}' must lie in [0, 1]")
        for key in ("decode_threads", "decode_ahead", "max_retries"):
            if getattr(self, key) < 0:
                raise ValueError(f"'{key}' must be >= 0")
        if self.progress_every_s < 0:
            raise ValueError("'progress_every_s' must be >= 0")
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
    store: Path | str  # a local path, or the URL it was given as
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


def decode_short_side(teacher) -> int:
    """The short side a teacher's frames are decoded at: what its preprocessing resizes to
    (a torchvision classifier's ``resize_size``, 100DOH's 600), else its input size."""
    preprocess = teacher.meta.get("preprocess") or {}
    return int(preprocess.get("resize_size") or teacher.spec.size)


class ShardWorker:
    """Resolves its device and loads the teachers once; ``run_shard`` decodes, predicts and
    writes one shard of rows.

    Frames are decoded with their aspect ratio (short side :func:`decode_short_side`, the
    largest any teacher needs, or the video's own when smaller: never upscaled), each teacher
    resizing or cropping for itself. A thread pool
    decodes ahead of the teachers, at most ``decode_ahead`` clips (bounded memory); PyAV and
    libswscale release the GIL, so decoding overlaps inference. Clips of one frame size are
    batched together, ``batch_clips`` clips per predict call.

    Usable without Ray (tests call it directly); the stage builds one inside each Ray actor
    (:class:`RemoteShardWorker`), so ``device`` is resolved in the process that computes.
    ``batch`` maps a teacher kind to its forward-pass batch (absent kinds: :class:`TeacherBatch`'s).
    """

    def __init__(self, teacher_paths: dict[str, str], store_path: str, device: str = "auto", threads: int = 1,
                 batch_clips: int = 8, batch: dict[str, int] | None = None, precision: str = "bf16",
                 decode_threads: int = 1, decode_ahead: int = 0):
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
        self.short_side = max(decode_short_side(t) for t in self.teachers.values())
        self.num_frames = self.store.num_frames
        self.batch_clips = batch_clips
        self.decode_threads = max(1, decode_threads)
        self.decode_ahead = decode_ahead or 2 * batch_clips

    def describe(self) -> dict:
        """Where this worker computes: host, device, autocast dtype and batch of each teacher."""
        return {"host": socket.gethostname(), "device": str(self.device),
                "precision": {k: t.precision for k, t in self.teachers.items()}, "batch": dict(self.batch),
                "decode_short_side": self.short_side, "decode_threads": self.decode_threads}

    def decode(self, clip: tuple[str | None, float, float | None, float | None]) -> tuple[np.ndarray, np.ndarray] | str:
        """One clip's ``num_frames`` frames [F, H, W, 3] and their times [F] (NaN past its end,
        where the last frame repeats), or the reason it cannot be read."""
        from pipeline.io.video import VideoReadError, probe, read_frames, sample_times

        path, t0, t1, rate = clip
        if path is None:
            return MISSING
        F = self.num_frames
        try:
            short_side = self.short_side
            if rate is None or t1 is None:  # a video file (a frames folder is listed by probe: skipped)
                info = probe(path, frame_rate=rate)
                # never upscaled here: a teacher that wants more pixels resizes from the native frame
                short_side = min(short_side, info.width, info.height)
                end = t1 if t1 is not None else (info.duration or F / self.fps)
            else:
                end = t1
            times = sample_times(t0, end, self.fps)[:F]
            got = read_frames(path, times, short_side=short_side, frame_rate=rate)
        except VideoReadError as e:
            return e.reason
        except Exception as e:  # anything else about this one file fails its row, not its neighbours
            return f"{e.__class__.__name__}: {e}"
        k = len(times)
        frames = np.empty((F, *got.frames.shape[1:]), np.uint8)
        frames[:k] = got.frames
        frames[k:] = got.frames[-1]  # padding frames repeat the last one; their time stays NaN
        frame_time = np.full(F, np.nan, np.float32)
        frame_time[:k] = np.where(got.valid, got.frame_time, np.nan)
        return frames, frame_time

    def _decoded(self, clips: list, rows: list[int]):
        """``(row, decode(clips[row]))`` in row order, decoded by a thread pool at most
        ``decode_ahead`` clips ahead of the consumer (backpressure)."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode") as pool:
            todo, window = iter(rows), deque()
            for i in todo:
                window.append((i, pool.submit(self.decode, clips[i])))
                if len(window) >= self.decode_ahead:
                    break
            while window:
                i, future = window.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    window.append((nxt, pool.submit(self.decode, clips[nxt])))
                yield i, future.result()

    def _predict(self, batch: list[tuple[int, np.ndarray, np.ndarray]], outs: dict[str, np.ndarray]) -> None:
        """Run every teacher on decoded clips, grouped by frame size, into ``outs`` rows."""
        by_size: dict[tuple, list] = {}
        for item in batch:
            by_size.setdefault(item[1].shape, []).append(item)
        for group in by_size.values():
            rows = [i for i, _, _ in group]
            frames = np.stack([f for _, f, _ in group])
            times = np.stack([t for _, _, t in group])
            for kind, teacher in self.teachers.items():
                with teacher.autocast():
                    pred = teacher.predict(frames, times, max_batch=self.batch[kind])
                for name in teacher.output_shapes(self.num_frames):
                    outs[name][rows] = pred[name]
            outs["frame_time"][rows] = times

    def run_shard(self, start: int, stop: int, clips: list[tuple[str | None, float, float | None, float | None]],
                  rows: list[int] | None = None) -> dict:
        """Compute ``rows`` (shard-relative; None: all) of one shard and write the whole shard;
        rows not computed keep what the store holds. ``clips``: (video path or None when
        missing, start, end, frame rate of a frames folder or None) for every row of the shard.

        An unreadable video fails its row with the reason; any other exception (a teacher, the
        GPU) fails the rows being computed with its reason, and the shard is still written.
        """
        import time

        from pipeline.io.store import FAILED, OK

        t_start = time.perf_counter()
        n, F = stop - start, self.num_frames
        rows = list(range(n)) if rows is None else sorted(rows)
        shapes = {"frame_time": ((F,), "float32")}
        for teacher in self.teachers.values():
            shapes.update(teacher.output_shapes(F))
        if len(rows) < n:  # keep the other rows as written
            outs = {name: np.asarray(self.store.array(name)[start:stop], dtype=np.float32) for name in shapes}
            status = np.asarray(self.store.array("status")[start:stop], dtype=np.uint8).copy()
            errors = [str(e) for e in np.asarray(self.store.array("error")[start:stop]).tolist()]
        else:
            outs = {name: np.zeros((n, *tail), np.float32) for name, (tail, _) in shapes.items()}
            status, errors = np.full(n, FAILED, np.uint8), [""] * n
        outs["frame_time"][rows] = np.nan
        for name in shapes:
            if name != "frame_time":
                outs[name][rows] = 0
        status[rows] = FAILED
        for i in rows:
            errors[i] = ""
        teacher_s = 0.0
        try:
            batch = []
            for i, got in self._decoded(clips, rows):
                if isinstance(got, str):
                    errors[i] = got
                    continue
                batch.append((i, *got))
                if len(batch) == self.batch_clips:
                    t0 = time.perf_counter()
                    self._predict(batch, outs)
                    teacher_s += time.perf_counter() - t0
                    for j, _, _ in batch:
                        status[j] = OK
                    batch = []
            if batch:
                t0 = time.perf_counter()
                self._predict(batch, outs)
                teacher_s += time.perf_counter() - t0
                for j, _, _ in batch:
                    status[j] = OK
        except Exception as e:  # not one unreadable video: fail the rows being computed, with the reason
            reason = f"{TEACHER_ERROR}: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
            for i in rows:
                if status[i] != OK and not errors[i]:  # rows of earlier batches keep their results
                    status[i], errors[i] = FAILED, reason
                    outs["frame_time"][i] = np.nan
                    for name in shapes:
                        if name != "frame_time":
                            outs[name][i] = 0
        arrays = {}
        for name, (_, dtype) in shapes.items():
            with np.errstate(over="ignore"):  # an overflow becomes inf, caught here
                arrays[name] = outs[name].astype(dtype)
            if name == "frame_time":
                continue
            # NaN/inf from the model, or beyond the store's dtype (float16 overflows past 65504)
            bad = (status == OK) & ~np.isfinite(arrays[name].reshape(n, -1)).all(axis=1)
            for i in np.flatnonzero(bad):
                status[i], errors[i] = FAILED, f"{NON_FINITE} ({name})"
                arrays[name][i] = 0
        t_write = time.perf_counter()
        self.store.write_shard(start, stop, arrays, status, errors)
        now = time.perf_counter()
        return {"start": start, "stop": stop, "rows": len(rows), "ok": int((status[rows] == OK).sum()),
                "errors": [errors[i] for i in rows if errors[i]], "teacher_s": teacher_s,
                "write_s": now - t_write, "wall_s": now - t_start}


class RemoteShardWorker:
    """The Ray actor. Its constructor only keeps the arguments; ``start`` builds the
    :class:`ShardWorker`, so an error there (no GPU on this node, unreadable weights) reaches
    the driver as that error (Ray reports a failed constructor only as a dead actor with a
    traceback in text). An actor Ray restarts after its process or node was lost rebuilds
    the worker on its first shard, and Ray retries the shard it was running."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.worker: ShardWorker | None = None

    def start(self) -> dict:
        self.worker = ShardWorker(*self.args, **self.kwargs)
        return self.worker.describe()

    def run_shard(self, *job) -> dict:
        if self.worker is None:
            self.start()
        return self.worker.run_shard(*job)


def parse_shards(spec: str | None, total: int) -> tuple[int, int]:
    """``"A:B"`` (either side may be empty) -> shard indices ``[A, B)`` of ``total``."""
    if not spec:
        return 0, total
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", str(spec))
    if not m:
        raise PipelineError(f"--shards must be A:B (shard indices, B exclusive), got {spec!r}")
    a = int(m.group(1)) if m.group(1) else 0
    b = int(m.group(2)) if m.group(2) else total
    if not 0 <= a < b <= total:
        raise PipelineError(f"--shards {spec}: the store has shards 0:{total}; give 0 <= A < B <= {total}")
    return a, b


def rows_to_compute(status: np.ndarray, errors: np.ndarray, present: np.ndarray, retry_failed: bool) -> np.ndarray:
    """Rows a run computes: pending ones, and (with ``retry_failed``) failed ones that may now
    succeed: their video is on disk now, and the reason was not a non-finite output (the same
    teachers on the same frames give it again)."""
    from pipeline.io.store import FAILED, PENDING

    redo = status == PENDING
    if retry_failed:
        non_finite = np.char.startswith(errors.astype(str), NON_FINITE)
        redo |= (status == FAILED) & present & ~non_finite
    return redo


class ShardJobs:
    """The shards a run computes, each job ``(start, stop, clips, rows)`` built when it is taken.

    Per manifest row it keeps the video path after the rows' common folder as bytes and the
    clip's start, end and frame rate as float64 (about 60 B a Kinetics row), instead of the
    manifest's table (about 0.7 KB a row) or every job built ahead (about 250 B a row).
    """

    def __init__(self, shards: list[tuple[int, int]], redo: np.ndarray, lo: int, paths: list[str | None],
                 times: list[tuple[float, float | None, float | None]]):
        self.lo = lo
        self.shards = [(a, b) for a, b in shards if redo[a:b].any()]
        self.redo = redo[lo:lo + len(paths)].copy()
        self.rows = int(sum(int(redo[a:b].sum()) for a, b in self.shards))
        present = [p for p in paths if p is not None]
        prefix = os.path.commonprefix([min(present), max(present)]) if present else ""
        cut = prefix.rfind(os.sep) + 1  # the common folder, up to and with its last separator
        self.root = prefix[:cut]
        self.paths = np.array([b"" if p is None else os.fsencode(p[cut:]) for p in paths], dtype=bytes)
        self.times = np.array([[np.nan if v is None else v for v in t] for t in times], np.float64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.shards)

    def clip(self, i: int) -> tuple[str | None, float, float | None, float | None]:
        """(video path or None when missing, start, end, frame rate or None) of manifest row ``i``."""
        j = i - self.lo
        rel = self.paths[j]
        start, end, rate = (float(v) for v in self.times[j])
        return (self.root + os.fsdecode(rel) if rel else None, start, None if math.isnan(end) else end,
                None if math.isnan(rate) else rate)

    def __iter__(self):
        for a, b in self.shards:
            rows = np.flatnonzero(self.redo[a - self.lo:b - self.lo])
            yield a, b, [self.clip(i) for i in range(a, b)], rows.tolist()


def run_extract(cfg: ExtractConfig) -> ExtractResult:
    """Run stage 1. Raises PipelineError (exit 1) when more than ``max_failed_fraction`` of the rows
    could not be decoded, or more than ``max_missing_fraction`` have no video on disk."""
    import time

    from data_manifests.formats import clip_frame_rate, resolve_videos
    from pipeline.io.store import FAILED, OK, PENDING, open_or_create_store, store_location, write_store_file
    from pipeline.io.store_lock import StoreLock
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
    store_path = store_location(cfg.out)
    store = open_or_create_store(
        store_path, [c.clip_id for c in table], F, outputs, {**provenance, "manifest_rows": table.fingerprint},
        {k: provenance[k] for k in ("frame_rate", "num_frames", "teachers")} | {"manifest_rows": table.fingerprint},
        shard_rows=cfg.shard_rows,
    )
    all_shards = store.shards()
    first, last = parse_shards(cfg.shards, len(all_shards))
    shards = all_shards[first:last]
    lo, hi = shards[0][0], shards[-1][1]  # the rows of this run's shards
    with StoreLock(store_path, (first, last), len(all_shards)):
        write_store_file(store_path, "extract-teachers.config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        t_start = time.time()
        resolved = resolve_videos(table, [table[i] for i in range(lo, hi)], cfg.video_root)
        present = np.zeros(store.num_rows, bool)
        present[lo:hi] = [p is not None for p in resolved]
        absent = int((~present[lo:hi]).sum())
        if absent:
            print(f"extract-teachers: {absent} of {hi - lo} videos ({absent / (hi - lo):.1%}) are missing under "
                  f"{cfg.video_root}; their rows are marked failed ('pipeline data check' lists them)")
        status_before = store.status()
        redo = rows_to_compute(status_before, store.errors(), present, cfg.retry_failed)
        # What the shards need from the manifest, compactly: the table (about 0.7 KB a row, 170 MB
        # for Kinetics-400) goes before Ray starts, and each shard's job is built when submitted.
        jobs = ShardJobs(shards, redo, lo, [None if p is None else str(p) for p in resolved],
                         [(table[i].start, table[i].end, clip_frame_rate(table, table[i], resolved[i - lo])
                           if resolved[i - lo] else None) for i in range(lo, hi)])
        del table, resolved
        computed = int((redo & present)[lo:hi].sum())  # rows whose video is missing are marked, not decoded
        retried = int(((status_before == FAILED) & redo)[lo:hi].sum())
        del status_before
        if retried:
            print(f"extract-teachers: retrying {retried} rows that failed before (their videos are on disk now)")
        skipped = len(shards) - len(jobs)
        timing = _run_on_ray(cfg, paths, store_path, jobs) if len(jobs) else {}

    status = store.status()[lo:hi]
    errors = store.errors()[lo:hi]
    reasons = Counter(e for e, s in zip(errors, status) if s == FAILED)
    failed, missing = int((status == FAILED).sum()), reasons.get(MISSING, 0)
    result = ExtractResult(store_path, len(status), int((status == OK).sum()), failed, missing, skipped, dict(reasons))
    _write_report(store_path, result, (first, last), len(all_shards), int((status == PENDING).sum()),
                  time.time() - t_start, computed, timing)
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


def _write_report(store_path: Path | str, result: ExtractResult, shards: tuple[int, int], total: int, pending: int,
                  wall_s: float, computed: int, timing: dict) -> None:
    """``extract-report.json`` in the store (``extract-report.shards-A-B.json`` for a ``--shards`` run),
    unless this run submitted nothing (``timing`` empty) and a report is already there."""
    import json

    from pipeline.io.store import read_store_file, write_store_file

    name = "extract-report.json" if shards == (0, total) else f"extract-report.shards-{shards[0]}-{shards[1]}.json"
    previous = read_store_file(store_path, name)
    if not timing and previous is not None:
        # A rerun with nothing left to compute keeps the figures of the run that computed.
        print(f"extract-teachers: every row of shards {shards[0]}:{shards[1]} was already done; {name} "
              "keeps the last computing run's figures")
        return
    previous = json.loads(previous) if previous is not None else {}
    workers = timing.get("workers", 0)
    gpu_hours = timing.get("gpus", 0.0) * workers * timing.get("wall_s", 0.0) / 3600
    busy = timing.get("teacher_s", 0.0) / (timing["wall_s"] * workers) if workers and timing.get("wall_s") else None
    report = {
        "rows": result.rows, "done": result.ok, "failed": result.failed - result.missing, "missing": result.missing,
        "pending": pending, "failed_by_reason": result.failure_reasons, "shards": list(shards),
        "skipped_shards": result.skipped_shards, "clips_computed": computed, "wall_s": round(wall_s, 2),
        "clips_per_s": round(computed / timing["wall_s"], 3) if timing.get("wall_s") else None,
        "teachers_busy_fraction": None if busy is None else round(busy, 4),
        "workers": workers, "devices": timing.get("devices", {}),
        "gpu_hours": round(gpu_hours, 4),
        # this run's and every earlier run's that wrote this report (a resumed extraction)
        "gpu_hours_total": round(previous.get("gpu_hours_total", previous.get("gpu_hours", 0.0)) + gpu_hours, 4),
        "runs": previous.get("runs", 1 if previous else 0) + 1,
    }
    write_store_file(store_path, name, json.dumps(report, indent=1) + "\n")


def actor_gpus(cfg: ExtractConfig, cluster_gpus: float) -> float:
    """GPUs to request per actor: none for ``device=cpu`` or a cluster without GPUs (where a
    ``cuda`` actor then refuses by itself), else ``gpus_per_worker`` or one."""
    if cfg.device == "cpu" or cluster_gpus <= 0:
        return 0.0
    return cfg.gpus_per_worker or 1.0


def _progress_line(done: int, total: int, failed: int, elapsed: float) -> str:
    import json

    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    return json.dumps({"event": "extract-progress", "done": done, "total": total, "failed": failed,
                       "clips_per_s": round(rate, 3), "elapsed_s": round(elapsed, 1),
                       "eta_s": None if eta is None else round(eta, 1)})


def _run_on_ray(cfg: ExtractConfig, paths: dict[str, str], store_path: Path | str, jobs: ShardJobs) -> dict:
    """Run the jobs on Ray actors, one shard per actor at a time, each job built as an actor
    takes it; returns the run's timing: wall seconds, summed teacher seconds, actors, GPUs per
    actor and the devices they found."""
    import sys
    import time

    import ray

    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_ACCEPT_CLOUD_SERVICES", "0")
        kwargs = dict(include_dashboard=False, log_to_driver=True, logging_level="ERROR", configure_logging=True)
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
        # A lost actor (its process or node) is restarted and the shard it ran is retried.
        Actor = ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=gpus, max_restarts=cfg.max_retries,
                           max_task_retries=cfg.max_retries)(RemoteShardWorker)
        threads = max(1, int(cfg.cpus_per_worker))
        batch = {kind: getattr(cfg.batch, kind) for kind in TEACHER_KINDS}
        where = str(store_path) if isinstance(store_path, str) else str(store_path.resolve())  # a URL, or absolute
        actors = [Actor.remote(paths, where, cfg.device, threads, cfg.batch_clips, batch,
                               cfg.precision, cfg.decode_threads or threads, cfg.decode_ahead)
                  for _ in range(workers)]
        try:
            placed = ray.get([a.start.remote() for a in actors])
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, PipelineError):
                raise e.cause from None
            raise
        devices = Counter(f"{p['device']} ({p['host']})" for p in placed)
        print("extract-teachers: workers on " + ", ".join(f"{n} x {d}" for d, n in devices.items()))
        total = jobs.rows
        done = failed = 0
        teacher_s = 0.0
        t_start = last_line = time.time()
        pending, running = iter(jobs), {}

        def submit(actor) -> None:
            job = next(pending, None)
            if job is not None:
                running[actor.run_shard.remote(*job)] = actor

        with progress(total=total, desc="extract-teachers", unit="clip") as bar:
            try:
                for actor in actors:
                    submit(actor)
                while running:
                    (ref,), _ = ray.wait(list(running), num_returns=1)
                    res = ray.get(ref)
                    submit(running.pop(ref))
                    done += res["rows"]
                    failed += len(res["errors"])
                    teacher_s += res["teacher_s"]
                    bar.update(res["rows"])
                    bar.set_postfix(failed=failed, refresh=False)
                    now = time.time()
                    if cfg.progress_every_s and now - last_line >= cfg.progress_every_s:
                        print(_progress_line(done, total, failed, now - t_start), flush=True)
                        last_line = now
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, PipelineError):  # e.g. a full disk: its one line, not Ray's traceback
                    raise e.cause from None
                raise
        wall = time.time() - t_start
        if cfg.progress_every_s:
            print(_progress_line(done, total, failed, wall), flush=True)
        sys.stdout.flush()
        return {"wall_s": wall, "teacher_s": teacher_s, "workers": workers, "gpus": gpus, "devices": dict(devices)}
    finally:
        if started_here:
            ray.shutdown()
