"""The student's training and evaluation loops: build -> optimizer -> schedule -> loop -> eval/checkpoint.

Reads top to bottom. Checkpoints are plain dicts (model, optimizer, epoch, model
args, resolved config, history) written atomically after every epoch; ``fit``
resumes from ``out/last.pt`` when it exists.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from student.metrics import mean_average_precision, topk_accuracy


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.1  # for batch_size; SGD momentum as in PySlowFast
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    num_workers: int = 1  # DataLoader decode processes
    seed: int = 0
    bf16: bool = True  # autocast on CUDA only


@dataclass
class LossWeights:
    """Weights of the named loss terms; 0 drops a term (all distillation at 0 = the baseline)."""

    action: float = 1.0
    ego: float = 0.0
    object: float = 0.0
    hand_map: float = 0.0
    object_map: float = 0.0
    temperature: float = 1.0


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def _lr_at(epoch_float: float, cfg: OptimConfig) -> float:
    """Linear warm-up then half-cosine decay to 0 (PySlowFast's cosine policy)."""
    if epoch_float < cfg.warmup_epochs:
        return cfg.lr * (0.1 + 0.9 * epoch_float / cfg.warmup_epochs)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch_float / cfg.epochs))


def fit(
    model: torch.nn.Module,
    train_set,
    cfg: OptimConfig,
    weights: LossWeights,
    out: Path,
    multilabel: bool,
    device: str = "cpu",
    checkpoint_extra: dict | None = None,
    log: Callable[[str], None] = print,
    progress: Callable | None = None,
) -> list[dict]:
    """Train ``model`` on ``train_set``; returns per-epoch history (mean of each loss term)."""
    from student.losses import egoexo_losses

    torch.manual_seed(cfg.seed)
    model.to(device)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_set) > cfg.batch_size,
        num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    w = {k: v for k, v in asdict(weights).items() if k != "temperature"}
    history: list[dict] = []
    start_epoch = 0
    last = out / "last.pt"
    if last.exists():  # resume
        state = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
        log(f"resuming from {last} at epoch {start_epoch}")
    autocast = device.startswith("cuda") and cfg.bf16
    steps_per_epoch = max(1, len(loader))
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        sums: dict[str, float] = {}
        n = 0
        t_start = time.time()
        bar = progress(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False) if progress else None
        for step, batch in enumerate(loader):
            for g in optimizer.param_groups:
                g["lr"] = _lr_at(epoch + step / steps_per_epoch, cfg)
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                outputs = model(batch["video"])
            outputs = {k: v.float() for k, v in outputs.items()}
            targets = {"action": batch["label"], **{k: batch[k] for k in ("ego", "object", "interaction_map") if k in batch}}
            terms = egoexo_losses(outputs, targets, w, temperature=weights.temperature, multilabel=multilabel)
            loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            n += 1
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        if bar:
            bar.close()
        record = {"epoch": epoch + 1, "seconds": round(time.time() - t_start, 2), **{k: v / max(n, 1) for k, v in sums.items()}}
        history.append(record)
        log("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        save_checkpoint(last, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
            "history": history, **(checkpoint_extra or {}),
        })
    return history


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, batch_size: int = 16, num_workers: int = 1, device: str = "cpu", progress=None):
    """Action scores per clip, averaged over the dataset's views (multi-view testing).

    Returns (scores [N, A], clip indices [N]) with softmax (single-label) or sigmoid (multi-label) scores.
    """
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    n_clips = len(dataset.clips)
    sums, counts = None, np.zeros(n_clips)
    it = progress(loader, desc="evaluate", leave=False) if progress else loader
    for batch in it:
        logits = model(batch["video"].to(device))["action"].float()
        probs = torch.sigmoid(logits) if dataset.multilabel else torch.softmax(logits, dim=1)
        probs = probs.cpu().numpy()
        if sums is None:
            sums = np.zeros((n_clips, probs.shape[1]))
        idx = batch["index"].numpy()
        np.add.at(sums, idx, probs)
        np.add.at(counts, idx, 1)
    return sums / counts[:, None]


def evaluate_scores(scores: np.ndarray, dataset) -> dict:
    """Metrics for a dataset's clips: mAP for multi-label, top-1/top-5 for single-label."""
    if dataset.multilabel:
        targets = np.stack([dataset._label(c).numpy() for c in dataset.clips])
        from student.metrics import chance_map

        return {"mAP": mean_average_precision(scores, targets), "chance_mAP": chance_map(targets), "clips": len(targets)}
    labels = np.array([c.labels[0] for c in dataset.clips])
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "chance_top1": float(np.bincount(labels).max() / len(labels)),
        "clips": len(labels),
    }
