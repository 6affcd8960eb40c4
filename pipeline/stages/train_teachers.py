"""``pipeline run train-teachers``: train the teachers and save their weights with metadata.

The ego/exo classifier needs only a Charades-Ego-format manifest (ids ending in EGO
are first-person). Its architecture is ``ego.arch``: the demo's ``videoresnet_tiny``, or
``slow_r50`` / ``slow_r101`` started from a Kinetics checkpoint (``ego.init``) for the
paper-size teacher; both train through :func:`teachers.ego_train.train_ego` (balanced
ego/exo sampling, validation accuracy each epoch on held-out pairs, best epoch kept).
The object classifier and the hand-object detector need per-frame ground truth (boxes,
contact, object category), which the demo world provides in ``ground_truth/<video>.json``;
real runs bring ImageNet / 100DOH weights instead.

Each teacher kind has one trainer in :data:`TRAINERS` (``@register_trainer(kind)``): a function of the
shared :class:`TrainJob` and the kind's settings section that returns a :class:`TrainedTeacher`. The
stage loops over the configured kinds and saves what each trainer returns.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipeline.errors import PipelineError
from pipeline.stages.common import load_table, pick_device, prepare_out_dir, progress, require

if TYPE_CHECKING:
    from teachers.training import Progress

@dataclass
class FitSettings:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-3
    frame_stride: int = 1  # train on every n-th teacher frame (neighbouring frames are near-duplicates)


@dataclass
class EgoFitSettings:
    """The ego/exo classifier: architecture, its input, and how it trains."""

    arch: str = "videoresnet_tiny"  # or slow_r50 / slow_r101 (paper size)
    arch_kwargs: dict = field(default_factory=dict)  # builder arguments, e.g. {width: 8} for the tiny one
    init: str | None = None  # Kinetics checkpoint for slow_r50/r101: PySlowFast .pyth, Caffe2 .pkl, or ours
    frame_rate: float | None = None  # None: the arch's (4 fps); all teachers of a store share one rate
    size: int | None = None  # None: the arch's (64 tiny, 224 slow)
    num_frames: int | None = None  # frames per window; None: the arch's (4 tiny, 8 slow)
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-3
    windows_per_video: int = 4  # training windows per video of the larger class, per epoch
    val_fraction: float = 0.15  # of the ego/exo pairs, held out to choose the best epoch
    preload: bool = True  # decode every video once into memory; false for Charades-Ego at 224 px
    workers: int = 0  # DataLoader processes decoding windows when not preloaded
    precision: str = "bf16"  # bf16 | fp32 (bf16 autocast on a GPU only)


@dataclass
class TrainTeachersConfig:
    manifest: str = ""  # Charades-Ego-format training CSV
    test_manifest: str | None = None  # held-out CSV for the reported metrics
    manifest_format: str = "auto"
    video_root: str = ""
    ground_truth: str | None = None  # per-frame ground truth folder (needed for object/handobj)
    out: str = ""
    teachers: list[str] = field(default_factory=lambda: list(TRAINERS))  # kinds, in training order
    seed: int = 0
    device: str = "auto"
    ego: EgoFitSettings = field(default_factory=EgoFitSettings)
    # Every other ground-truth frame (neighbours at 4 fps are near-duplicates): half the time of
    # stride 1, which is what ran until pipeline.config honoured these factories.
    object: FitSettings = field(default_factory=lambda: FitSettings(frame_stride=2))
    handobj: FitSettings = field(default_factory=lambda: FitSettings(frame_stride=2))

    def validate(self) -> None:
        require(self, "manifest", "video_root", "out")
        bad = [k for k in self.teachers if k not in TRAINERS]
        if bad:
            raise ValueError(f"'teachers' has unknown kinds {bad}; known: {list(TRAINERS)}")
        need = [k for k in self.teachers if TRAINERS[k].needs_ground_truth]
        if need and not self.ground_truth:
            raise ValueError(f"training the {' and '.join(need)} teacher needs 'ground_truth' (per-frame annotations)")
        from teachers.ego import ARCHS, DEFAULT_ARCH

        if self.ego.arch not in ARCHS:
            raise ValueError(f"'ego.arch' must be one of {sorted(ARCHS)}, got {self.ego.arch!r}")
        if self.ego.init and self.ego.arch == DEFAULT_ARCH:
            raise ValueError(f"'ego.init' loads a Kinetics checkpoint into a slow_r50/slow_r101 backbone, "
                             f"not into {DEFAULT_ARCH}")
        if not 0.0 <= self.ego.val_fraction < 1.0:
            raise ValueError("'ego.val_fraction' must lie in [0, 1)")
        if self.ego.precision not in ("bf16", "fp32"):
            raise ValueError(f"'ego.precision' must be bf16 or fp32, got {self.ego.precision!r}")
        for key in ("epochs", "batch_size", "windows_per_video"):
            if getattr(self.ego, key) < 1:
                raise ValueError(f"'ego.{key}' must be at least 1")


@dataclass
class _Decoded:
    frames: np.ndarray  # [V, F, S, S, 3] uint8 at the teacher frame rate
    times: np.ndarray  # [V, F]
    ego: np.ndarray  # [V] 1 = first-person
    gt: list[dict | None]  # ground truth per video (or None)


def _decode(table, video_root: str, ground_truth: str | None, fps: float, size: int, desc: str) -> _Decoded:
    from data_manifests.formats import resolve_videos
    from pipeline.io.video import VideoReadError, read_frames, sample_times

    frames, times, ego, gts = [], [], [], []
    n_frames = None
    clips = list(table)
    for clip, path in progress(list(zip(clips, resolve_videos(table, clips, video_root))), desc=desc, unit="video"):
        if path is None:
            raise PipelineError(f"video of {clip.clip_id} not found under {video_root}")
        t = sample_times(clip.start, clip.end if clip.end is not None else clip.start + 4.0, fps)
        n_frames = n_frames or len(t)
        t = t[:n_frames]
        try:
            got = read_frames(path, t, size=(size, size))
        except VideoReadError as e:
            raise PipelineError(str(e)) from None
        frames.append(got.frames)
        times.append(got.frame_time)
        ego.append(1 if clip.extras.get("ego", clip.clip_id.endswith("EGO")) else 0)
        gt = None
        if ground_truth:
            gp = Path(ground_truth) / f"{Path(path).stem}.json"
            if not gp.is_file():
                raise PipelineError(f"ground truth for {clip.clip_id} not found: {gp}")
            gt = json.loads(gp.read_text())
        gts.append(gt)
    k = min(len(f) for f in frames)
    return _Decoded(np.stack([f[:k] for f in frames]), np.stack([t[:k] for t in times]), np.array(ego), gts)


def _gt_frame(gt: dict, t: float) -> dict:
    i = min(int(round(t * gt["fps"])), len(gt["frames"]) - 1)
    return gt["frames"][i]


def object_crops(data: _Decoded, classes: list[str], size: int, stride: int = 1, margin: float = 0.15):
    """Object-centric crops (each ground-truth object box plus a margin) labelled with their category.

    The paper's Object-Score teacher is an ImageNet classifier: trained on object-centric
    images, applied to whole frames. The demo teacher is trained the same way; whole
    frames of one video are near-duplicates, so a whole-frame classifier only memorises
    backgrounds (measured: 0.19 held-out accuracy against 0.28 for the majority class).
    """
    import cv2

    crops, labels = [], []
    S = data.frames.shape[2]
    for v, gt in enumerate(data.gt):
        for j in range(0, data.frames.shape[1], stride):
            for o in _gt_frame(gt, float(data.times[v, j]))["objects"]:
                x1, y1, x2, y2 = o["box"]
                w, h = x2 - x1, y2 - y1
                if w * h * S * S < 16:  # a few pixels: nothing to recognise
                    continue
                xa, ya = max(0, int((x1 - margin * w) * S)), max(0, int((y1 - margin * h) * S))
                xb, yb = min(S, int(np.ceil((x2 + margin * w) * S))), min(S, int(np.ceil((y2 + margin * h) * S)))
                if xb - xa < 2 or yb - ya < 2:
                    continue
                crops.append(cv2.resize(data.frames[v, j, ya:yb, xa:xb], (size, size), interpolation=cv2.INTER_AREA))
                labels.append(classes.index(o["category"]))
    return np.stack(crops), np.array(labels)


def handobj_frames(data: _Decoded, stride: int = 1) -> tuple[np.ndarray, list[dict]]:
    """Every ``stride``-th teacher frame with its ground-truth hand and object boxes (normalised xyxy)."""
    from pipeline.io.signals_schema import HAND, OBJECT

    targets = []
    for v, gt in enumerate(data.gt):
        for t in data.times[v][::stride]:
            f = _gt_frame(gt, float(t))
            boxes = [h["box"] for h in f["hands"]] + [o["box"] for o in f["objects"]]
            targets.append({
                "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                "kinds": np.asarray([HAND] * len(f["hands"]) + [OBJECT] * len(f["objects"]), np.int64),
                "contact": np.asarray([h["contact"] for h in f["hands"]] + [0] * len(f["objects"]), np.int64),
            })
    return data.frames[:, ::stride].reshape(-1, *data.frames.shape[2:]), targets


def ego_videos(table, video_root: str) -> list:
    """The manifest's videos as :class:`teachers.ego_train.EgoVideo` (ego flag from the ``egocentric``
    column or the ``EGO`` id suffix); a missing video is an error naming it."""
    from data_manifests.formats import clip_frame_rate, resolve_videos
    from pipeline.io.video import VideoReadError, probe
    from teachers.ego_train import EgoVideo

    clips = list(table)
    videos = []
    for clip, path in zip(clips, resolve_videos(table, clips, video_root)):
        if path is None:
            raise PipelineError(f"video of {clip.clip_id} not found under {video_root}")
        rate = clip_frame_rate(table, clip, path)
        end = clip.end
        if end is None:
            try:
                end = probe(path, frame_rate=rate).duration
            except VideoReadError as e:
                raise PipelineError(str(e)) from None
        videos.append(EgoVideo(str(path), clip.start, float(end or clip.start + 1.0),
                               int(bool(clip.extras.get("ego", clip.clip_id.endswith("EGO")))), rate))
    return videos


def split_pairs(table, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Rows for training and for validation; an ego video and its third-person pair (``pair``,
    else the id without its ``EGO`` suffix) always fall on the same side."""
    keys = [c.extras.get("pair") or c.clip_id.removesuffix("EGO") for c in table]
    pairs = sorted(set(keys))
    n_val = int(round(fraction * len(pairs)))
    if fraction > 0 and len(pairs) > 1:
        n_val = min(max(n_val, 1), len(pairs) - 1)
    held = set(np.random.default_rng(seed).permutation(pairs)[:n_val].tolist())
    return [i for i, k in enumerate(keys) if k not in held], [i for i, k in enumerate(keys) if k in held]


