"""Training the demo's Object-Score teacher (``resnet_narrow``) on labelled object crops.

The paper's object teacher is ImageNet-trained and only loaded (:mod:`teachers.objects`);
the demo trains a narrow ResNet the way an ImageNet classifier is trained: on object-centric
crops (``pipeline.stages.train_teachers.object_crops``), applied to whole frames.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from teachers.base import InputSpec
from teachers.objects import DEFAULT_SPEC
from teachers.preprocess import resize_frames
from teachers.training import Progress, evaluate_classifier, fit_classifier


def fit(
    model: nn.Module,
    frames: np.ndarray,
    labels: np.ndarray,
    *,
    spec: InputSpec = DEFAULT_SPEC,
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[float]:
    """Train on uint8 frames [N, H, W, 3] with class indices [N]; flip + small shift augmentation.

    Returns the mean training loss of each epoch.
    """
    inputs = resize_frames(np.asarray(frames, np.uint8), spec.size)
    return fit_classifier(
        model, inputs, labels, spec, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        max_shift=spec.size // 16, progress=progress,
    )


def evaluate(model: nn.Module, frames: np.ndarray, labels: np.ndarray, *, spec: InputSpec = DEFAULT_SPEC) -> dict[str, float]:
    """{"accuracy": top-1 on frames [N,H,W,3], "chance": majority-class rate of ``labels``}."""
    return evaluate_classifier(model, resize_frames(np.asarray(frames, np.uint8), spec.size), labels, spec)
