"""Slow and SlowFast 3D ResNets with PySlowFast parameter names.

Parameter names follow PySlowFast (``s1.pathway0_stem.conv``, ``s2.pathway0_res0.branch2.a``,
``s1_fuse.conv_f2s``, ...) so that its ``.pyth`` checkpoints and the Ego-Exo model zoo load
by name. The code itself is our own: blocks first, one generic :class:`VideoResNet`, then
tiny builders whose only difference is the arguments they pass.

PySlowFast's ``pathway{p}_pool`` max-pools after s2 have a 1x1x1 kernel for the Slow and
SlowFast architectures (identity) and no parameters, so they are left out.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

# PySlowFast normalisation for Kinetics-trained Slow/SlowFast (DATA.MEAN / DATA.STD).
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)

# Temporal kernel of (stem, res2, res3, res4, res5), per pathway; PySlowFast
# _TEMPORAL_KERNEL_BASIS["slow"] and ["slowfast"].
SLOW_TEMPORAL_KERNELS = (1, 1, 1, 3, 3)
FAST_TEMPORAL_KERNELS = (5, 3, 3, 3, 3)

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

_BN_EPS = 1e-5
_BN_MOMENTUM = 0.1


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder to the backbone registry; a duplicate name is an error."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = builder
        return builder

    return decorator


def create_backbone(name: str, **overrides) -> nn.Module:
    """Build a registered backbone; ``overrides`` replace the builder's default arguments."""
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    return _BACKBONES[name](**overrides)


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(_BACKBONES)


# ---------------------------------------------------------------------------
# Pathway packing
# ---------------------------------------------------------------------------


