"""The training loop the demo's classifier teachers share (ego windows, object crops), and its pieces.

Training lives apart from inference: ``teachers/ego_train.py``, ``objects_train.py`` and
``handobj_train.py`` train their teacher; the teacher modules only build and run models.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from teachers.base import InputSpec
from teachers.preprocess import run_batched, to_tensor

# progress(done_steps, total_steps, loss) -- called after every optimisation step by the fit functions.
Progress = Callable[[int, int, float], None]


def flip_and_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Light augmentation for [B, ..., H, W] batches: random horizontal flip and a random
    translation of up to ``max_shift`` px (replicate-padded crop), drawn per sample."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)  # drawn on the CPU: same draws on any device
    x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
    if max_shift <= 0:
        return x
    lead = x.shape[1:-2]
    padded = nn.functional.pad(x.reshape(b, -1, h, w), [max_shift] * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).tolist()
    out = torch.stack([p[:, dy : dy + h, dx : dx + w] for p, (dy, dx) in zip(padded, offsets)])
    return out.reshape(b, *lead, h, w)


def make_optimizer(model: nn.Module, lr: float, total_steps: int):
    """AdamW with a one-cycle schedule (warm-up over the first 20% of steps, then cosine decay).

    The warm-up matters: with a plain cosine schedule the BatchNorm 3D CNN of the ego
    teacher stalled at chance for lr >= 2e-3 on the synthetic ego/exo task, with it
    1e-3 .. 1e-2 all train.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 1), pct_start=0.2)
    return optimizer, schedule


def fit_classifier(
    model: nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    spec: InputSpec,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_shift: int,
    progress: Progress | None = None,
) -> list[float]:
    """Train a classifier on uint8 inputs [N, ..., S, S, 3] already at ``spec.size``.

    Channels move in front of the spatial axes, so the same loop serves images
    ([N,3,S,S]) and clips ([N,3,T,S,S]). Returns the mean loss of each epoch.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    x_all = torch.from_numpy(np.ascontiguousarray(inputs))
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    steps_per_epoch = math.ceil(len(x_all) / batch_size)
    total = epochs * steps_per_epoch
    optimizer, schedule = make_optimizer(model, lr, total)
    history, done = [], 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = flip_and_shift(_channels_first(to_tensor(x_all[idx], spec)), generator, max_shift)
            loss = nn.functional.cross_entropy(model(x.to(device)), y_all[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            done += 1
            if progress is not None:
                progress(done, total, losses[-1])
        history.append(float(np.mean(losses)))
    model.eval()
    return history


def evaluate_classifier(
    model: nn.Module, inputs: np.ndarray, labels: np.ndarray, spec: InputSpec, batch_size: int = 64
) -> dict[str, float]:
    """Top-1 accuracy on uint8 inputs at ``spec.size``, and the majority-class rate it should beat."""
    labels = np.asarray(labels)
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        predict = lambda chunk: model(_channels_first(to_tensor(chunk, spec, device))).argmax(1).cpu().numpy()
        preds = np.concatenate(run_batched(predict, inputs, batch_size))
    chance = np.bincount(labels).max() / len(labels)
    return {"accuracy": float((preds == labels).mean()), "chance": float(chance)}


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """to_tensor gives [N, (T,) 3, S, S]; torchvision's video models want [N, 3, T, S, S]."""
    return x.transpose(1, 2) if x.dim() == 5 else x
