"""Clip dataset for the student: decoded frames plus the teacher targets aligned to them.

Each item samples a window of ``num_frames`` frames at ``fps`` from a clip, crops
and flips it, and builds the distillation targets from the signals store for exactly
that window and crop: the mean ego/object teacher logits of the teacher frames
inside the window, and interaction maps whose boxes went through the same crop/flip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.io.video import read_frames

KINETICS_MEAN = (0.45, 0.45, 0.45)  # PySlowFast's DATA.MEAN / DATA.STD
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class ClipRef:
    """What the dataset needs of one manifest row."""

    path: str
    start: float
    end: float | None
    labels: tuple[int, ...]
    row: int  # row in the signals store (= manifest row)
    frame_rate: float | None = None  # only for a folder of extracted frames (EPIC rgb_frames)


def window_times(frame_time: np.ndarray, num_windows: int) -> np.ndarray:
    """Mean time of each window of consecutive teacher frames (NaN for a window of padding only)."""
    per = int(np.ceil(len(frame_time) / num_windows))
    t = np.full(num_windows * per, np.nan)
    t[: len(frame_time)] = frame_time
    t = t.reshape(num_windows, per)
    valid = np.isfinite(t)
    total = np.where(valid, t, 0.0).sum(axis=1)
    count = valid.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class ClipDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        clips: list[ClipRef],
        num_classes: int,
        multilabel: bool = False,
        num_frames: int = 8,
        fps: float = 4.0,
        short_side: int = 80,
        crop: int = 64,
        train: bool = True,
        views: int = 1,
        store_path: str | None = None,
        map_grid: tuple[int, int, int] | None = None,  # (T', H', W') of the student's map output
        mean: tuple[float, ...] = KINETICS_MEAN,
        std: tuple[float, ...] = KINETICS_STD,
        seed: int = 0,
    ):
        self.clips = clips
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.num_frames, self.fps = num_frames, fps
        self.short_side, self.crop = short_side, crop
        self.train, self.views = train, (1 if train else views)
        self.store_path, self.map_grid = store_path, map_grid
        self.mean = np.asarray(mean, dtype=np.float32) * 255
        self.std = np.asarray(std, dtype=np.float32) * 255
        self.seed = seed
        self.epoch = 0
        self._store = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return len(self.clips) * self.views

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, index))

    def window(self, clip: ClipRef, view: int, rng: np.random.Generator) -> np.ndarray:
        """Sample times of one clip window: random in training, evenly spaced views in testing."""
        span = self.num_frames / self.fps
        end = clip.end if clip.end is not None else clip.start + span
        slack = max(0.0, (end - clip.start) - span)
        if self.train:
            t0 = clip.start + rng.uniform(0, slack)
        else:
            t0 = clip.start + slack * ((view + 0.5) / self.views if self.views > 1 else 0.5)
        return t0 + np.arange(self.num_frames) / self.fps

    def __getitem__(self, index: int) -> dict:
        ci, view = divmod(index, self.views)
        clip = self.clips[ci]
        rng = self._rng(index)
        times = self.window(clip, view, rng)
        got = read_frames(clip.path, times, short_side=self.short_side, frame_rate=clip.frame_rate)
        frames = got.frames
        h, w = frames.shape[1:3]
        if self.train:
            y0, x0 = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
            flip = bool(rng.random() < 0.5)
        else:
            y0, x0 = (h - self.crop) // 2, (w - self.crop) // 2
            flip = False
        frames = frames[:, y0 : y0 + self.crop, x0 : x0 + self.crop]
        if flip:
            frames = frames[:, :, ::-1]
        video = (frames.astype(np.float32) - self.mean) / self.std
        item = {
            "video": torch.from_numpy(np.ascontiguousarray(video.transpose(3, 0, 1, 2))),
            "label": self._label(clip),
            "index": ci,
        }
        if self.store_path is not None:
            crop_box = (x0 / w, y0 / h, (x0 + self.crop) / w, (y0 + self.crop) / h)
            item.update(self._targets(clip.row, times, crop_box, flip))
        return item

    def _label(self, clip: ClipRef):
        if self.multilabel:
            y = torch.zeros(self.num_classes)
            y[list(clip.labels)] = 1.0
            return y
        return torch.tensor(clip.labels[0] if clip.labels else -1, dtype=torch.long)

    def _targets(self, row: int, times: np.ndarray, crop_box, flip: bool) -> dict:
        from pipeline.io.store import open_store
        from student.targets import interaction_map_targets, soft_logits_for_window

        if self._store is None:
            self._store = open_store(self.store_path)
        sig = self._store.read_row(row)
        ft = sig["frame_time"]
        t0, t1 = float(times[0]), float(times[-1]) + 1.0 / self.fps
        out = {}
        if "ego/logits" in sig:
            ego = sig["ego/logits"]
            out["ego"] = torch.from_numpy(soft_logits_for_window(ego, window_times(ft, ego.shape[0]), t0, t1))
        if "object/logits" in sig:
            out["object"] = torch.from_numpy(soft_logits_for_window(sig["object/logits"], ft, t0, t1))
        if "handobj/boxes" in sig and self.map_grid is not None:
            tp, gh, gw = self.map_grid
            step = max(1, len(times) // tp)
            maps = interaction_map_targets(sig["handobj/boxes"], ft, times[::step][:tp], crop_box, flip, (gh, gw))
            out["interaction_map"] = torch.from_numpy(maps.astype(np.float32))
        return out
