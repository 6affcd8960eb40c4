"""Training and evaluating the demo's hand-object detector (:mod:`teachers.handobj`): the fit loop,
detection AP at IoU 0.5 and hand contact-state accuracy.

Annotations use the store's kind codes (``pipeline.io.signals_schema``); the detector's labels
are made from them by :func:`teachers.handobj.detector_labels`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from pipeline.io.signals_schema import HAND, HANDOBJ_KINDS
from teachers.base import InputSpec
from teachers.handobj import DEFAULT_SPEC, HandObjectDetector, detect, detector_labels
from teachers.preprocess import resize_frames, to_tensor
from teachers.training import Progress, make_optimizer


def _detector_targets(targets: Sequence[dict[str, Any]], size: int) -> list[dict[str, Tensor]]:
    """Normalised annotations -> torchvision targets in px of the resized square frame; boxes
    under one pixel wide or high are dropped (FasterRCNN refuses degenerate boxes)."""
    out = []
    for t in targets:
        boxes = torch.as_tensor(np.asarray(t["boxes"], np.float32).reshape(-1, 4)).clamp(0, 1) * size
        keep = ((boxes[:, 2:] - boxes[:, :2]) >= 1).all(1)
        out.append({
            "boxes": boxes[keep],
            "labels": detector_labels(torch.as_tensor(np.asarray(t["kinds"]).reshape(-1), dtype=torch.long))[keep],
            "contact": torch.as_tensor(np.asarray(t["contact"]).reshape(-1), dtype=torch.long)[keep],
        })
    return out


def _hflip(image: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    w = image.shape[-1]
    boxes = target["boxes"]
    boxes = boxes[:, [2, 1, 0, 3]] * boxes.new_tensor([-1.0, 1.0, -1.0, 1.0]) + boxes.new_tensor([w, 0.0, w, 0.0])
    return image.flip(-1), {**target, "boxes": boxes}


def fit(
    model: HandObjectDetector,
    frames: np.ndarray,
    targets: Sequence[dict[str, Any]],
    *,
    spec: InputSpec = DEFAULT_SPEC,
    epochs: int = 10,
    batch_size: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[float]:
    """Train on uint8 frames [N,H,W,3] with per-frame annotations ``{"boxes": [M,4] normalised xyxy,
    "kinds": [M] (0 hand, 1 object), "contact": [M]}``; random horizontal flips.

    AdamW, one-cycle schedule; returns the mean summed loss of each epoch.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    images = torch.from_numpy(resize_frames(np.asarray(frames, np.uint8), spec.size))
    det_targets = _detector_targets(targets, spec.size)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * steps_per_epoch
    optimizer, schedule = make_optimizer(model, lr, total)
    history, done = [], 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).tolist()
        losses = []
        for i in range(0, len(order), batch_size):
            batch_images, batch_targets = [], []
            for j in order[i : i + batch_size]:
                image, target = to_tensor(images[j], None), det_targets[j]
                if torch.rand(1, generator=generator).item() < 0.5:
                    image, target = _hflip(image, target)
                batch_images.append(image.to(device))
                batch_targets.append({k: v.to(device) for k, v in target.items()})
            loss_terms = model(batch_images, batch_targets)
            loss = sum(loss_terms.values())
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


def average_precision(scores: np.ndarray, is_true_positive: np.ndarray, num_ground_truth: int) -> float:
    """All-point interpolated AP (area under the precision envelope, as VOC2010+ and COCO).

    Written by hand because no detection-metric library is installed here
    (pycocotools/torchmetrics); sklearn's average_precision_score ranks
    binary labels and has no notion of ground truth the detector never found.
    """
    if num_ground_truth == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_true_positive[order])
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / num_ground_truth
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * envelope))


def evaluate(
    model: HandObjectDetector,
    frames: np.ndarray,
    targets: Sequence[dict[str, Any]],
    *,
    spec: InputSpec = DEFAULT_SPEC,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Hand and object AP at IoU 0.5, and contact-state accuracy over the ground-truth hands that
    a hand detection matched (NaN where a quantity has nothing to count)."""
    found = detect(model, np.asarray(frames, np.uint8), size=spec.size)
    result: dict[str, float] = {}
    contact_hits: list[bool] = []
    for kind, name in enumerate(HANDOBJ_KINDS):
        scores, hits, num_gt = [], [], 0
        for d, t in zip(found, targets):
            gt_boxes = np.asarray(t["boxes"], np.float32).reshape(-1, 4)
            gt_mask = np.asarray(t["kinds"]).reshape(-1) == kind
            gt_contact = np.asarray(t["contact"]).reshape(-1)[gt_mask]
            mine = d["kinds"] == kind  # detect() returns them best score first
            matched = _match(d["boxes"][mine], gt_boxes[gt_mask], iou_threshold)
            scores.append(d["scores"][mine])
            hits.append(matched >= 0)
            num_gt += int(gt_mask.sum())
            if kind == HAND:
                contact_hits += [c == gt_contact[m] for c, m in zip(d["contact"][mine], matched) if m >= 0]
        result[f"{name}_ap50"] = average_precision(np.concatenate(scores), np.concatenate(hits), num_gt)
    result["contact_accuracy"] = float(np.mean(contact_hits)) if contact_hits else float("nan")
    return result


def _match(pred: np.ndarray, gt: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy matching of score-sorted predictions: each takes the best still-unmatched ground
    truth with IoU >= threshold. Returns the matched ground-truth index per prediction, -1 if none."""
    matched = np.full(len(pred), -1)
    if len(pred) == 0 or len(gt) == 0:
        return matched
    iou = box_iou(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    taken = np.zeros(len(gt), bool)
    for i in range(len(pred)):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            matched[i], taken[j] = j, True
    return matched
