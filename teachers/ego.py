"""Ego-Score teacher: a binary ego/exo video classifier (paper: trained on Charades-Ego).

Two sizes behind one ``build(arch)``, chosen by name (:data:`ARCHS`):

* ``videoresnet_tiny`` (the demo's): torchvision's generic ``VideoResNet`` with narrow
  widths (``width`` x 1, 2, 4, 8 channels) and one block per stage, on windows of
  ``num_frames`` frames at 64x64 -- the small kind of 3D CNN a CPU trains in seconds.
* ``slow_r50`` / ``slow_r101`` (paper size): the PySlowFast Slow 8x8 ResNet of
  ``student.backbones`` (handed over through :mod:`pipeline.io.hooks`) plus a linear ``head.projection``, so a Kinetics checkpoint
  (PySlowFast ``.pyth``, Caffe2 ``.pkl``) loads by the student's names. Neither the paper
  nor the Ego-Exo release gives the ego classifier's architecture; the release ships only
  its outputs (``k400_ego_predicts.pkl``), so this is our choice.

Class 0 is exo (third-person), 1 is ego. Training lives in :mod:`teachers.ego_train`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple, VideoResNet

from teachers.base import InputSpec, Teacher, check_batch, register_teacher
from teachers.preprocess import last_valid_index, resize_frames, run_batched, to_tensor

CLASSES = ("exo", "ego")
DEFAULT_ARCH = "videoresnet_tiny"
DEFAULT_SPEC = InputSpec(frame_rate=4.0, size=64, num_frames=4)
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)  # PySlowFast DATA.MEAN / STD
# Slow 8x8: 8 frames at 224 px. PySlowFast takes every 8th frame of 30 fps video (3.75 fps,
# 2.1 s); the teachers share one frame rate and the object teacher's is 4 fps, so 4 fps (2 s).
SLOW_SPEC = InputSpec(frame_rate=4.0, size=224, mean=KINETICS_MEAN, std=KINETICS_STD, num_frames=8)

_CONV_MAKERS = {"3d": Conv3DSimple, "2plus1d": Conv2Plus1D, "2d": Conv3DNoTemporal}


class NarrowStem(nn.Sequential):
    """torchvision's BasicStem (3x7x7 conv, spatial stride 2) with ``width`` output channels."""

    def __init__(self, width: int) -> None:
        super().__init__(
            nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )


def build_tiny(
    arch: str = DEFAULT_ARCH,
    *,
    width: int = 16,
    layers: tuple[int, int, int, int] | list[int] = (1, 1, 1, 1),
    conv: str = "3d",
    num_classes: int = len(CLASSES),
) -> nn.Module:
    """A VideoResNet with stage widths ``width * (1, 2, 4, 8)`` taking [N, 3, T, H, W] clips."""
    conv_maker = _CONV_MAKERS[conv]
    # VideoResNet hard-codes 64..512 channels; build it, then swap in narrow stem and stages
    # made by its own _make_layer, so every block is still torchvision's.
    model = VideoResNet(BasicBlock, [conv_maker] * 4, list(layers), stem=lambda: NarrowStem(width), num_classes=1)
    model.inplanes = width
    for i, blocks in enumerate(layers):
        stage = model._make_layer(BasicBlock, conv_maker, width * 2**i, blocks, stride=1 if i == 0 else 2)
        setattr(model, f"layer{i + 1}", stage)
    model.fc = nn.Linear(width * 8 * BasicBlock.expansion, num_classes)
    _init_like_videoresnet(model)
    return model


