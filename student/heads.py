"""Ego-Exo student: a video backbone plus action, ego, object and interaction-map heads.

The action head is ``head.projection`` as in PySlowFast's ``ResNetBasicHead``; the other
heads' names map to the Ego-Exo release's in :mod:`student.checkpoints`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_FC_INIT_STD = 0.01  # PySlowFast MODEL.FC_INIT_STD


def _linear(dim_in: int, dim_out: int) -> nn.Linear:
    layer = nn.Linear(dim_in, dim_out)
    nn.init.normal_(layer.weight, std=_FC_INIT_STD)
    nn.init.zeros_(layer.bias)
    return layer


class ActionHead(nn.Module):
    """Linear classifier on pooled features; the module exists so its weight is ``head.projection``."""

    def __init__(self, dim_in: int, num_classes: int):
        super().__init__()
        self.projection = _linear(dim_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(x)


class InteractionMapHead(nn.Module):
    """Per-cell hand / object logits on the Slow pathway's final grid.

    The Ego-Exo release's head (HANDOBJ.HEAD_NUM_CONV 1, HEAD_CONV_DIM 512): one 1x3x3 conv
    of ``hidden_channels`` + ReLU (``hidden``, release ``pathway0_conv_fcn0``), then a 1x1x1
    conv to the two maps (``score``, release ``score_projection``), no BN.
    ``hidden_channels=0`` leaves the hidden conv out (a single 1x1x1 conv).
    """

    def __init__(self, dim_in: int, hidden_channels: int = 512):
        super().__init__()
        if hidden_channels > 0:
            self.hidden = nn.Conv3d(dim_in, hidden_channels, (1, 3, 3), padding=(0, 1, 1))
            # The release initialises non-projection convs with c2_msra_fill (He normal, fan_out).
            nn.init.kaiming_normal_(self.hidden.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.hidden.bias)
            dim_in = hidden_channels
        else:
            self.hidden = None
        self.score = nn.Conv3d(dim_in, 2, 1)
        nn.init.normal_(self.score.weight, std=_FC_INIT_STD)
        nn.init.zeros_(self.score.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.hidden is not None:
            x = torch.relu(self.hidden(x))
        return self.score(x)


class EgoExoStudent(nn.Module):
    """Backbone + heads. ``forward(clip)`` returns a dict of logits.

    Keys: ``action`` [B,A], ``ego`` [B,2] (absent when ``ego_head=False``), ``object`` [B,C]
    (absent when ``num_objects=0``),
    ``noun`` [B,N] (EPIC-100's second classifier; absent when ``num_nouns=0``, where
    ``action`` is the verb), ``interaction_map`` [B,2,T',H',W'] on the Slow pathway's final
    grid, channel 0 hand and channel 1 object (absent when ``interaction_maps=False``).

    The classifiers share the globally pooled, concatenated pathway features and one
    dropout, as in the Ego-Exo release's multi-task head. ``map_hidden_channels=None``
    takes the backbone's default (``head_config``; 512 for the paper's R50/R101).
    """

    def __init__(self, backbone: nn.Module, num_actions: int, num_objects: int = 1000,
                 dropout: float = 0.5, interaction_maps: bool = True, map_hidden_channels: int | None = None,
                 num_nouns: int = 0, ego_head: bool = True):
        super().__init__()
        self.backbone = backbone
        feat_dim = sum(backbone.out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = ActionHead(feat_dim, num_actions)
        self.noun_head = _linear(feat_dim, num_nouns) if num_nouns > 0 else None
        self.ego_head = _linear(feat_dim, 2) if ego_head else None
        self.object_head = _linear(feat_dim, num_objects) if num_objects > 0 else None
        if map_hidden_channels is None:
            map_hidden_channels = getattr(backbone, "head_config", {}).get("map_hidden_channels", 512)
        self.map_head = (InteractionMapHead(backbone.out_channels[0], map_hidden_channels)
                         if interaction_maps else None)

    @property
    def data_config(self) -> dict:
        """The backbone's input spec (frames, sampling rate, crop size, mean, std)."""
        return getattr(self.backbone, "data_config", {})

    @property
    def num_actions(self) -> int:
        return self.head.projection.out_features

    def forward_features(self, clip: Tensor) -> list[Tensor]:
        return self.backbone.forward_features(clip)

    def forward_head(self, features: list[Tensor]) -> dict[str, Tensor]:
        pooled = torch.cat([f.mean(dim=(2, 3, 4)) for f in features], dim=1)
        pooled = self.dropout(pooled)
        out = {"action": self.head(pooled)}
        if self.ego_head is not None:
            out["ego"] = self.ego_head(pooled)
        if self.noun_head is not None:
            out["noun"] = self.noun_head(pooled)
        if self.object_head is not None:
            out["object"] = self.object_head(pooled)
        if self.map_head is not None:
            out["interaction_map"] = self.map_head(features[0])
        return out

    def forward(self, clip: Tensor) -> dict[str, Tensor]:
        return self.forward_head(self.forward_features(clip))

    def forward_test(self, clip: Tensor, window: tuple[int, int], multilabel: bool = False) -> dict[str, Tensor]:
        """Class probabilities as PySlowFast tests: the head is applied fully convolutionally.

        Each pathway is average-pooled over all its frames and over ``window`` (the training
        crop's final grid, 7x7 for a 224 crop) at stride 1, so a larger test crop (256 -> 8x8)
        gives several positions (2x2); the classifier scores each, and their softmax (sigmoid
        when ``multilabel``, for the action head) is averaged. A grid no larger than the window
        is one position: the training forward's probabilities.
        Returns ``action`` [B,A] and, with a noun head, ``noun`` [B,N].
        """
        import torch.nn.functional as F

        features = self.forward_features(clip)
        pooled = [F.avg_pool3d(f, (f.shape[2], min(window[0], f.shape[3]), min(window[1], f.shape[4])), stride=1)
                  for f in features]
        x = torch.cat(pooled, dim=1).permute(0, 2, 3, 4, 1)  # [B, 1, h, w, C]
        out = {}
        for name, layer in (("action", self.head.projection), ("noun", self.noun_head)):
            if layer is None:
                continue
            logits = layer(x).float()
            probs = torch.sigmoid(logits) if multilabel and name == "action" else torch.softmax(logits, dim=-1)
            out[name] = probs.mean(dim=(1, 2, 3))
        return out

    def reset_action_head(self, num_actions: int) -> None:
        """Replace the action classifier with a freshly initialised one (fine-tuning)."""
        old = self.head.projection
        self.head.projection = _linear(old.in_features, num_actions).to(old.weight.device, old.weight.dtype)
