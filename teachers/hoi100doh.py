"""Interaction-Map teacher of the paper: the "100 Days of Hands" hand-object detector (Shan et al.,
CVPR 2020), rebuilt on torchvision modules and ops so the authors' released checkpoint
(``faster_rcnn_1_8_132028.pth``, https://github.com/ddshan/hand_object_detector) loads by name.

The module tree repeats the authors' (``lib/model/faster_rcnn/{faster_rcnn,resnet}.py``,
``rpn/rpn.py``, ``extension_layers/extension_layers.py``), so their state dict loads strictly:

* ``RCNN_base`` = ResNet-101 conv1, bn1, relu, maxpool, layer1..layer3 (stride 16, 1024 channels);
  ``RCNN_top`` = layer4, averaged to 2048 per RoI (the C4 layout). Caffe-style ResNet: the stride of a
  bottleneck sits on its first 1x1 conv (torchvision puts it on the 3x3), and the stem max-pool has no
  padding and rounds up.
* ``RCNN_rpn``: 3x3 conv to 512 + ReLU, ``RPN_cls_score`` (2 logits, background/foreground, per anchor:
  channels [0, A) background, [A, 2A) foreground, softmax over each pair) and ``RPN_bbox_pred``;
  12 anchors per cell of the stride-16 map (scales 8/16/32/64 x 16 px, ratios 0.5/1/2, py-faster-rcnn's
  rounded anchors around (7.5, 7.5)).
* RoIAlign 7x7 at 1/16 (their ``pooling_mode`` 'align': aligned=False, adaptive sampling), then
  ``RCNN_cls_score`` over ``__background__, targetobject, hand`` and per-class ``RCNN_bbox_pred``
  (deltas scaled by BBOX_NORMALIZE_STDS 0.1/0.1/0.2/0.2, as their res101 config trains them).
* ``extension_layer``: contact state (2048 -> 32 -> ReLU -> Dropout -> 5) and the offset vector
  (2048 -> 3: magnitude, unit dx, dy) from the RoI enlarged by 30 % per side; hand side (2048 -> 1,
  sigmoid > 0.5 = right) from the RoI itself. Computed per proposal and carried to its detection.

Their box arithmetic has the py-faster-rcnn "+1" pixel convention (widths ``x2 - x1 + 1``, NMS areas
too), which torchvision's BoxCoder and NMS lack: decoding is written here by hand and NMS runs on
boxes whose far corner is moved by one pixel, which gives their IoU exactly.

Preprocessing as their ``demo.py``: BGR, minus ``PIXEL_MEANS`` (0-255, no scaling by a std), resized
(bilinear) so the short side is 600 unless the long side would pass 1000. Post-processing as the demo:
per class (object, hand) keep scores above the class threshold (0.5 each), NMS at 0.3, boxes divided
by the resize scale (original-image pixels).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import nms, roi_align

from pipeline.io.signals_schema import CONTACT_STATES, HAND, HANDOBJ_KINDS, OBJECT
from teachers.base import InputSpec, register_teacher
from teachers.handobj import MAX_BOXES, HandObjectTeacher

ARCH = "faster_rcnn_r101_c4"
CLASSES = ("__background__", "targetobject", "hand")  # the checkpoint's class order
PIXEL_MEANS_BGR = (102.9801, 115.9465, 122.7717)  # cfg.PIXEL_MEANS
SHORT_SIDE, MAX_SIZE = 600, 1000  # cfg.TEST.SCALES, cfg.TEST.MAX_SIZE
FEAT_STRIDE = 16
ANCHOR_SCALES, ANCHOR_RATIOS = (8, 16, 32, 64), (0.5, 1.0, 2.0)
POOLING_SIZE = 7
BBOX_NORMALIZE_STDS = (0.1, 0.1, 0.2, 0.2)
CONTACT_CONTEXT = 0.3  # enlarge_bbox ratio for the contact and offset heads
RPN_PRE_NMS, RPN_POST_NMS, RPN_NMS = 6000, 300, 0.7  # cfg.TEST.RPN_*
# InputSpec in 0-1 RGB units: (x/255 - m/255) / (1/255) = x - m, their caffe-style normalisation.
SPEC = InputSpec(
    frame_rate=4.0, size=SHORT_SIDE, mean=tuple(m / 255 for m in PIXEL_MEANS_BGR[::-1]), std=(1 / 255,) * 3
)


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds per class and the per-class NMS IoU (demo.py: --thresh_hand, --thresh_obj, cfg.TEST.NMS)."""

    hand: float = 0.5
    object: float = 0.5
    nms: float = 0.3


