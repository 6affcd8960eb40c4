"""Clip dataset for the student: decoded frames plus the teacher targets aligned to them.

Sampling follows PySlowFast, the release's data pipeline: ``num_frames`` frames every
``sampling_rate`` frames of a ``target_fps`` video from a random start (training) or from
evenly spaced starts (testing); in training the short side is resized to a random size in
``train_jitter_scales`` and a random ``crop`` square is cut and maybe flipped; in testing
the short side is resized to ``test_short_side`` and 1 or 3 squares of that size are cut
along the long side. The distillation targets are built for exactly that window and crop:
the mean ego/object teacher logits of the teacher frames inside the window, and
interaction maps whose boxes went through the same crop and flip, one per time step of
the Slow pathway.

Each training item's randomness is drawn from ``(seed, epoch, index)``. The epoch travels
with the index from :class:`EpochSampler`, which runs in the main process, so persistent
DataLoader workers see every epoch (a ``set_epoch`` on the dataset would reach only the
main process's copy) and the same seed replays the same windows, crops and flips.
"""
from __future__ import annotations

import math
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
    # Charades-Ego: (class, start s, end s) of each action; a training window's labels are
    # the classes whose intervals overlap it. None: ``labels`` hold for every window.
    actions: tuple[tuple[int, float, float], ...] | None = None
    noun: int | None = None  # EPIC-100 noun class (``labels`` hold the verb)


@dataclass(frozen=True)
class Sampling:
    """Clip geometry: how many frames, how far apart, and the spatial sizes.

    A clip covers ``num_frames * sampling_rate`` frames of a ``target_fps`` video. ``spacing``
    says where in it the frames fall, as the release's two loaders place them: ``linspace``
    (PySlowFast's video decoder, Kinetics: ``linspace(0, clip - 1, num_frames)``, so 8x8 takes
    frames 0, 9, ..., 63) or ``stride`` (its frame-list loaders, Charades-Ego and EPIC: every
    ``sampling_rate``-th frame, 0, 8, ..., 56).
    """

    num_frames: int
    sampling_rate: float
    target_fps: float
    train_jitter_scales: tuple[int, int]  # short side drawn uniformly in [lo, hi] for training
    crop: int  # training crop
    test_short_side: int  # testing: short side and crop size
    slow_indices: tuple[int, ...]  # frames whose times the Slow pathway (and its maps) sees
    spacing: str = "linspace"

    @classmethod
    def from_config(cls, num_frames: int, sampling_rate: float, target_fps: float, train_jitter_scales,
                    crop: int, test_short_side: int, alpha: int = 1, spacing: str = "linspace") -> "Sampling":
        from student.backbones import slow_frame_indices

        lo, hi = (int(v) for v in train_jitter_scales)
        slow = slow_frame_indices(num_frames, alpha).tolist() if alpha > 1 else list(range(num_frames))
        return cls(int(num_frames), float(sampling_rate), float(target_fps), (lo, hi), int(crop),
                   int(test_short_side), tuple(slow), spacing)

    @classmethod
    def from_dict(cls, d: dict) -> "Sampling":
        """Back from a checkpoint's ``sampling`` entry (lists become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def span(self) -> float:
        """Seconds the clip covers: ``num_frames * sampling_rate`` frames of the target rate."""
        return self.num_frames * self.sampling_rate / self.target_fps

    @property
    def frame_step(self) -> float:
        """Seconds between sampled frames."""
        if self.spacing == "stride" or self.num_frames == 1:
            return self.sampling_rate / self.target_fps
        return (self.num_frames * self.sampling_rate - 1) / (self.num_frames - 1) / self.target_fps


def window_times(frame_time: np.ndarray, frames_per_window: int) -> np.ndarray:
    """Mean time of each window of ``frames_per_window`` consecutive teacher frames, the ego
    teacher's grouping (NaN for a window of padding only); the last window may be short."""
    n = len(frame_time)
    windows = math.ceil(n / frames_per_window)
    t = np.full(windows * frames_per_window, np.nan)
    t[:n] = frame_time
    t = t.reshape(windows, frames_per_window)
    valid = np.isfinite(t)
    total = np.where(valid, t, 0.0).sum(axis=1)
    count = valid.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def window_labels(actions, t0: float, t1: float) -> tuple[int, ...]:
    """Classes of the actions whose [start, end] interval overlaps [t0, t1] (the release's
    union of the per-frame labels over the sampled span)."""
    return tuple(sorted({c for c, s, e in actions if s <= t1 and e >= t0}))


