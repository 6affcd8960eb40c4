"""Clip-level metrics from (multi-view averaged) scores."""
from __future__ import annotations

import numpy as np


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
    """[N] bool: whether each row's label is among its k highest scores."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the k highest scores."""
    return float(np.mean(topk_hits(scores, labels, k)))


def per_class_average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[C] average precision of each class (sklearn's); NaN for a class without a positive."""
    from sklearn.metrics import average_precision_score

    keep = targets.sum(axis=0) > 0
    ap = np.full(targets.shape[1], np.nan)
    if np.any(keep):  # one kept class comes back as a scalar
        ap[keep] = np.atleast_1d(average_precision_score(targets[:, keep], scores[:, keep], average=None))
    return ap


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Macro mAP over the classes that have at least one positive (Charades convention)."""
    ap = per_class_average_precision(scores, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def chance_map(targets: np.ndarray) -> float:
    """mAP of an uninformative scorer: each class's AP equals its positive rate."""
    keep = targets.sum(axis=0) > 0
    return float(targets[:, keep].mean(axis=0).mean())