# ---------------------------------------------------------------- one trainer per teacher kind

@dataclass
class TrainedTeacher:
    """A trainer's result: what :func:`teachers.base.save_teacher` writes, and the held-out metrics."""

    model: Any
    arch: str
    arch_kwargs: dict
    meta: dict
    metrics: dict


class TrainJob:
    """What every trainer reads: the config, the manifests, the device, and (for the teachers trained
    on ground truth) the videos' frames with their annotations, decoded once when first asked for."""

    def __init__(self, cfg: TrainTeachersConfig, train_table, test_table, device: str):
        self.cfg, self.train_table, self.test_table, self.device = cfg, train_table, test_table, device
        self.source = {"manifest": str(cfg.manifest), "sha256": train_table.source_sha256, "videos": len(train_table)}

    @functools.cached_property
    def annotated(self) -> tuple[_Decoded, _Decoded | None]:
        """(train, test or None) frames at the demo teachers' rate, at the largest of their sizes."""
        from teachers import handobj, objects

        fps = objects.DEFAULT_SPEC.frame_rate
        size = max(m.DEFAULT_SPEC.size for m in (objects, handobj))
        cfg = self.cfg
        train = _decode(self.train_table, cfg.video_root, cfg.ground_truth, fps, size, "decode train videos")
        test = (_decode(self.test_table, cfg.video_root, cfg.ground_truth, fps, size, "decode test videos")
                if self.test_table is not None else None)
        return train, test


