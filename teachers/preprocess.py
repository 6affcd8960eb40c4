"""Frame preprocessing every teacher's ``predict`` shares: resizing, tensors, padding frames, batching.

Each teacher resizes and normalises frames itself (its ``InputSpec`` says how), so the
extraction stage hands over decoded frames at any size.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch

from teachers.base import InputSpec


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [..., H, W, 3] -> uint8 [..., size, size, 3], area interpolation (no-op when already that size)."""
    if frames.shape[-3:-1] == (size, size):
        return frames
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.empty((len(flat), size, size, 3), np.uint8)
    for i, frame in enumerate(flat):
        out[i] = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return out.reshape(*lead, size, size, 3)


def to_tensor(
    frames: np.ndarray | torch.Tensor, spec: InputSpec | None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """uint8 [..., S, S, 3] -> float32 [..., 3, S, S] on ``device``, in 0-1 and normalised with
    ``spec`` unless it is None. The uint8 frames move first: a quarter of the bytes of floats."""
    x = torch.as_tensor(frames).to(device).movedim(-1, -3).float().div_(255.0)
    if spec is not None:
        shape = (3, 1, 1)
        x = (x - x.new_tensor(spec.mean).view(shape)) / x.new_tensor(spec.std).view(shape)
    return x


def last_valid_index(valid: np.ndarray) -> np.ndarray:
    """For each position of bool [B, F], the index of the latest valid frame at or before it
    (the first valid one for leading gaps; 0 when a row has none)."""
    idx = np.where(valid, np.arange(valid.shape[1]), -1)
    filled = np.maximum.accumulate(idx, axis=1)
    first = np.where(valid.any(1), valid.argmax(1), 0)
    return np.where(filled < 0, first[:, None], filled)


def run_batched(fn: Callable[[np.ndarray], np.ndarray], items: np.ndarray, max_batch: int) -> list[np.ndarray]:
    """Apply ``fn`` to consecutive chunks of at most ``max_batch`` items."""
    return [fn(items[i : i + max_batch]) for i in range(0, len(items), max_batch)]
