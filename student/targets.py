"""Per-sample distillation targets from the signals store's per-frame teacher outputs.

Teacher signals are stored per teacher frame (``frame_time``), so a sampled clip takes the
frames inside its window and transforms boxes with the clip's own crop and flip.
"""

from __future__ import annotations

import numpy as np

from pipeline.io.signals_schema import HAND, OBJECT  # ``kind`` column of the hand-object boxes; also the map channel


def nearest_frames(frame_time: np.ndarray, sample_times: np.ndarray) -> np.ndarray:
    """Index of the valid (non-NaN) teacher frame nearest to each sample time; ties go earlier."""
    valid = np.flatnonzero(~np.isnan(frame_time))
    if valid.size == 0:
        raise ValueError("no valid teacher frame (all frame_time are NaN)")
    distance = np.abs(frame_time[valid][None, :] - np.asarray(sample_times, dtype=np.float64)[:, None])
    return valid[np.argmin(distance, axis=1)]


def interaction_map_targets(boxes: np.ndarray, frame_time: np.ndarray, sample_times: np.ndarray,
                            crop: tuple[float, float, float, float], flip: bool,
                            grid: tuple[int, int]) -> np.ndarray:
    """Soft hand / object maps [2, T', H, W] (float32) for the student's final grid.

    Args:
        boxes: [F, K, 7] per teacher frame: x1, y1, x2, y2 (normalised 0-1 in the original
            frame), score, kind (0 hand, 1 object), contact state. Rows with score 0 are padding.
        frame_time: [F] seconds of each teacher frame; NaN marks padding frames.
        sample_times: [T'] seconds of the student's output time steps; each takes the nearest
            valid teacher frame.
        crop: (x0, y0, x1, y1) normalised region of the original frame the student sees.
        flip: whether the clip was mirrored horizontally (after cropping).
        grid: (H, W) of the output map.

    As the Ego-Exo release rasterises (``gen_targets``, "soft" mode): each box is clipped to
    the crop, its corners scaled to the grid, floored and clamped to the last cell, and every
    cell from the first to the last corner cell inclusive takes the highest score among the
    boxes of that kind touching it. So any box inside the crop marks at least one cell, and a
    40 px hand on a 224 crop (32 px cells) marks up to 4. A box wholly outside the crop marks
    nothing (the release clamps it onto the border, where it would paint a strip of cells the
    object is not in). The contact column is not used. Without any valid teacher frame the
    maps are all zero.
    """
    height, width = grid
    sample_times = np.asarray(sample_times, dtype=np.float64)
    out = np.zeros((2, len(sample_times), height, width), dtype=np.float32)
    if boxes.shape[0] == 0 or np.isnan(frame_time).all():
        return out
    b = boxes[nearest_frames(frame_time, sample_times)].astype(np.float64)  # [T', K, 7]

    # Into crop coordinates, then mirror x (x1 and x2 swap roles).
    x0, y0, x1, y1 = crop
    bx1, bx2 = (b[..., 0] - x0) / (x1 - x0), (b[..., 2] - x0) / (x1 - x0)
    by1, by2 = (b[..., 1] - y0) / (y1 - y0), (b[..., 3] - y0) / (y1 - y0)
    if flip:
        bx1, bx2 = 1.0 - bx2, 1.0 - bx1
    score, kind = np.nan_to_num(b[..., 4]), b[..., 5]
    inside = (bx2 > 0) & (bx1 < 1) & (by2 > 0) & (by1 < 1) & (score > 0)

    def cell(v: np.ndarray, n: int) -> np.ndarray:
        return np.clip(np.floor(np.nan_to_num(v) * n), 0, n - 1).astype(np.int64)

    cx1, cx2, cy1, cy2 = cell(bx1, width), cell(bx2, width), cell(by1, height), cell(by2, height)
    cols, rows = np.arange(width), np.arange(height)
    touches_x = (cx1[..., None] <= cols) & (cols <= cx2[..., None])  # [T', K, W]
    touches_y = (cy1[..., None] <= rows) & (rows <= cy2[..., None])  # [T', K, H]
    touches = touches_y[..., :, None] & touches_x[..., None, :]      # [T', K, H, W]
    for channel in (HAND, OBJECT):
        s = np.where((kind == channel) & inside, score, 0.0)  # [T', K]
        out[channel] = np.where(touches, s[..., None, None], 0.0).max(axis=1, initial=0.0)
    return out


def soft_logits_for_window(logits: np.ndarray, times: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Mean teacher logits [C] (float32) of the rows whose time lies in [t0, t1).

    Half-open, so a window of ``n`` frames at ``fps`` starting at ``t0`` (``t1 = t0 + n / fps``)
    takes the teacher frames of exactly that span and not the first frame after it.

    ``logits`` is [F, C] per teacher frame (or [W, C] per window, with ``times`` their
    centres). Rows with a NaN time or NaN logits are ignored. When no row falls inside the
    window, the row nearest to its centre is used.
    """
    logits = np.asarray(logits, dtype=np.float32)
    times = np.asarray(times, dtype=np.float64)
    usable = ~np.isnan(times) & ~np.isnan(logits).any(axis=1)
    if not usable.any():
        raise ValueError("no usable teacher rows (all times or logits are NaN)")
    inside = usable & (times >= t0) & (times < t1)
    if inside.any():
        return logits[inside].mean(axis=0)
    rows = np.flatnonzero(usable)
    nearest = rows[np.argmin(np.abs(times[rows] - 0.5 * (t0 + t1)))]
    return logits[nearest].copy()