class ProjectionHead(nn.Module):
    """Dropout then a linear layer; the module exists so its weight is ``head.projection``."""

    def __init__(self, dim_in: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(dim_in, num_classes)
        nn.init.normal_(self.projection.weight, std=0.01)  # PySlowFast MODEL.FC_INIT_STD
        nn.init.zeros_(self.projection.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(x))


class VideoClassifier(nn.Module):
    """A (Slow / SlowFast) backbone, global average pooling per pathway, ``head.projection``."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(sum(backbone.out_channels), num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [f.mean(dim=(2, 3, 4)) for f in self.backbone(x)]
        return self.head(torch.cat(pooled, dim=1))


def build_slow(arch: str, *, num_classes: int = len(CLASSES), dropout: float = 0.5, **backbone_kwargs: Any) -> nn.Module:
    """The student's PySlowFast backbone ``arch`` (slow_r50, slow_r101) with a ``num_classes`` head."""
    # The student's architecture, so Kinetics checkpoints and their names serve both; handed
    # over by the pipeline package (teachers/ does not import student/; see pipeline.io.hooks).
    from pipeline.io.hooks import VIDEO_BACKBONES

    if "pyslowfast" not in VIDEO_BACKBONES:
        raise ValueError(f"the {arch} ego teacher is built on the student's PySlowFast backbone, which "
                         "the pipeline package registers in pipeline.io.hooks; it is missing there")
    return VideoClassifier(VIDEO_BACKBONES["pyslowfast"](arch, **backbone_kwargs), num_classes, dropout)


# name -> (builder, input spec its weights expect by default)
ARCHS: dict[str, tuple[Any, InputSpec]] = {
    DEFAULT_ARCH: (build_tiny, DEFAULT_SPEC),
    "slow_r50": (build_slow, SLOW_SPEC),
    "slow_r101": (build_slow, SLOW_SPEC),
}


def build(arch: str = DEFAULT_ARCH, **arch_kwargs: Any) -> nn.Module:
    """The (untrained) ego/exo classifier ``arch`` (see :data:`ARCHS`), taking [N, 3, T, H, W] clips."""
    if arch not in ARCHS:
        raise ValueError(f"unknown ego architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch][0](arch, **arch_kwargs)


def default_spec(arch: str) -> InputSpec:
    """The input spec ``arch`` is built for (frame rate, size, normalisation, frames per window)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown ego architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch][1]


def _init_like_videoresnet(model: nn.Module) -> None:
    # Same init VideoResNet.__init__ gives its own layers; the swapped-in ones need it too.
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def make_meta(spec: InputSpec = DEFAULT_SPEC, **extra: Any) -> dict[str, Any]:
    """Metadata for save_teacher: class names and input spec, plus e.g. train metrics and data source."""
    return {"classes": list(CLASSES), "spec": spec.to_dict(), **extra}


@register_teacher("ego")
class EgoTeacher(Teacher):
    """Ego/exo logits per window of ``spec.num_frames`` consecutive teacher frames."""

    build = staticmethod(build)

    def output_shapes(self, num_frames: int) -> dict[str, tuple[tuple[int, ...], str]]:
        windows = math.ceil(num_frames / self.spec.num_frames)
        return {"ego/logits": ((windows, len(self.classes)), "float16")}

    def predict(self, frames: np.ndarray, times: np.ndarray, *, max_batch: int = 64) -> dict[str, np.ndarray]:
        check_batch(frames, times)
        b, f = times.shape
        t = self.spec.num_frames
        w = math.ceil(f / t)
        valid = np.isfinite(times)
        small = np.zeros((b, f, self.spec.size, self.spec.size, 3), np.uint8)
        small[valid] = resize_frames(frames[valid], self.spec.size)
        # Windows are non-overlapping; padding frames (past the clip's end, or the
        # tail of the last window) repeat the last valid frame.
        padded_valid = np.zeros((b, w * t), bool)
        padded_valid[:, :f] = valid
        source = last_valid_index(padded_valid)  # [B, W*T] indices into the clip's frames
        windows = small[np.arange(b)[:, None], source].reshape(b, w, t, *small.shape[2:])
        window_valid = padded_valid.reshape(b, w, t).any(-1)
        logits = np.zeros((b, w, len(self.classes)), np.float32)
        if window_valid.any():
            logits[window_valid] = np.concatenate(run_batched(self._logits, windows[window_valid], max_batch))
        return {"ego/logits": logits}

    def _logits(self, clips: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = to_tensor(clips, self.spec, self.device).transpose(1, 2)  # [N, 3, T, S, S]
            return self.model(x).float().cpu().numpy()