# ---------------------------------------------------------------- the network


def caffe_resnet(depth: int = 101, **kwargs: Any) -> torchvision.models.ResNet:
    """torchvision ResNet-50/101/152 in the Caffe/MSRA form: each stage's stride on the first 1x1 conv of
    its first bottleneck (detectron2's ``stride_in_1x1``); parameter names and shapes are torchvision's."""
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None, **kwargs)
    for layer in (resnet.layer2, resnet.layer3, resnet.layer4):
        block = layer[0]
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    return resnet


class RPN(nn.Module):
    """The authors' ``_RPN`` parameters (``RPN_Conv``, ``RPN_cls_score``, ``RPN_bbox_pred``)."""

    def __init__(self, in_channels: int = 1024, num_anchors: int = len(ANCHOR_SCALES) * len(ANCHOR_RATIOS)):
        super().__init__()
        self.RPN_Conv = nn.Conv2d(in_channels, 512, 3, 1, 1)
        self.RPN_cls_score = nn.Conv2d(512, 2 * num_anchors, 1)
        self.RPN_bbox_pred = nn.Conv2d(512, 4 * num_anchors, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Foreground probability [B, H*W*A] and deltas [B, H*W*A, 4], cell-major then anchor (their order)."""
        x = torch.relu(self.RPN_Conv(features))
        logits = self.RPN_cls_score(x)
        b, two_a, h, w = logits.shape
        a = two_a // 2
        fg = torch.softmax(logits.view(b, 2, a, h, w), dim=1)[:, 1]
        deltas = self.RPN_bbox_pred(x).view(b, a, 4, h, w)
        return fg.permute(0, 2, 3, 1).reshape(b, -1), deltas.permute(0, 3, 4, 1, 2).reshape(b, -1, 4)


class ExtensionLayer(nn.Module):
    """The authors' ``extension_layer``: contact state (5), offset vector (3), hand side (1 logit)."""

    def __init__(self, in_features: int = 2048):
        super().__init__()
        self.hand_contact_state_layer = nn.Sequential(
            nn.Linear(in_features, 32), nn.ReLU(), nn.Dropout(p=0.5), nn.Linear(32, len(CONTACT_STATES))
        )
        self.hand_dydx_layer = nn.Linear(in_features, 3)
        self.hand_lr_layer = nn.Linear(in_features, 1)

    def forward(self, feat: Tensor, feat_enlarged: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        offset = self.hand_dydx_layer(feat_enlarged)
        # magnitude as is, direction as a unit vector scaled by 0.1 (hand_dxdymagnitude_part)
        offset = torch.cat([offset[:, :1], 0.1 * nn.functional.normalize(offset[:, 1:], dim=1)], 1)
        return self.hand_contact_state_layer(feat_enlarged), offset, self.hand_lr_layer(feat)


def generate_anchors(scales: Sequence[float] = ANCHOR_SCALES, ratios: Sequence[float] = ANCHOR_RATIOS,
                     base_size: int = FEAT_STRIDE) -> Tensor:
    """py-faster-rcnn's cell anchors [len(ratios)*len(scales), 4], ratio-major: the base_size square
    (0, 0, base-1, base-1) reshaped to each ratio at constant area (sides rounded), then scaled."""
    ctr = (base_size - 1) / 2
    ratios_t = torch.tensor(ratios, dtype=torch.float64)
    ws = torch.round(torch.sqrt(base_size * base_size / ratios_t))
    hs = torch.round(ws * ratios_t)
    scales_t = torch.tensor(scales, dtype=torch.float64)
    ws, hs = (ws[:, None] * scales_t).reshape(-1), (hs[:, None] * scales_t).reshape(-1)
    return torch.stack([ctr - (ws - 1) / 2, ctr - (hs - 1) / 2, ctr + (ws - 1) / 2, ctr + (hs - 1) / 2], 1).float()


def decode_boxes(boxes: Tensor, deltas: Tensor) -> Tensor:
    """bbox_transform_inv: boxes [N, 4] and deltas [N, 4k] -> [N, 4k] with the +1 width convention."""
    widths = boxes[:, 2:3] - boxes[:, 0:1] + 1.0
    heights = boxes[:, 3:4] - boxes[:, 1:2] + 1.0
    ctr_x, ctr_y = boxes[:, 0:1] + 0.5 * widths, boxes[:, 1:2] + 0.5 * heights
    cx, cy = deltas[:, 0::4] * widths + ctr_x, deltas[:, 1::4] * heights + ctr_y
    w, h = torch.exp(deltas[:, 2::4]) * widths, torch.exp(deltas[:, 3::4]) * heights
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], 2).reshape(deltas.shape)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clamp [N, 4k] boxes to [0, width-1] x [0, height-1] (their clip_boxes)."""
    limits = boxes.new_tensor([width - 1, height - 1] * 2).repeat(boxes.shape[1] // 4)
    return torch.minimum(boxes.clamp(min=0), limits)


def nms_plus_one(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    """NMS with the +1 area convention of their kernel: torchvision's NMS on boxes grown by 1 px."""
    return nms(boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0]), scores, iou)