def _crop_offsets(size: int, crop: int, position: int, positions: int) -> int:
    """PySlowFast ``uniform_crop``: 0, ceil((size - crop) / 2), size - crop for 3 crops."""
    if positions == 1 or position == 1:
        return int(math.ceil((size - crop) / 2))
    return 0 if position == 0 else size - crop


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` for every item, shuffled by ``(seed, epoch)``.

    Runs in the main process, so the epoch reaches the DataLoader workers with each index.
    Under DDP (``world`` processes) each global batch of ``batch_size`` items in that order is
    split into ``world`` consecutive parts and process ``rank`` takes its part, so the
    processes together train on exactly the batches one process would (the last incomplete
    global batch is dropped).
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1,
                 batch_size: int = 1):
        if world > 1 and batch_size % world:
            raise ValueError(f"the global batch {batch_size} does not split over {world} processes")
        self.num_items, self.seed, self.shuffle = num_items, seed, shuffle
        self.rank, self.world, self.batch_size = rank, world, batch_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw ``epoch``'s order, beginning at its ``start``-th item (a run resumed mid-epoch
        skips the items its checkpoint's steps already trained on; under DDP, counted in
        global items)."""
        self.epoch, self.start = epoch, start

    def _order(self) -> np.ndarray:
        order = (np.random.default_rng((self.seed, self.epoch)).permutation(self.num_items)
                 if self.shuffle else np.arange(self.num_items))
        if self.world == 1:
            return order[self.start:]
        steps = self.num_items // self.batch_size
        part = self.batch_size // self.world
        mine = order[: steps * self.batch_size].reshape(steps, self.world, part)[:, self.rank]
        return mine.reshape(-1)[self.start // self.world:]

    def __iter__(self):
        return iter([(self.epoch, int(i)) for i in self._order()])

    def __len__(self) -> int:
        if self.world == 1:
            return self.num_items - self.start
        return (self.num_items // self.batch_size) * (self.batch_size // self.world) - self.start // self.world


class ClipDataset(torch.utils.data.Dataset):
    """Items are dicts: ``video`` [3,T,H,W] normalised, ``label`` (class index, or multi-hot when
    ``multilabel``), ``noun`` (EPIC), ``index`` (clip), ``sample`` [t0, short side, y0, x0, flip]
    and, with a store, ``ego``, ``object``, ``interaction_map`` [2,T',H',W'] and
    ``interaction_map_valid`` [T'] (False where the frame lay past the video's end).

    Index with ``(epoch, i)`` (what :class:`EpochSampler` yields) or a plain ``i`` (epoch 0).
    In testing ``i`` runs over clips x ``temporal_views`` x ``spatial_crops``.
    """

    def __init__(
        self,
        clips: list[ClipRef],
        num_classes: int,
        sampling: Sampling,
        multilabel: bool = False,
        train: bool = True,
        temporal_views: int = 1,
        spatial_crops: int = 1,
        store_path: str | None = None,
        map_grid: tuple[int, int] | None = None,  # (H', W') of the student's map output
        mean: tuple[float, ...] = KINETICS_MEAN,
        std: tuple[float, ...] = KINETICS_STD,
        seed: int = 0,
        frame_cache: str | None = None,  # an HDF5 frame cache (pipeline data cache-frames); clips it lacks are decoded
    ):
        self.clips = clips
        self.num_classes = num_classes
        self.sampling = sampling
        self.multilabel = multilabel
        self.train = train
        self.temporal_views = 1 if train else temporal_views
        self.spatial_crops = 1 if train else spatial_crops
        self.store_path, self.map_grid = store_path, map_grid
        self.mean = np.asarray(mean, dtype=np.float32) * 255
        self.std = np.asarray(std, dtype=np.float32) * 255
        self.seed = seed
        self._store = None  # opened lazily, once per worker process
        self._read_row = None
        self.frame_cache = None
        if frame_cache is not None:
            from pipeline.io.frame_cache import FrameCache

            self.frame_cache = FrameCache(frame_cache)
        self._ego_window = None

    def __getstate__(self) -> dict:
        # Each worker process opens the store itself (a zarr handle is not meant to be shared).
        return {**self.__dict__, "_store": None, "_read_row": None}

    @property
    def views(self) -> int:
        return self.temporal_views * self.spatial_crops

    def __len__(self) -> int:
        return len(self.clips) * self.views

    def window(self, clip: ClipRef, temporal_view: int, rng: np.random.Generator | None) -> np.ndarray:
        """Sample times of one clip window, as PySlowFast places it: a random start in training
        (a clip shorter than the window starts up to its shortfall before the clip, as the
        release's frame loaders do); in testing view k of N starts at k/(N-1) of the slack (the
        first and last views touch the clip's ends, as the release tests Charades-Ego and EPIC),
        one view at the centre. Times are clamped into the clip, so a short clip repeats its
        first or last frame instead of showing the next action's."""
        s = self.sampling
        end = clip.end if clip.end is not None else clip.start + s.span
        slack = (end - clip.start) - s.span
        if rng is not None:
            t0 = clip.start + (rng.uniform(0, slack) if slack > 0 else rng.uniform(slack, 0))
        elif slack <= 0:
            t0 = clip.start
        elif self.temporal_views > 1:
            t0 = clip.start + slack * temporal_view / (self.temporal_views - 1)
        else:
            t0 = clip.start + slack / 2
        times = t0 + np.arange(s.num_frames) * s.frame_step
        # The last frame shown before ``end`` (a frame starting at ``end`` belongs to what follows).
        return np.clip(times, clip.start, max(clip.start, end - 1e-3))

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        ci, view = divmod(index, self.views)
        temporal_view, spatial = divmod(view, self.spatial_crops)
        clip = self.clips[ci]
        rng = np.random.default_rng((self.seed, epoch, index)) if self.train else None
        times = self.window(clip, temporal_view, rng)
        s = self.sampling
        if rng is not None:
            short_side = int(round(rng.uniform(*s.train_jitter_scales)))
            crop = s.crop
        else:
            short_side = crop = s.test_short_side
        got = self.frame_cache.read(clip.path, clip.start, clip.end, times, short_side) if self.frame_cache is not None else None
        if got is None:
            got = read_frames(clip.path, times, short_side=short_side, frame_rate=clip.frame_rate)
        h, w = got.frames.shape[1:3]
        crop = min(crop, h, w)
        if rng is not None:  # PySlowFast random_crop: randint(0, size - crop), 0 when they are equal
            y0 = int(rng.integers(0, h - crop)) if h > crop else 0
            x0 = int(rng.integers(0, w - crop)) if w > crop else 0
            flip = bool(rng.random() < 0.5)
        else:
            y0 = _crop_offsets(h, crop, spatial, self.spatial_crops) if h > w else _crop_offsets(h, crop, 1, 1)
            x0 = _crop_offsets(w, crop, spatial, self.spatial_crops) if w >= h else _crop_offsets(w, crop, 1, 1)
            flip = False
        frames = got.frames[:, y0 : y0 + crop, x0 : x0 + crop]
        if flip:
            frames = frames[:, :, ::-1]
        video = (frames.astype(np.float32) - self.mean) / self.std
        valid = np.asarray(got.valid, dtype=bool)
        item = {
            "video": torch.from_numpy(np.ascontiguousarray(video.transpose(3, 0, 1, 2))),
            "label": self._label(clip, times[valid] if valid.any() else times[:1]),
            "index": ci,
            "sample": torch.tensor([times[0], short_side, y0, x0, float(flip)], dtype=torch.float64),
        }
        if clip.noun is not None:
            item["noun"] = torch.tensor(clip.noun, dtype=torch.long)
        if self.store_path is not None:
            crop_box = (x0 / w, y0 / h, (x0 + crop) / w, (y0 + crop) / h)
            item.update(self._targets(clip.row, times, valid, crop_box, flip))
        return item

    def _label(self, clip: ClipRef, times: np.ndarray | None = None):
        if self.multilabel:
            labels = clip.labels
            if self.train and clip.actions is not None and times is not None:
                labels = window_labels(clip.actions, float(times[0]), float(times[-1]))
            y = torch.zeros(self.num_classes)
            y[list(labels)] = 1.0
            return y
        return torch.tensor(clip.labels[0] if clip.labels else -1, dtype=torch.long)

    def _open_store(self):
        from pipeline.io.store import open_store

        if self._store is None:
            self._store = open_store(self.store_path)
            self._read_row = self._store.row_reader()
            ego = self._store.attrs.get("teachers", {}).get("ego")
            self._ego_window = int(ego["spec"]["num_frames"]) if ego else None
        return self._store

    def _targets(self, row: int, times: np.ndarray, valid: np.ndarray, crop_box, flip: bool) -> dict:
        from student.targets import interaction_map_targets, soft_logits_for_window

        self._open_store()
        sig = self._read_row(row)
        ft = sig["frame_time"]
        # The window ends one frame step after its last frame that lies inside the video:
        # frames past the end repeat the last one and must not pull in teacher rows.
        kept = times[valid] if valid.any() else times[:1]
        t0, t1 = float(kept[0]), float(kept[-1]) + self.sampling.frame_step
        out = {}
        if "ego/logits" in sig:
            ego = sig["ego/logits"]
            out["ego"] = torch.from_numpy(soft_logits_for_window(ego, window_times(ft, self._ego_window), t0, t1))
        if "object/logits" in sig:
            out["object"] = torch.from_numpy(soft_logits_for_window(sig["object/logits"], ft, t0, t1))
        if "handobj/boxes" in sig and self.map_grid is not None:
            slow = list(self.sampling.slow_indices)
            maps = interaction_map_targets(sig["handobj/boxes"], ft, times[slow], crop_box, flip, self.map_grid)
            out["interaction_map"] = torch.from_numpy(maps.astype(np.float32))
            out["interaction_map_valid"] = torch.from_numpy(valid[slow].copy())
        return out
