"""Interaction-Map teacher: a hand-object detector with a hand contact-state head (the demo's small one;
the authors' released 100DOH detector itself is ``teachers.hoi100doh``).

The paper uses Shan et al.'s "100 Days of Hands" detector (hands, their contact
state, in-contact objects). detectron2 cannot be installed here, so detection
runs on torchvision's ``FasterRCNN``; for the demo world it gets a small custom
backbone and one feature level, 5x5 RoIAlign and a 256-wide box head.

``fasterrcnn_tiny_fpn`` (the default) reads one stride-4 map: at the 128 px input a
third-person hand is about 6 x 9 px, under one cell of a stride-8 map, and the first
demo detector (``fasterrcnn_tiny``, stride 8, still loadable) found few of them (hand
AP50 0.19 on the demo's held-out third-person frames; this one 0.77, README "Measured").
The map comes through an FPN top-down path from stride 64 plus the frame's mean feature,
so every cell also sees the whole scene: a head in a third-person frame is a
skin-coloured blob the size of a hand in a head-mounted frame, and without that context
the detector boxed heads as hands.

``HandObjectDetector`` wraps that detector and adds the contact head. As in
100DOH, contact is classified from box-head features of the hand box enlarged
by 30% on each side, so the head sees what the hand touches. Detector labels:
0 background, then the store's kind codes shifted by one (:func:`detector_labels`).
Contact states (100DOH): 0 N no contact, 1 S self, 2 O other person, 3 P portable
object, 4 F stationary object (``pipeline.io.signals_schema``).

Per frame the teacher emits up to ``MAX_BOXES`` rows, best score first:
``[x1, y1, x2, y2 (0-1, of the frame), score, kind (0 hand, 1 object), contact]``;
rows of score 0 are padding (objects always have contact 0). Training and the detection AP
metric live in :mod:`teachers.handobj_train`.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, clip_boxes_to_image

from pipeline.io.signals_schema import CONTACT_STATES, HAND, HANDOBJ_KINDS
from teachers.base import IMAGENET_MEAN, IMAGENET_STD, InputSpec, Teacher, check_batch, register_teacher
from teachers.preprocess import resize_frames, to_tensor


MAX_BOXES = 8
DEFAULT_ARCH = "fasterrcnn_tiny_fpn"
# mean/std here mirror the detector transform's image_mean/image_std, which does the normalising.
DEFAULT_SPEC = InputSpec(frame_rate=4.0, size=128)


def detector_labels(kinds: Tensor | int) -> Tensor | int:
    """Store kind codes (``HAND``, ``OBJECT``) -> the detector's class labels: torchvision's detectors
    reserve label 0 for background, so every code moves up by one."""
    return kinds + 1


def store_kinds(labels: Tensor) -> Tensor:
    """The detector's class labels -> store kind codes (the inverse of :func:`detector_labels`)."""
    return labels - 1


DETECTOR_LABEL_HAND = detector_labels(HAND)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def tiny_backbone(widths: Sequence[int] = (16, 32, 64, 64), strides: Sequence[int] = (2, 2, 2, 1)) -> nn.Sequential:
    """conv-BN-ReLU x len(widths); one feature map (stride prod(strides)) with ``out_channels`` as FasterRCNN wants."""
    # one flat Sequential (parameter names 0.weight, 1.weight, ...), as the weights files of this arch have it
    layers = [m for c, w, s in zip((3, *widths[:-1]), widths, strides) for m in _conv_bn_relu(c, w, s)]
    backbone = nn.Sequential(*layers)
    backbone.out_channels = widths[-1]
    return backbone