def enlarge_rois(rois: Tensor, ratio: float, height: int, width: int) -> Tensor:
    """Their enlarge_bbox: grow by ``ratio`` of the width/height per side, clamp at 0, and clamp x2 at the
    image HEIGHT and y2 at its WIDTH -- the two are swapped in their code (im_info is (h, w, scale)); the
    heads were trained on boxes clamped that way, so it is kept."""
    wh = (rois[:, 2:] - rois[:, :2]).repeat(1, 2)
    out = rois + wh * ratio * rois.new_tensor([-1.0, -1.0, 1.0, 1.0])
    out[:, :2] = out[:, :2].clamp(min=0)
    out[:, 2] = out[:, 2].clamp(max=height)
    out[:, 3] = out[:, 3].clamp(max=width)
    return out


class HandObjectRCNN(nn.Module):
    """Faster R-CNN C4 on a Caffe-style ResNet with the 100DOH extension heads; names as the authors'.

    ``forward(images, image_sizes)`` takes preprocessed images [B, 3, H, W] (BGR minus means, see
    :func:`preprocess`) and the (h, w) each occupies, and returns per image a dict of per-RoI
    outputs: ``rois`` [R, 4], ``probs`` [R, 3], ``boxes`` [R, 12] (decoded per class, clipped),
    ``contact`` [R, 5] logits, ``offset`` [R, 3], ``side`` [R] logits -- what their forward returns
    before demo.py's per-class filtering (:func:`select_detections`).
    """

    def __init__(self, depth: int = 101, num_classes: int = len(CLASSES)):
        super().__init__()
        r = caffe_resnet(depth)
        r.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        self.RCNN_base = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)
        self.RCNN_top = nn.Sequential(r.layer4)
        self.RCNN_rpn = RPN(r.layer3[-1].conv3.out_channels)
        self.RCNN_cls_score = nn.Linear(2048, num_classes)
        self.RCNN_bbox_pred = nn.Linear(2048, 4 * num_classes)
        self.extension_layer = ExtensionLayer(2048)
        self.register_buffer("cell_anchors", generate_anchors(), persistent=False)
        self.register_buffer("bbox_stds", torch.tensor(BBOX_NORMALIZE_STDS).repeat(num_classes), persistent=False)

    def _head(self, features: Tensor, rois: Tensor) -> Tensor:
        pooled = roi_align(features, rois, POOLING_SIZE, 1.0 / FEAT_STRIDE, sampling_ratio=0, aligned=False)
        return self.RCNN_top(pooled).mean((2, 3))

    def proposals(self, features: Tensor, image_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """Per image up to 300 proposals [R, 4] (cfg.TEST: top 6000 by score, NMS 0.7, no minimum size)."""
        fg, deltas = self.RCNN_rpn(features)
        h, w = features.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, device=fg.device), torch.arange(w, device=fg.device), indexing="ij")
        shifts = (torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4) * FEAT_STRIDE).to(fg.dtype)
        anchors = (shifts + self.cell_anchors.to(fg.dtype)).reshape(-1, 4)
        out = []
        for scores, d, (ih, iw) in zip(fg, deltas, image_sizes):
            boxes = clip_boxes(decode_boxes(anchors, d), ih, iw)
            order = scores.argsort(descending=True)[:RPN_PRE_NMS]
            keep = nms_plus_one(boxes[order], scores[order], RPN_NMS)[:RPN_POST_NMS]
            out.append(boxes[order[keep]])
        return out

    def forward(self, images: Tensor, image_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
        features = self.RCNN_base(images)
        rois = self.proposals(features, image_sizes)
        padded = [enlarge_rois(r, CONTACT_CONTEXT, h, w) for r, (h, w) in zip(rois, image_sizes)]
        feat, feat_padded = self._head(features, rois), self._head(features, padded)
        contact, offset, side = self.extension_layer(feat, feat_padded)
        probs = torch.softmax(self.RCNN_cls_score(feat), 1)
        deltas = self.RCNN_bbox_pred(feat) * self.bbox_stds
        out, start = [], 0
        for r, (h, w) in zip(rois, image_sizes):
            s = slice(start, start + len(r))
            start += len(r)
            out.append({
                "rois": r, "probs": probs[s], "boxes": clip_boxes(decode_boxes(r, deltas[s]), h, w),
                "contact": contact[s], "offset": offset[s], "side": side[s, 0],
            })
        return out



def build(arch: str = ARCH, depth: int = 101) -> HandObjectRCNN:
    if arch != ARCH:
        raise ValueError(f"unknown 100DOH architecture {arch!r}; known: [{ARCH!r}]")
    return HandObjectRCNN(depth)


# ---------------------------------------------------------------- pre- and post-processing


def preprocess(frames_rgb: Sequence[np.ndarray], short_side: int = SHORT_SIDE, max_size: int = MAX_SIZE
               ) -> tuple[Tensor, list[tuple[int, int]], list[float]]:
    """demo.py's _get_image_blob for uint8 RGB frames: BGR minus PIXEL_MEANS, resized (bilinear) by
    ``short_side / min(h, w)`` unless that makes the long side pass ``max_size`` (then
    ``max_size / max(h, w)``); zero-padded bottom/right into one batch. Returns the batch
    [B, 3, H, W], each image's resized (h, w) and its scale."""
    images, sizes, scales = [], [], []
    for frame in frames_rgb:
        im = frame[..., ::-1].astype(np.float32) - np.asarray(PIXEL_MEANS_BGR, np.float32)
        h, w = im.shape[:2]
        scale = short_side / min(h, w)
        if np.round(scale * max(h, w)) > max_size:
            scale = max_size / max(h, w)
        im = cv2.resize(im, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        images.append(im)
        sizes.append(im.shape[:2])
        scales.append(scale)
    blob = np.zeros((len(images), max(h for h, _ in sizes), max(w for _, w in sizes), 3), np.float32)
    for b, im in zip(blob, images):
        b[: im.shape[0], : im.shape[1]] = im
    return torch.from_numpy(blob).permute(0, 3, 1, 2), sizes, scales


def select_detections(out: dict[str, Tensor], scale: float, thresholds: Thresholds = Thresholds()
                      ) -> dict[str, np.ndarray]:
    """demo.py's per-class loop for one image: scores above the class threshold, NMS, boxes / scale.

    Returns ``boxes`` [M, 4] in original-image pixels, ``scores``, ``kinds`` (0 hand, 1 object; the store's
    codes), ``contact`` (0 for objects), ``side`` (1 right, 0 left) and ``offset`` [M, 3], best score first."""
    found = []
    for label, kind, threshold in ((CLASSES.index("hand"), HAND, thresholds.hand),
                                   (CLASSES.index("targetobject"), OBJECT, thresholds.object)):
        scores = out["probs"][:, label]
        idx = torch.nonzero(scores > threshold).view(-1)
        idx = idx[scores[idx].argsort(descending=True)]
        boxes = out["boxes"][idx, 4 * label : 4 * label + 4]
        idx = idx[nms_plus_one(boxes, scores[idx], thresholds.nms)]
        contact = out["contact"][idx].argmax(1) if kind == HAND else torch.zeros_like(idx)
        found.append((out["boxes"][idx, 4 * label : 4 * label + 4] / scale, scores[idx], torch.full_like(idx, kind),
                      contact, (torch.sigmoid(out["side"][idx]) > 0.5).long(), out["offset"][idx]))
    boxes, scores, kinds, contact, side, offset = (torch.cat(parts) for parts in zip(*found))
    order = scores.argsort(descending=True, stable=True)
    return {k: v[order].cpu().numpy() for k, v in
            dict(boxes=boxes, scores=scores, kinds=kinds, contact=contact, side=side, offset=offset).items()}


def detect(model: HandObjectRCNN, frames_rgb: Sequence[np.ndarray], *, thresholds: Thresholds = Thresholds(),
           short_side: int = SHORT_SIDE, max_size: int = MAX_SIZE, max_batch: int = 4) -> list[dict[str, np.ndarray]]:
    """Detections for uint8 RGB frames (any sizes): per frame the dict of :func:`select_detections`."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(frames_rgb), max_batch):
            blob, sizes, scales = preprocess(frames_rgb[i : i + max_batch], short_side, max_size)
            for o, scale in zip(model(blob.to(device), sizes), scales):
                out.append(select_detections(o, scale, thresholds))
    return out


# ---------------------------------------------------------------- the teacher


def make_meta(thresholds: Thresholds = Thresholds(), short_side: int = SHORT_SIDE, max_size: int = MAX_SIZE,
              **extra: Any) -> dict[str, Any]:
    """Metadata for save_teacher: the store's kinds and contact states, preprocessing and thresholds."""
    spec = InputSpec(SPEC.frame_rate, short_side, SPEC.mean, SPEC.std)
    return {
        "classes": list(HANDOBJ_KINDS),
        "source_classes": list(CLASSES),
        "contact_states": list(CONTACT_STATES),
        "max_boxes": MAX_BOXES,
        "spec": spec.to_dict(),
        "max_size": max_size,
        "thresholds": asdict(thresholds),
        **extra,
    }


@register_teacher("hoi100doh")
class HandObject100DOHTeacher(HandObjectTeacher):
    """The 100DOH detector as the hand-object teacher: writes ``handobj/boxes`` as ``handobj`` does.

    ``spec.size`` is the short side the frames are resized to (600); ``meta["max_size"]`` caps the
    long side (1000); ``meta["thresholds"]`` holds the hand/object score thresholds and the NMS IoU.
    Hand side and offset vectors are computed but not stored (the store has no columns for them).
    """

    build = staticmethod(build)

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {
            "summary": "Hand-Object: the 100 Days of Hands detector (Shan et al., CVPR 2020), boxes with contact states.",
            "architectures": "Faster R-CNN, caffe-style ResNet-101 C4 (the authors' faster_rcnn_1_8_132028.pth)",
            "input": f"single frames at {SPEC.frame_rate:g} fps, BGR minus the authors' pixel means, short side "
                     f"{SHORT_SIDE} with the long side at most {MAX_SIZE} (aspect kept)",
            "weights": "the authors' checkpoint converted by 'pipeline teachers convert IN --format 100doh --out OUT'",
        }

    def __init__(self, model: nn.Module, meta: dict[str, Any], device: str | torch.device = "cpu"):
        super().__init__(model, meta, device)
        self.max_size = int(meta.get("max_size", MAX_SIZE))
        self.thresholds = Thresholds(**meta.get("thresholds", {}))

    def detect_frames(self, frames: np.ndarray, max_batch: int) -> list[dict[str, np.ndarray]]:
        # at most 8 frames per forward: each brings 2 x 300 RoIs through layer4
        found = detect(self.model, list(frames), thresholds=self.thresholds, short_side=self.spec.size,
                       max_size=self.max_size, max_batch=min(max_batch, 8))
        h, w = frames.shape[1:3]
        for d in found:  # original-image pixels -> 0-1 of the frame
            d["boxes"] = np.clip(d["boxes"] / np.array([w, h, w, h], np.float32), 0, 1)
        return found
