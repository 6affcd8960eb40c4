"""Training the Ego-Score teacher: ego (first-person) vs exo (third-person) windows of video.

One loop for every size, from the demo's 64 px VideoResNet to a Slow R50 started from a
Kinetics checkpoint (the caller loads that; see ``pipeline.stages.train_teachers``):

    train = EgoWindows(videos, spec, preload=True)     # windows of spec.num_frames frames
    result = train_ego(model, train, val, settings, device="cuda")
    result.history                                      # per epoch: loss, samples per class, val accuracy

* Sampling is balanced: every epoch draws each class equally often (the smaller class is
  cycled), ``windows_per_video`` random windows per video of the larger class.
* Validation accuracy (every non-overlapping window of each held-out video) is measured
  after each epoch; the best epoch's weights are the ones returned (the first best on ties).
* On a GPU the forward pass runs in bf16 autocast (no loss scaling needed, unlike fp16).

Windows are decoded the way stage 1 decodes clips for the teachers: frames at
``spec.frame_rate``, resized to ``spec.size`` squares. ``preload`` decodes every video
once into memory (small sets: the demo); otherwise each window is decoded when drawn,
in ``workers`` DataLoader processes.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from teachers.base import InputSpec
from teachers.ego import CLASSES, DEFAULT_SPEC
from teachers.preprocess import resize_frames, to_tensor
from teachers.training import Progress, evaluate_classifier, fit_classifier, flip_and_shift, make_optimizer


@dataclass(frozen=True)
class EgoVideo:
    """One video of the ego/exo set: file, the span to use (seconds), 1 = first-person."""

    path: str
    start: float
    end: float
    ego: int
    frame_rate: float | None = None  # a folder of frames only


@dataclass
class EgoTrainSettings:
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-3
    windows_per_video: int = 4  # training windows drawn per video (of the larger class) per epoch
    workers: int = 0  # DataLoader processes decoding windows (preload=False)
    precision: str = "bf16"  # bf16 | fp32; bf16 autocast applies on a GPU only
    seed: int = 0


@dataclass
class EgoTrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    best_epoch: int = -1  # 0-based; -1 without validation (the last epoch is kept)
    best_val_accuracy: float | None = None


class EgoWindows(torch.utils.data.Dataset):
    """``dataset[(video, t0)]`` -> (uint8 window [T, S, S, 3] from ``t0`` at the spec's frame rate, label).

    Frames past a video's end repeat its last frame, as the teacher pads at extraction.
    """

    def __init__(self, videos: list[EgoVideo], spec: InputSpec, preload: bool = False):
        self.videos, self.spec = list(videos), spec
        self.labels = np.array([v.ego for v in self.videos], dtype=np.int64)
        self._frames = [self._decode(v, v.start, v.end) for v in self.videos] if preload else None

    @property
    def span(self) -> float:
        """Seconds one window covers."""
        return self.spec.num_frames / self.spec.frame_rate

    def _decode(self, video: EgoVideo, t0: float, t1: float) -> np.ndarray:
        from pipeline.io.video import read_frames, sample_times

        times = sample_times(t0, max(t1, t0 + 1e-3), self.spec.frame_rate)
        got = read_frames(video.path, times, size=(self.spec.size, self.spec.size), frame_rate=video.frame_rate)
        return got.frames

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: tuple[int, float]) -> tuple[np.ndarray, int]:
        i, t0 = key
        video, t = self.videos[i], self.spec.num_frames
        if self._frames is not None:
            first = int(round((t0 - video.start) * self.spec.frame_rate))
            frames = self._frames[i][first : first + t]
        else:
            frames = self._decode(video, t0, min(video.end, t0 + self.span))
        if len(frames) < t:  # the video ends inside the window
            frames = np.concatenate([frames, np.repeat(frames[-1:], t - len(frames), axis=0)])
        return np.ascontiguousarray(frames[:t]), int(video.ego)

    def random_start(self, i: int, rng: np.random.Generator) -> float:
        """A window start drawn uniformly where the whole window fits (the video's start when none does),
        on the frame grid so preloaded and decoded windows agree."""
        v = self.videos[i]
        slots = int(math.floor((v.end - v.start - self.span) * self.spec.frame_rate + 1e-6))
        return v.start + (int(rng.integers(0, slots + 1)) if slots > 0 else 0) / self.spec.frame_rate

    def eval_keys(self) -> list[tuple[int, float]]:
        """Every non-overlapping window of every video (at least one per video)."""
        keys = []
        for i, v in enumerate(self.videos):
            n = max(1, int(math.floor((v.end - v.start) / self.span + 1e-6)))
            keys += [(i, v.start + k * self.span) for k in range(n)]
        return keys


def balanced_keys(data: EgoWindows, rng: np.random.Generator, windows_per_video: int) -> list[tuple[int, float]]:
    """One epoch of (video, window start) draws: each class ``windows_per_video`` x the larger class's
    video count times, every video of a class used as evenly as the count allows, in random order."""
    by_class = [np.flatnonzero(data.labels == c) for c in range(len(CLASSES))]
    if any(len(ix) == 0 for ix in by_class):
        missing = [CLASSES[c] for c, ix in enumerate(by_class) if len(ix) == 0]
        raise ValueError(f"the ego/exo training set has no {' or '.join(missing)} videos")
    per_class = windows_per_video * max(len(ix) for ix in by_class)
    draws = []
    for ix in by_class:
        cycles = [rng.permutation(ix) for _ in range(math.ceil(per_class / len(ix)))]
        draws.append(np.concatenate(cycles)[:per_class])
    order = rng.permutation(np.concatenate(draws))
    return [(int(i), data.random_start(int(i), rng)) for i in order]


def _collate(items: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([x for x, _ in items]), np.array([y for _, y in items], dtype=np.int64)


def _batches(data: EgoWindows, keys: list, batch_size: int, workers: int):
    return torch.utils.data.DataLoader(data, batch_size=batch_size, sampler=keys, num_workers=workers,
                                       collate_fn=_collate, persistent_workers=False)


def _clip_batch(clips: np.ndarray, spec: InputSpec, device: torch.device) -> torch.Tensor:
    """uint8 [N, T, S, S, 3] -> normalised float [N, 3, T, S, S] on ``device``."""
    return to_tensor(clips, spec, device).transpose(1, 2)


def evaluate_windows(model: nn.Module, data: EgoWindows, *, batch_size: int = 16, workers: int = 0,
                     precision: str = "fp32") -> float:
    """Top-1 accuracy over :meth:`EgoWindows.eval_keys` of ``data``."""
    device = next(model.parameters()).device
    model.eval()
    correct = total = 0
    with torch.inference_mode(), _autocast(device, precision):
        for clips, labels in _batches(data, data.eval_keys(), batch_size, workers):
            preds = model(_clip_batch(clips, data.spec, device)).argmax(1).cpu().numpy()
            correct += int((preds == labels).sum())
            total += len(labels)
    return correct / max(total, 1)


def _autocast(device: torch.device, precision: str):
    enabled = device.type == "cuda" and precision == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def train_ego(
    model: nn.Module,
    train: EgoWindows,
    val: EgoWindows | None,
    settings: EgoTrainSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> EgoTrainResult:
    """Train ``model`` (on its device) on ``train``; keep the weights of the epoch with the best
    validation accuracy (the last epoch's without ``val``). The model ends in eval mode."""
    s, spec = settings, train.spec
    if s.precision not in ("bf16", "fp32"):
        raise ValueError(f"ego training precision must be bf16 or fp32, got {s.precision!r}")
    device = next(model.parameters()).device
    torch.manual_seed(s.seed)
    generator = torch.Generator().manual_seed(s.seed)
    steps_per_epoch = math.ceil(len(CLASSES) * s.windows_per_video * max(np.bincount(train.labels, minlength=2))
                                / s.batch_size)
    total = s.epochs * steps_per_epoch
    optimizer, schedule = make_optimizer(model, s.lr, total)
    result, best_state, done = EgoTrainResult(), None, 0
    for epoch in range(s.epochs):
        keys = balanced_keys(train, np.random.default_rng((s.seed, epoch)), s.windows_per_video)
        drawn = np.bincount(train.labels[[i for i, _ in keys]], minlength=len(CLASSES))
        model.train()
        losses = []
        for clips, labels in _batches(train, keys, s.batch_size, s.workers):
            # uint8 frames move to the device first (a quarter of the bytes); augmentation runs there
            x = flip_and_shift(_clip_batch(clips, spec, device), generator, spec.size // 32)
            with _autocast(device, s.precision):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), torch.as_tensor(labels, device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if done < total:  # OneCycleLR refuses steps past its total
                schedule.step()
            losses.append(loss.item())
            done += 1
            if progress is not None:
                progress(done, total, losses[-1])
        entry = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                 "samples": {name: int(n) for name, n in zip(CLASSES, drawn)}}
        if val is not None:
            entry["val_accuracy"] = evaluate_windows(model, val, batch_size=s.batch_size, workers=s.workers,
                                                     precision=s.precision)
            if result.best_val_accuracy is None or entry["val_accuracy"] > result.best_val_accuracy:
                result.best_epoch, result.best_val_accuracy = epoch, entry["val_accuracy"]
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        result.history.append(entry)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


# ---------------------------------------------------------------- clips in memory (tests, benchmarks)


def _clips_to_input(clips: np.ndarray, spec: InputSpec) -> np.ndarray:
    return resize_frames(np.asarray(clips, dtype=np.uint8), spec.size)


def fit(
    model: nn.Module,
    clips: np.ndarray,
    labels: np.ndarray,
    *,
    spec: InputSpec = DEFAULT_SPEC,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[float]:
    """Train on uint8 clips [N, T, H, W, 3] (T = spec.num_frames) with labels [N] (0 exo, 1 ego).

    Light augmentation: horizontal flip and a shift of up to 1/32 of the side.
    Returns the mean training loss of each epoch.
    """
    inputs = _clips_to_input(clips, spec)
    return fit_classifier(
        model, inputs, labels, spec, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        max_shift=spec.size // 32, progress=progress,
    )


def evaluate(model: nn.Module, clips: np.ndarray, labels: np.ndarray, *, spec: InputSpec = DEFAULT_SPEC) -> dict[str, float]:
    """{"accuracy": top-1 on clips [N,T,H,W,3], "chance": majority-class rate of ``labels``}."""
    return evaluate_classifier(model, _clips_to_input(clips, spec), labels, spec)