class TinyFPNBackbone(nn.Module):
    """conv-BN-ReLU stages, each halving the size; an FPN top-down path from the last stage down to
    stage ``first_level`` (lateral 1x1 convs, nearest upsampling, a 3x3 conv), plus the map's mean
    through a 1x1 conv added to every cell. Returns that one map (stride ``2 ** (first_level + 1)``).

    torchvision's FeaturePyramidNetwork computes (and parameterises) an output per level; only the
    finest is used here, so the same top-down path is written out for it alone.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 64, 64, 64), out_channels: int = 64, first_level: int = 1):
        super().__init__()
        self.stages = nn.ModuleList(_conv_bn_relu(c, w) for c, w in zip((3, *widths[:-1]), widths))
        self.lateral = nn.ModuleList(nn.Conv2d(w, out_channels, 1) for w in widths[first_level:])
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.scene = nn.Conv2d(out_channels, out_channels, 1)
        self.first_level = first_level
        self.out_channels = out_channels
        for m in [*self.lateral, self.smooth, self.scene]:  # FeaturePyramidNetwork's init
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        levels = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self.first_level:
                levels.append(x)
        top = self.lateral[-1](levels[-1])
        for level, lateral in zip(levels[-2::-1], self.lateral[-2::-1]):
            top = lateral(level) + nn.functional.interpolate(top, size=level.shape[-2:], mode="nearest")
        out = self.smooth(top)
        return out + self.scene(out.mean((2, 3), keepdim=True))


def roi_align_matmul(
    features: Tensor, boxes: list[Tensor], output_size: int, spatial_scale: float, sampling_ratio: int
) -> Tensor:
    """``torchvision.ops.roi_align(features, boxes, output_size, spatial_scale, sampling_ratio)`` (aligned=False,
    ``sampling_ratio`` > 0) as one sparse [K*S*S, B*H*W] matrix of bilinear weights times the features.

    Written by hand for speed: torchvision's CPU backward recomputes every bilinear weight for every
    channel and took a fifth of a detector training step (19 ms of ~185 at batch 8 on 2 cores); the
    product's backward is the transposed product (~6 ms). Same numbers, forward and backward.
    """
    b, c, h, w = features.shape
    s, sr = output_size, sampling_ratio
    dtype, device = features.dtype, features.device
    rois = torch.cat(boxes).to(dtype) * spatial_scale
    k = len(rois)
    image = torch.repeat_interleave(torch.arange(b, device=device), torch.tensor([len(x) for x in boxes], device=device))
    steps = (torch.arange(s * sr, dtype=dtype, device=device) + 0.5) / sr  # sample positions, in bins

    def corners(start: Tensor, end: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Per sample along one axis: the two neighbouring pixel indices and their weights [K, S*sr, 2],
        with roi_align's rules (ROIs at least 1 px, samples beyond -1 or n dropped, clamped to the edge)."""
        v = start[:, None] + ((end - start).clamp(min=1) / s)[:, None] * steps
        inside = ((v >= -1) & (v <= n)).to(dtype)
        v = v.clamp(min=0)
        low = v.floor().clamp(max=n - 1)
        frac = torch.where(low >= n - 1, 0.0, v - low)
        low = low.long()
        return torch.stack([low, (low + 1).clamp(max=n - 1)], -1), torch.stack([1 - frac, frac], -1) * inside[..., None]

    (xi, xw), (yi, yw) = corners(rois[:, 0], rois[:, 2], w), corners(rois[:, 1], rois[:, 3], h)
    col = image[:, None, None, None, None] * (h * w) + yi[:, :, None, :, None] * w + xi[:, None, :, None, :]
    weight = yw[:, :, None, :, None] * xw[:, None, :, None, :] / (sr * sr)  # [K, S*sr, S*sr, 2, 2]
    cell = torch.arange(s, device=device).repeat_interleave(sr)
    row = torch.arange(k, device=device)[:, None, None] * (s * s) + cell[:, None] * s + cell[None, :]
    # duplicate (row, col) pairs are summed by the product, so the matrix needs no coalescing
    matrix = torch.sparse_coo_tensor(
        torch.stack([row[..., None, None].expand_as(col).reshape(-1), col.reshape(-1)]), weight.reshape(-1),
        (k * s * s, b * h * w), check_invariants=False,
    )
    pooled = torch.sparse.mm(matrix, features.permute(0, 2, 3, 1).reshape(b * h * w, c))
    return pooled.reshape(k, s, s, c).permute(0, 3, 1, 2)


class MatmulRoIAlign(MultiScaleRoIAlign):
    """MultiScaleRoIAlign over one feature map through :func:`roi_align_matmul` (same numbers, faster on CPU)."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        if len(self.featmap_names) != 1 or self.sampling_ratio <= 0:
            return super().forward(x, boxes, image_shapes)
        features = x[self.featmap_names[0]]
        # the scale MultiScaleRoIAlign infers: feature size over the largest image, a power of 2
        scale = 2.0 ** round(math.log2(features.shape[-2] / max(h for h, _ in image_shapes)))
        return roi_align_matmul(features, boxes, self.output_size[0], scale, self.sampling_ratio)


class ContactHead(nn.Sequential):
    """MLP from box-head features to the 5 contact-state logits (100DOH: 2048 -> 32 -> 5)."""

    def __init__(self, in_features: int, hidden: int = 64, num_states: int = len(CONTACT_STATES)) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_states))


def contact_loss(logits: Tensor, states: Tensor) -> dict[str, Tensor]:
    """Cross-entropy of hand contact states; zero (and gradient-free) for a batch without hands."""
    if states.numel() == 0:
        return {"loss_contact": logits.sum() * 0.0}
    return {"loss_contact": nn.functional.cross_entropy(logits, states)}


def enlarge_boxes(boxes: Tensor, ratio: float, image_size: tuple[int, int]) -> Tensor:
    """Grow xyxy boxes by ``ratio`` of their width/height on each side, clipped to the image."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return clip_boxes_to_image(boxes + wh * ratio * boxes.new_tensor([-1.0, -1.0, 1.0, 1.0]), image_size)


