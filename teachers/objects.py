"""Object-Score teacher: a per-frame image classifier (paper: ImageNet-1k ResNet-152).

Two architectures, both torchvision's ``ResNet``:

* ``resnet_narrow`` -- ``ResNet(BasicBlock, layers)`` with stage widths
  ``width * (1, 2, 4, 8)``, for the demo world at 64x64 (trainable on CPU in seconds);
* any torchvision ResNet name (``resnet18`` ... ``resnet152``), built with
  ``weights=None``; real ImageNet weights come from a local torchvision state
  dict file through :func:`load_torchvision_classifier`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from teachers.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    Progress,
    Teacher,
    check_batch,
    TeacherWeightsError,
    evaluate_classifier,
    file_sha256,
    fit_classifier,
    register_teacher,
    resize_frames,
    run_batched,
    to_tensor,
)

DEFAULT_ARCH = "resnet_narrow"
DEFAULT_SPEC = InputSpec(frame_rate=4.0, size=64)
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def build(
    arch: str = DEFAULT_ARCH,
    *,
    num_classes: int,
    width: int = 32,
    layers: tuple[int, int, int, int] | list[int] = (1, 1, 1, 1),
) -> nn.Module:
    """An image classifier taking [N, 3, S, S]; ``width``/``layers`` only apply to ``resnet_narrow``."""
    if arch in TORCHVISION_ARCHS:
        return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if arch != DEFAULT_ARCH:
        raise ValueError(f"unknown object architecture {arch!r}; known: {(DEFAULT_ARCH, *TORCHVISION_ARCHS)}")
    # ResNet hard-codes 64..512 channels for BasicBlock; build it, then swap in a narrow
    # stem and stages made by its own _make_layer, so every block is still torchvision's.
    model = ResNet(BasicBlock, list(layers), num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.inplanes = width
    for i, blocks in enumerate(layers):
        setattr(model, f"layer{i + 1}", model._make_layer(BasicBlock, width * 2**i, blocks, stride=1 if i == 0 else 2))
    model.fc = nn.Linear(width * 8 * BasicBlock.expansion, num_classes)
    for m in model.modules():  # the init ResNet.__init__ gives its own layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


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


def make_meta(classes: Sequence[str], spec: InputSpec = DEFAULT_SPEC, **extra: Any) -> dict[str, Any]:
    """Metadata for save_teacher: class names and input spec, plus e.g. train metrics and data source."""
    return {"classes": list(classes), "spec": spec.to_dict(), **extra}


@register_teacher("object")
class ObjectTeacher(Teacher):
    """Class logits for every teacher frame; padding frames get all-zero logits."""

    build = staticmethod(build)

    def output_shapes(self, num_frames: int) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"object/logits": ((num_frames, len(self.classes)), "float16")}

    def predict(self, frames: np.ndarray, times: np.ndarray, *, max_batch: int = 64) -> dict[str, np.ndarray]:
        check_batch(frames, times)
        valid = np.isfinite(times)
        logits = np.zeros((*times.shape, len(self.classes)), np.float32)
        if valid.any():
            logits[valid] = np.concatenate(run_batched(self._logits, frames[valid], max_batch))
        return {"object/logits": logits}

    def _logits(self, frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = to_tensor(resize_frames(frames, self.spec.size), self.spec, self.device)
            return self.model(x).float().cpu().numpy()


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's index order."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES  # the list torchvision's own weights use

    return list(_IMAGENET_CATEGORIES)


def load_torchvision_classifier(
    state_dict_path: str | os.PathLike,
    arch: str = "resnet152",
    classes: Sequence[str] | None = None,
    *,
    frame_rate: float = 4.0,
    size: int = 224,
    device: str | torch.device = "cpu",
) -> ObjectTeacher:
    """An Object-Score teacher from a LOCAL torchvision classification state dict (e.g. the file
    torchvision's ``ResNet152_Weights.IMAGENET1K_V1`` downloads, fetched by hand elsewhere).

    The model is built with ``weights=None``; ``classes`` default to ImageNet-1k's
    (the class count is read from the file's ``fc.weight``). Input: ImageNet
    mean/std at ``size`` px (squashed to a square, not centre-cropped). Save it
    in our format with ``save_teacher(path, t.model, "object", arch, t.meta["arch_kwargs"], t.meta)``.
    """
    try:
        state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a bad archive
        raise TeacherWeightsError(state_dict_path, f"not a readable torch file ({type(e).__name__}: {e})") from e
    for wrapper in ("state_dict", "model"):  # common checkpoint wrappers around the bare state dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise TeacherWeightsError(state_dict_path, "not a torchvision ResNet state dict (no 'fc.weight')")
    num_classes = state["fc.weight"].shape[0]
    if classes is None:
        classes = imagenet_classes() if num_classes == 1000 else [f"class_{i}" for i in range(num_classes)]
    if len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for a {num_classes}-way classifier")
    model = build(arch, num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise TeacherWeightsError(state_dict_path, f"weights do not fit torchvision {arch}: {e}") from e
    meta = {
        "name": "object",
        "arch": arch,
        "arch_kwargs": {"num_classes": num_classes},
        "classes": list(classes),
        "spec": InputSpec(frame_rate, size, IMAGENET_MEAN, IMAGENET_STD).to_dict(),
        "weights_sha256": file_sha256(state_dict_path),
        "source": str(Path(state_dict_path).resolve()),
        "converted_from": "torchvision state dict",
    }
    return ObjectTeacher(model, meta, device)