@dataclass(frozen=True)
class Trainer:
    train: Callable[[TrainJob, Any, Progress | None], TrainedTeacher]  # (job, the kind's settings section, progress)
    needs_ground_truth: bool


# teacher kind (= its settings section of TrainTeachersConfig and its weights file name) -> trainer
TRAINERS: dict[str, Trainer] = {}


def register_trainer(kind: str, *, needs_ground_truth: bool = False):
    """Decorator: train teachers of ``kind`` with this function (``pipeline run train-teachers``)."""

    def register(fn):
        if kind in TRAINERS:
            raise ValueError(f"a trainer for teacher kind {kind!r} is already registered")
        TRAINERS[kind] = Trainer(fn, needs_ground_truth)
        return fn

    return register


@register_trainer("ego")
def train_ego_teacher(job: TrainJob, s: EgoFitSettings, progress_cb: Progress | None = None) -> TrainedTeacher:
    """Build, initialise and train the ego/exo classifier of ``cfg.ego`` on the manifest's videos."""
    import torch

    from teachers import ego as ego_mod
    from teachers.ego_train import EgoTrainSettings, EgoWindows, evaluate_windows, train_ego

    cfg, train_table, test_table = job.cfg, job.train_table, job.test_table
    spec = dataclasses.replace(ego_mod.default_spec(s.arch), **{k: getattr(s, k) for k in ("frame_rate", "size", "num_frames")
                                                                 if getattr(s, k) is not None})
    videos = ego_videos(train_table, cfg.video_root)
    train_rows, val_rows = split_pairs(train_table, s.val_fraction, cfg.seed)
    train = EgoWindows([videos[i] for i in train_rows], spec, preload=s.preload)
    val = EgoWindows([videos[i] for i in val_rows], spec, preload=s.preload) if val_rows else None
    arch_kwargs = dict(s.arch_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ego_mod.build(s.arch, **arch_kwargs)
    init = None
    if s.init:
        from data_manifests.table import file_sha256
        from student.checkpoints import load_weights

        report = load_weights(model, s.init)  # CheckpointError (a PipelineError) names what does not fit
        init = {"path": str(Path(s.init).resolve()), "sha256": file_sha256(s.init), "loaded": report.summary(),
                "skipped": report.mismatched}
        print(f"train-teachers: ego backbone from {s.init}: {report.summary()}")
    model.to(job.device)
    settings = EgoTrainSettings(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, windows_per_video=s.windows_per_video,
                                workers=s.workers, precision=s.precision, seed=cfg.seed)
    result = train_ego(model, train, val, settings, progress=progress_cb)
    metrics = {}
    if test_table is not None:
        test = EgoWindows(ego_videos(test_table, cfg.video_root), spec, preload=s.preload)
        labels = test.labels[[i for i, _ in test.eval_keys()]]
        metrics = {"accuracy": evaluate_windows(model, test, batch_size=s.batch_size, workers=s.workers,
                                                precision=s.precision),
                   "chance": float(np.bincount(labels).max() / len(labels))}
    train_info = {"arch": s.arch, "init": init, "epochs": result.history, "best_epoch": result.best_epoch,
                  "best_val_accuracy": result.best_val_accuracy, "train_videos": len(train), "val_videos": len(val_rows),
                  "settings": dataclasses.asdict(settings)}
    meta = ego_mod.make_meta(spec, train_metrics=metrics, source=job.source, train=train_info)
    return TrainedTeacher(model, s.arch, arch_kwargs, meta, metrics)


@register_trainer("object", needs_ground_truth=True)
def train_object_teacher(job: TrainJob, s: FitSettings, progress_cb: Progress | None = None) -> TrainedTeacher:
    """The demo's narrow ResNet on object-centric crops of the ground-truth boxes."""
    from teachers import objects, objects_train

    train, test = job.annotated
    spec = objects.DEFAULT_SPEC
    gts = train.gt + (test.gt if test else [])
    classes = sorted({o["category"] for g in gts for f in g["frames"] for o in f["objects"]})
    x, y = object_crops(train, classes, spec.size, s.frame_stride)
    arch_kwargs = {"num_classes": len(classes)}
    model = objects.build(**arch_kwargs).to(job.device)
    objects_train.fit(model, x, y, spec=spec, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=job.cfg.seed,
                      progress=progress_cb)
    m = objects_train.evaluate(model, *object_crops(test, classes, spec.size), spec=spec) if test else {}
    meta = objects.make_meta(classes, spec, train_metrics=m, source=job.source)
    return TrainedTeacher(model, objects.DEFAULT_ARCH, arch_kwargs, meta, m)


@register_trainer("handobj", needs_ground_truth=True)
def train_handobj_teacher(job: TrainJob, s: FitSettings, progress_cb: Progress | None = None) -> TrainedTeacher:
    """The demo's small hand-object detector on the ground-truth hand and object boxes."""
    from teachers import handobj, handobj_train

    train, test = job.annotated
    spec = handobj.DEFAULT_SPEC
    x, targets = handobj_frames(train, s.frame_stride)
    model = handobj.build().to(job.device)
    handobj_train.fit(model, x, targets, spec=spec, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                      seed=job.cfg.seed, progress=progress_cb)
    m = handobj_train.evaluate(model, *handobj_frames(test), spec=spec) if test else {}
    meta = handobj.make_meta(spec, train_metrics=m, source=job.source)
    return TrainedTeacher(model, handobj.DEFAULT_ARCH, {}, meta, m)


def _bar_callback(desc: str):
    bar = progress(desc=desc, unit="step", leave=False)

    def update(done: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.refresh()

    return bar, update


def _tensorboard(folder: Path):
    """A fresh TensorBoard writer for one teacher's training (a teacher retrains from the start,
    so events of an earlier, interrupted run are removed)."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(folder, ignore_errors=True)
    return SummaryWriter(folder)


def run_train_teachers(cfg: TrainTeachersConfig) -> dict:
    """Train the selected teachers; returns {"weights": {kind: path}, "metrics": {kind: held-out metrics}}.
    Each writes TensorBoard events to ``out/tb/<kind>/``: its loss per step and its held-out metrics."""
    import torch

    from teachers.base import save_teacher

    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    out = prepare_out_dir(cfg.out, cfg, "train-teachers")
    train_table = load_table(cfg.manifest, cfg.manifest_format)
    test_table = load_table(cfg.test_manifest, cfg.manifest_format) if cfg.test_manifest else None
    job = TrainJob(cfg, train_table, test_table, device)
    weights, metrics = {}, {}
    summary_path = out / "teachers.json"
    previous = json.loads(summary_path.read_text()) if summary_path.exists() else {"weights": {}, "metrics": {}}

    for kind in cfg.teachers:
        path = out / f"{kind}.pt"
        if path.exists() and kind in previous["weights"]:
            print(f"train-teachers: {path} exists; keeping it")
            weights[kind], metrics[kind] = str(path), previous["metrics"].get(kind, {})
            continue
        bar, cb = _bar_callback(f"train {kind} teacher")
        tb, steps = _tensorboard(out / "tb" / kind), [0]

        def step(done: int, total: int, loss: float) -> None:
            cb(done, total, loss)
            tb.add_scalar("train/loss", loss, done)
            steps[0] = done

        t = TRAINERS[kind].train(job, getattr(cfg, kind), step)
        bar.close()
        for name, value in t.metrics.items():
            tb.add_scalar(f"held_out/{name}", float(value), steps[0])
        tb.close()
        save_teacher(path, t.model, kind, t.arch, t.arch_kwargs, t.meta)
        weights[kind], metrics[kind] = str(path), {k: round(float(v), 4) for k, v in t.metrics.items()}
        print(f"train-teachers: {kind} -> {path}  held-out {metrics[kind]}")
        summary_path.write_text(json.dumps({"weights": {**previous["weights"], **weights},
                                            "metrics": {**previous["metrics"], **metrics}}, indent=1))
    return {"weights": weights, "metrics": metrics}