def slow_frame_indices(num_frames: int, alpha: int) -> Tensor:
    """Indices of the input frames the Slow pathway sees, as PySlowFast's ``pack_pathway_output``:
    ``linspace(0, T - 1, T // alpha)`` truncated to integers (32 frames, alpha 4 -> 0, 4, 8, 13,
    17, 22, 26, 31). The interaction map lives on the Slow grid, so its time steps are the
    times of these frames.
    """
    if num_frames < alpha:
        raise ValueError(f"a clip of {num_frames} frames is shorter than alpha={alpha}")
    return torch.linspace(0, num_frames - 1, num_frames // alpha).long()


def pack_pathways(x: Tensor, alpha: int) -> list[Tensor]:
    """Split a clip [B,C,T,H,W] into [slow, fast] pathway inputs (slow: T // alpha frames)."""
    if x.shape[2] % alpha:
        # The lateral convs stride the Fast features by alpha; they must land on the Slow length.
        raise ValueError(f"SlowFast needs a clip length divisible by alpha={alpha}, got {x.shape[2]} frames")
    index = slow_frame_indices(x.shape[2], alpha).to(x.device)
    return [x.index_select(2, index), x]


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


def _bn(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class Stem(nn.Module):
    """Conv (T x 7 x 7) -> BN -> ReLU -> optional 1x3x3 max-pool (stride 2)."""

    def __init__(self, dim_in: int, dim_out: int, temporal_kernel: int, stride: int = 2, pool: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(
            dim_in, dim_out, (temporal_kernel, 7, 7), stride=(1, stride, stride),
            padding=(temporal_kernel // 2, 3, 3), bias=False,
        )
        self.bn = _bn(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class Bottleneck(nn.Module):
    """Tx1x1 -> 1x3x3 (spatial stride) -> 1x1x1, each followed by BN (PySlowFast ``branch2``)."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int, stride: int):
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_inner, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.a_bn = _bn(dim_inner)
        self.b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.b_bn = _bn(dim_inner)
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = _bn(dim_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.a_bn(self.a(x)))
        x = self.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class ResBlock(nn.Module):
    """Bottleneck residual block; ``branch1`` projects the shortcut when the shape changes."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int, stride: int):
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
            self.branch1_bn = _bn(dim_out)
        else:
            self.branch1 = None
        self.branch2 = Bottleneck(dim_in, dim_inner, dim_out, temporal_kernel, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.branch1 is None else self.branch1_bn(self.branch1(x))
        return self.relu(shortcut + self.branch2(x))


class FastToSlowFusion(nn.Module):
    """Lateral connection: time-strided conv on the Fast features, concatenated to the Slow ones."""

    def __init__(self, dim_fast: int, channel_ratio: int, kernel: int, alpha: int):
        super().__init__()
        self.conv_f2s = nn.Conv3d(
            dim_fast, dim_fast * channel_ratio, (kernel, 1, 1), stride=(alpha, 1, 1),
            padding=(kernel // 2, 0, 0), bias=False,
        )
        self.bn = _bn(dim_fast * channel_ratio)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        slow, fast = x
        fused = self.relu(self.bn(self.conv_f2s(fast)))
        return [torch.cat([slow, fused], dim=1), fast]


class PathwayStems(nn.Module):
    """One :class:`Stem` per pathway, named ``pathway{p}_stem``."""

    def __init__(self, stems: Sequence[nn.Module]):
        super().__init__()
        self.num_pathways = len(stems)
        for p, stem in enumerate(stems):
            self.add_module(f"pathway{p}_stem", stem)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        return [getattr(self, f"pathway{p}_stem")(x[p]) for p in range(self.num_pathways)]


class ResStage(nn.Module):
    """``depth`` residual blocks per pathway, named ``pathway{p}_res{i}``; the first one strides."""

    def __init__(self, dims_in: Sequence[int], dims_inner: Sequence[int], dims_out: Sequence[int],
                 temporal_kernels: Sequence[int], depth: int, stride: int):
        super().__init__()
        self.num_pathways = len(dims_in)
        self.depth = depth
        for p in range(self.num_pathways):
            for i in range(depth):
                block = ResBlock(
                    dims_in[p] if i == 0 else dims_out[p], dims_inner[p], dims_out[p],
                    temporal_kernels[p], stride if i == 0 else 1,
                )
                self.add_module(f"pathway{p}_res{i}", block)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        out = []
        for p in range(self.num_pathways):
            y = x[p]
            for i in range(self.depth):
                y = getattr(self, f"pathway{p}_res{i}")(y)
            out.append(y)
        return out


# ---------------------------------------------------------------------------
# Generic model
# ---------------------------------------------------------------------------


class VideoResNet(nn.Module):
    """Bottleneck 3D ResNet with one (Slow) or two (SlowFast) pathways.

    Args:
        depths: residual blocks in res2..res5.
        width: stem channels of the Slow pathway (PySlowFast ``WIDTH_PER_GROUP``); res2 has
            ``width`` inner and ``4 * width`` output channels, doubling per stage.
        temporal_kernels: one tuple per pathway, temporal kernel of (stem, res2..res5).
            Two tuples make a SlowFast model.
        spatial_strides: stride of res2..res5.
        stem_stride, stem_pool: spatial stride of the stem conv; whether its max-pool runs.
        alpha: frame-rate ratio Fast / Slow (SlowFast only).
        beta_inv: channel ratio Slow / Fast (SlowFast only).
        fusion_conv_channel_ratio, fusion_kernel: lateral Fast->Slow conv widening and
            temporal kernel (SlowFast only).
        zero_init_final_bn: zero the last BN of each residual branch (PySlowFast default).
        data_config: input spec travelling with the weights (frames, sampling rate, target fps,
            train scale jitter, crop sizes, mean, std).
        head_config: defaults for the heads built on this backbone (``map_hidden_channels``).

    ``forward(x)`` takes one normalised clip [B,3,T,H,W] (or a ready list of pathway inputs)
    and returns one [B,C,T,H,W] feature map per pathway after res5.
    """

    def __init__(
        self,
        depths: Sequence[int],
        width: int = 64,
        temporal_kernels: Sequence[Sequence[int]] = (SLOW_TEMPORAL_KERNELS,),
        spatial_strides: Sequence[int] = (1, 2, 2, 2),
        stem_stride: int = 2,
        stem_pool: bool = True,
        alpha: int = 4,
        beta_inv: int = 8,
        fusion_conv_channel_ratio: int = 2,
        fusion_kernel: int = 7,
        in_channels: int = 3,
        zero_init_final_bn: bool = True,
        data_config: dict | None = None,
        head_config: dict | None = None,
    ):
        super().__init__()
        if len(depths) != 4 or len(spatial_strides) != 4:
            raise ValueError("depths and spatial_strides need one entry per stage res2..res5")
        if len(temporal_kernels) not in (1, 2) or any(len(k) != 5 for k in temporal_kernels):
            raise ValueError("temporal_kernels: one or two pathways of (stem, res2, res3, res4, res5)")
        self.num_pathways = len(temporal_kernels)
        self.slowfast = self.num_pathways == 2
        self.alpha = alpha if self.slowfast else 1
        self.data_config = dict(data_config or {})
        self.head_config = dict(head_config or {})

        # Channel widths per pathway: the Fast pathway is beta_inv times thinner.
        shrink = [1, beta_inv][: self.num_pathways]
        stem_dims = [width // s for s in shrink]
        self.s1 = PathwayStems([
            Stem(in_channels, stem_dims[p], temporal_kernels[p][0], stem_stride, stem_pool)
            for p in range(self.num_pathways)
        ])
        dims = stem_dims
        for stage, (depth, stride) in enumerate(zip(depths, spatial_strides)):
            name = f"s{stage + 2}"
            if self.slowfast:
                # Lateral after s1..s4 (i.e. before s2..s5) widens the Slow input.
                self.add_module(f"s{stage + 1}_fuse", FastToSlowFusion(
                    dims[1], fusion_conv_channel_ratio, fusion_kernel, alpha))
                dims_in = [dims[0] + dims[1] * fusion_conv_channel_ratio, dims[1]]
            else:
                dims_in = dims
            inner = [width * 2**stage // s for s in shrink]
            out = [4 * width * 2**stage // s for s in shrink]
            kernels = [temporal_kernels[p][stage + 1] for p in range(self.num_pathways)]
            self.add_module(name, ResStage(dims_in, inner, out, kernels, depth, stride))
            dims = out

        self.out_channels: list[int] = list(dims)
        self.final_stride: int = stem_stride * (2 if stem_pool else 1) * math.prod(spatial_strides)
        # Temporal stride of each pathway's output grid relative to the input clip.
        self.temporal_strides: list[int] = [self.alpha, 1] if self.slowfast else [1]
        self._init_weights(zero_init_final_bn)

    def _init_weights(self, zero_init_final_bn: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_final_bn:
            # Each residual block starts as identity, which stabilises early training.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.c_bn.weight)

    def pathway_inputs(self, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """The per-pathway inputs for a clip (a list is taken as already packed)."""
        if isinstance(x, Tensor):
            return pack_pathways(x, self.alpha) if self.slowfast else [x]
        if len(x) != self.num_pathways:
            raise ValueError(f"expected {self.num_pathways} pathway inputs, got {len(x)}")
        return list(x)

    def forward_features(self, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """Features after res5, one [B,C,T,H,W] tensor per pathway (Slow first)."""
        x = self.s1(self.pathway_inputs(x))
        for stage in range(2, 6):
            if self.slowfast:
                x = getattr(self, f"s{stage - 1}_fuse")(x)
            x = getattr(self, f"s{stage}")(x)
        return x

    def forward(self, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
        return self.forward_features(x)


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------


def _paper_config(num_frames: int, sampling_rate: int) -> dict:
    # PySlowFast DATA.*: frames sampled every ``sampling_rate`` frames of a TARGET_FPS video,
    # short side jittered in TRAIN_JITTER_SCALES then a TRAIN_CROP_SIZE crop; testing resizes
    # the short side to TEST_CROP_SIZE and takes 3 crops of that size along the long side.
    return dict(num_frames=num_frames, sampling_rate=sampling_rate, target_fps=30.0,
                train_jitter_scales=(256, 320), crop_size=224, test_crop_size=256,
                mean=KINETICS_MEAN, std=KINETICS_STD)


# The release's interaction-map head: HANDOBJ.HEAD_NUM_CONV 1 x HEAD_CONV_DIM 512.
_PAPER_HEADS = dict(map_hidden_channels=512)


def _tiny_config(num_frames: int, target_fps: float) -> dict:
    # The paper's geometry scaled to a 64 px crop (256/224 and 320/224 of it); 2 s clips.
    return dict(num_frames=num_frames, sampling_rate=1, target_fps=target_fps,
                train_jitter_scales=(73, 91), crop_size=64, test_crop_size=73,
                mean=KINETICS_MEAN, std=KINETICS_STD)


_TINY_HEADS = dict(map_hidden_channels=64)


@register_backbone("slow_r50")
def slow_r50(**kwargs) -> VideoResNet:
    """Slow-only 8x8 ResNet-50 (PySlowFast SLOW_8x8_R50)."""
    args = dict(depths=STAGE_DEPTHS[50], data_config=_paper_config(8, 8), head_config=_PAPER_HEADS)
    return VideoResNet(**{**args, **kwargs})


@register_backbone("slow_r101")
def slow_r101(**kwargs) -> VideoResNet:
    """Slow-only 8x8 ResNet-101."""
    args = dict(depths=STAGE_DEPTHS[101], data_config=_paper_config(8, 8), head_config=_PAPER_HEADS)
    return VideoResNet(**{**args, **kwargs})


@register_backbone("slowfast_r50")
def slowfast_r50(**kwargs) -> VideoResNet:
    """SlowFast 8x8 ResNet-50 (PySlowFast SLOWFAST_8x8_R50: alpha 4, beta_inv 8, fusion kernel 7)."""
    args = dict(depths=STAGE_DEPTHS[50], temporal_kernels=(SLOW_TEMPORAL_KERNELS, FAST_TEMPORAL_KERNELS),
                alpha=4, beta_inv=8, fusion_conv_channel_ratio=2, fusion_kernel=7,
                data_config=_paper_config(32, 2), head_config=_PAPER_HEADS)
    return VideoResNet(**{**args, **kwargs})


@register_backbone("slowfast_r101")
def slowfast_r101(**kwargs) -> VideoResNet:
    """SlowFast 8x8 ResNet-101 (PySlowFast SLOWFAST_8x8_R101_101_101 and Ego-Exo: fusion kernel 5)."""
    args = dict(depths=STAGE_DEPTHS[101], temporal_kernels=(SLOW_TEMPORAL_KERNELS, FAST_TEMPORAL_KERNELS),
                alpha=4, beta_inv=8, fusion_conv_channel_ratio=2, fusion_kernel=5,
                data_config=_paper_config(32, 2), head_config=_PAPER_HEADS)
    return VideoResNet(**{**args, **kwargs})


# CPU demo variants: one block per stage, 16 stem channels (slow_tiny 12), total spatial stride 16
# (stem conv 2 x max-pool 2 x res3 2 x res4 2, res5 unstrided) so 64x64 -> 4x4.
_TINY = dict(depths=(1, 1, 1, 1), width=16, spatial_strides=(1, 2, 2, 1))


@register_backbone("slow_tiny")
def slow_tiny(**kwargs) -> VideoResNet:
    """Tiny Slow model for the CPU demo: 8x64x64 input -> 8x4x4 grid of 384 channels.

    12 stem channels, not 16: a training step of 16 clips on one thread takes 0.82x as long
    (README, demo section)."""
    args = dict(**{**_TINY, "width": 12}, data_config=_tiny_config(8, 4.0), head_config=_TINY_HEADS)
    return VideoResNet(**{**args, **kwargs})


@register_backbone("slowfast_tiny")
def slowfast_tiny(**kwargs) -> VideoResNet:
    """Tiny SlowFast for the CPU demo: alpha 4, Fast pathway 1/4 as wide; 32x64x64 -> slow 8x4x4."""
    args = dict(**_TINY, temporal_kernels=(SLOW_TEMPORAL_KERNELS, FAST_TEMPORAL_KERNELS),
                alpha=4, beta_inv=4, fusion_conv_channel_ratio=2, fusion_kernel=5,
                data_config=_tiny_config(32, 16.0), head_config=_TINY_HEADS)
    return VideoResNet(**{**args, **kwargs})


# ---------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------

# Published parameter counts with a 400-class Kinetics head (PySlowFast projects/pytorchvideo
# model zoo); Slow R101 has no published figure.
PUBLISHED_PARAMS = {"slow_r50": 32.45e6, "slowfast_r50": 34.57e6, "slowfast_r101": 62.83e6}


def count_parameters(name: str, num_actions: int = 400) -> int:
    """Parameters of a registered backbone plus a linear ``num_actions``-way classifier on its
    pooled features (PySlowFast's ``head.projection``), as the published counts are taken."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        backbone = create_backbone(name)
    return sum(p.numel() for p in backbone.parameters()) + (sum(backbone.out_channels) + 1) * num_actions