class HandObjectDetector(nn.Module):
    """torchvision FasterRCNN (``detector``) plus a hand contact-state head (``contact_head``).

    ``forward(images, targets)`` mirrors ``GeneralizedRCNN.forward``: in training
    it returns the detector's losses plus ``loss_contact`` (contact head on the
    ground-truth hand boxes, jittered by up to ``box_jitter`` of their size so it
    learns from imperfect boxes like those it will see); in eval it returns
    torchvision's detections with a ``contact`` entry per box (0 for objects).
    Targets: ``boxes`` [M,4] xyxy px, ``labels`` [M] (:func:`detector_labels`), ``contact`` [M].
    """

    def __init__(
        self, detector: FasterRCNN, contact_head: nn.Module, contact_context: float = 0.3, box_jitter: float = 0.1
    ) -> None:
        super().__init__()
        self.detector = detector
        self.contact_head = contact_head
        self.contact_context = contact_context
        self.box_jitter = box_jitter

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        det = self.detector
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, targets = det.transform(images, targets)
        features = det.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, rpn_losses = det.rpn(image_list, features, targets)
        detections, roi_losses = det.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            hands = [t["labels"] == DETECTOR_LABEL_HAND for t in targets]
            boxes = [self._jitter(t["boxes"][h]) for t, h in zip(targets, hands)]
            states = torch.cat([t["contact"][h] for t, h in zip(targets, hands)]).long()
            logits = self.contact_logits(features, boxes, image_list.image_sizes)
            return {**rpn_losses, **roi_losses, **contact_loss(logits, states)}
        hands = [d["labels"] == DETECTOR_LABEL_HAND for d in detections]
        logits = self.contact_logits(features, [d["boxes"][h] for d, h in zip(detections, hands)], image_list.image_sizes)
        for d, h, lg in zip(detections, hands, logits.split([int(h.sum()) for h in hands])):
            d["contact"] = torch.zeros_like(d["labels"])
            d["contact"][h] = lg.argmax(1)
        return det.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def contact_logits(self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """Contact-state logits [sum(len(b)), 5] for hand boxes given per image in input coordinates."""
        heads = self.detector.roi_heads
        context = [enlarge_boxes(b, self.contact_context, size) for b, size in zip(boxes, image_sizes)]
        if sum(len(b) for b in context) == 0:
            return features["0"].new_zeros((0, len(CONTACT_STATES)))
        return self.contact_head(heads.box_head(heads.box_roi_pool(features, context, image_sizes)))

    def _jitter(self, boxes: Tensor) -> Tensor:
        wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        jittered = boxes + (torch.rand_like(boxes) * 2 - 1) * self.box_jitter * wh
        return torch.cat([jittered[:, :2], torch.maximum(jittered[:, 2:], jittered[:, :2] + 1)], 1)


# name -> (backbone builder, RoIAlign sampling ratio); see the module docstring.
ARCHS = {
    "fasterrcnn_tiny": (tiny_backbone, 2),
    "fasterrcnn_tiny_fpn": (TinyFPNBackbone, 1),
}


def build(
    arch: str = DEFAULT_ARCH,
    *,
    backbone: dict[str, Any] | None = None,
    anchor_sizes: Sequence[int] = (8, 16, 32, 64),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    roi_size: int = 5,
    representation_size: int = 256,
    contact_hidden: int = 64,
    contact_context: float = 0.3,
    image_size: int = DEFAULT_SPEC.size,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    box_batch_size_per_image: int = 64,
    rpn_batch_size_per_image: int = 128,
    detections_per_img: int = 2 * MAX_BOXES,
) -> HandObjectDetector:
    """The small hand-object detector (see module docstring); every part is torchvision's except the backbone,
    the contact head and RoIAlign's CPU arithmetic. ``backbone`` holds keyword arguments of the arch's backbone."""
    if arch not in ARCHS:
        raise ValueError(f"unknown hand-object architecture {arch!r}; known: {sorted(ARCHS)}")
    make_backbone, sampling_ratio = ARCHS[arch]
    features = make_backbone(**(backbone or {}))
    detector = FasterRCNN(
        features,
        num_classes=None,  # given by box_predictor: background, hand, object
        min_size=image_size,
        max_size=image_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        rpn_anchor_generator=AnchorGenerator((tuple(anchor_sizes),), (tuple(aspect_ratios),)),
        # Few proposals: small images hold a handful of boxes, and RoIAlign and the box head cost per
        # proposal. In training, 64 after NMS leaves the box head's negatives among the RPN's best guesses
        # (heads, forearms) rather than empty background.
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=64,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        box_roi_pool=MatmulRoIAlign(["0"], roi_size, sampling_ratio=sampling_ratio),
        box_head=TwoMLPHead(features.out_channels * roi_size**2, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, 1 + len(HANDOBJ_KINDS)),
        box_batch_size_per_image=box_batch_size_per_image,
        box_detections_per_img=detections_per_img,
    )
    return HandObjectDetector(detector, ContactHead(representation_size, contact_hidden), contact_context)


# ---------------------------------------------------------------- inference


def detect(
    model: HandObjectDetector, frames: np.ndarray, *, size: int = DEFAULT_SPEC.size, max_batch: int = 32
) -> list[dict[str, np.ndarray]]:
    """Detections for uint8 frames [N,H,W,3]: per frame ``boxes`` [M,4] (0-1, xyxy), ``scores`` [M],
    ``kinds`` [M] (store codes: ``HAND``, ``OBJECT``), ``contact`` [M]; best score first."""
    device = next(model.parameters()).device
    model.eval()
    out: list[dict[str, np.ndarray]] = []
    with torch.inference_mode():
        for i in range(0, len(frames), max_batch):
            images = to_tensor(resize_frames(frames[i : i + max_batch], size), None, device)
            for d in model(list(images)):
                order = d["scores"].argsort(descending=True)
                out.append({
                    "boxes": (d["boxes"][order] / size).clamp(0, 1).cpu().numpy(),
                    "scores": d["scores"][order].cpu().numpy(),
                    "kinds": store_kinds(d["labels"][order]).cpu().numpy(),
                    "contact": d["contact"][order].cpu().numpy(),
                })
    return out


def pack_boxes(detections: list[dict[str, np.ndarray]], max_boxes: int = MAX_BOXES) -> np.ndarray:
    """Store rows float32 [N, K, 7] from ``detect`` output; the top ``max_boxes`` by score, zero-padded."""
    rows = np.zeros((len(detections), max_boxes, 7), np.float32)
    for i, d in enumerate(detections):
        k = min(max_boxes, len(d["scores"]))
        rows[i, :k, :4] = d["boxes"][:k]
        rows[i, :k, 4] = d["scores"][:k]
        rows[i, :k, 5] = d["kinds"][:k]
        rows[i, :k, 6] = d["contact"][:k]
    return rows


@register_teacher("handobj")
class HandObjectTeacher(Teacher):
    """Hand and object boxes with hand contact states for every teacher frame."""

    build = staticmethod(build)

    def __init__(self, model: nn.Module, meta: dict[str, Any], device: str | torch.device = "cpu"):
        super().__init__(model, meta, device)
        self.max_boxes = int(meta.get("max_boxes", MAX_BOXES))

    def output_shapes(self, num_frames: int) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"handobj/boxes": ((num_frames, self.max_boxes, 7), "float16")}

    def predict(self, frames: np.ndarray, times: np.ndarray, *, max_batch: int = 64) -> dict[str, np.ndarray]:
        check_batch(frames, times)
        valid = np.isfinite(times)
        boxes = np.zeros((*times.shape, self.max_boxes, 7), np.float32)
        if valid.any():
            boxes[valid] = pack_boxes(self.detect_frames(frames[valid], max_batch), self.max_boxes)
        return {"handobj/boxes": boxes}

    def detect_frames(self, frames: np.ndarray, max_batch: int) -> list[dict[str, np.ndarray]]:
        """:func:`detect`'s output (boxes in 0-1 of the frame) for uint8 RGB frames [N, H, W, 3]."""
        return detect(self.model, frames, size=self.spec.size, max_batch=max_batch)


def make_meta(spec: InputSpec = DEFAULT_SPEC, **extra: Any) -> dict[str, Any]:
    """Metadata for save_teacher: kinds, contact states, input spec, plus e.g. train metrics and data source."""
    return {
        "classes": list(HANDOBJ_KINDS),
        "contact_states": list(CONTACT_STATES),
        "max_boxes": MAX_BOXES,
        "spec": spec.to_dict(),
        **extra,
    }
