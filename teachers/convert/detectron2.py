"""detectron2 model-zoo Faster R-CNN checkpoints (R50/R101, C4 and FPN) -> torchvision Faster R-CNN.

Model-zoo files (``model_final_*.pkl``, https://github.com/facebookresearch/detectron2/blob/main/MODEL_ZOO.md)
hold ``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": ...}``; they are read
through :mod:`pipeline.io.safe_pickle` (numpy arrays and containers only). A training ``.pth``
(``{"model": {name: tensor}, ...}``) is read with ``torch.load(weights_only=True)``.

Names (detectron2 -> torchvision; FPN models prefix the ResNet with ``backbone.bottom_up.``, C4 with ``backbone.``):

* ``stem.conv1`` / ``.norm`` -> ``backbone.body.conv1`` / ``bn1``; ``res{k}.{i}.conv{j}`` / ``.norm`` ->
  ``backbone.body.layer{k-1}.{i}.conv{j}`` / ``bn{j}``; ``shortcut`` / ``.norm`` -> ``downsample.0`` / ``.1``
* FPN: ``backbone.fpn_lateral{s}`` / ``fpn_output{s}`` -> ``backbone.fpn.inner_blocks.{s-2}.0`` /
  ``layer_blocks.{s-2}.0`` (as ``fasterrcnn_resnet50_fpn``); C4: ``roi_heads.res5.{i}.*`` ->
  ``roi_heads.box_head.res5.{i}.*`` (layer4 on 14x14 RoIs, then the mean)
* ``proposal_generator.rpn_head.{conv,objectness_logits,anchor_deltas}`` -> ``rpn.head.{conv.0.0,cls_logits,bbox_pred}``
* ``roi_heads.box_head.fc{1,2}`` -> ``roi_heads.box_head.fc{6,7}``; ``roi_heads.box_predictor.*`` kept.

Rearranged on the way:

* ``cls_score``: detectron2 puts background LAST, torchvision FIRST -> rows rotated.
* ``bbox_pred``: detectron2 has 4 rows per foreground class, torchvision 4 per class with background
  -> 4 zero rows first (never used). Class-agnostic (4 rows) is tiled to every class.
* RPN outputs: detectron2 orders a cell's anchors size-major, torchvision ratio-major; C4 (5 sizes on one
  map) rows are permuted. FPN has one size per level, where the orders agree.
* ``conv1``: detectron2 reads BGR 0-255 minus [103.53, 116.28, 123.675]; its input channels are
  reversed so the model reads torchvision's RGB, with image_mean/std set to give the same numbers.

Strict: a tensor with no place (a mask or keypoint head, a renamed key) or a place left empty is an
error naming the key. Not yet the same numbers as detectron2: its ROIAlignV2 is ``aligned=True``
(torchvision's MultiScaleRoIAlign is not) and its anchors are not rounded; both can be matched
with a pooler and an anchor generator of our own (torchvision's ``roi_align`` takes ``aligned``),
which is not done yet.
"""
from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from teachers.base import TeacherWeightsError, file_sha256
from teachers.hoi100doh import caffe_resnet

FORMAT = "egoexo-detectron2/1"
WHERE = "detectron2's Faster R-CNN weights are linked from https://github.com/facebookresearch/detectron2/blob/main/MODEL_ZOO.md"
PIXEL_MEAN_BGR = (103.530, 116.280, 123.675)  # detectron2 defaults for the MSRA ResNets of the model zoo
RATIOS = (0.5, 1.0, 2.0)
FPN_SIZES = (32, 64, 128, 256, 512)  # one per level p2..p6
C4_SIZES = (32, 64, 128, 256, 512)  # all on res4
DEPTHS = {6: 50, 23: 101}  # blocks in res4 -> ResNet depth
# buffers some detectron2 versions saved; not weights (anchors follow from the config)
NOT_WEIGHTS = re.compile(r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\.cell_anchors\.\d+)$")


# ---------------------------------------------------------------- the torchvision models


class Res5Head(nn.Module):
    """C4 box head: ResNet layer4 (stride 2 on 14x14 RoIs) and the spatial mean -> [R, 2048]."""

    def __init__(self, res5: nn.Module):
        super().__init__()
        self.res5 = res5

    def forward(self, x: Tensor) -> Tensor:
        return self.res5(x).mean((2, 3))


class C4Backbone(nn.Module):
    """ResNet stem..layer3 (stride 16, 1024 channels) as one feature map."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.body = IntermediateLayerGetter(resnet, {"layer3": "0"})
        self.out_channels = 1024

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return self.body(x)


def build_fasterrcnn(layout: str, depth: int, num_classes: int, **kwargs: Any) -> FasterRCNN:
    """torchvision Faster R-CNN shaped like detectron2's R{depth}-{layout} (``num_classes`` without
    background); Caffe-style ResNet with frozen BatchNorm, RGB input normalised as detectron2's BGR."""
    resnet = caffe_resnet(depth, norm_layer=FrozenBatchNorm2d)
    common = dict(num_classes=None, image_mean=[m / 255 for m in PIXEL_MEAN_BGR[::-1]], image_std=[1 / 255] * 3,
                  min_size=800, max_size=1333) | kwargs  # detectron2's test resize
    if layout == "fpn":
        backbone = BackboneWithFPN(resnet, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [256, 512, 1024, 2048], 256,
                                   extra_blocks=LastLevelMaxPool())
        return FasterRCNN(
            backbone, rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in FPN_SIZES), (RATIOS,) * len(FPN_SIZES)),
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0), box_head=TwoMLPHead(256 * 7 * 7, 1024),
            box_predictor=FastRCNNPredictor(1024, num_classes + 1), **common,
        )
    if layout == "c4":
        common = {"rpn_pre_nms_top_n_test": 6000} | common  # Base-RCNN-C4.yaml: RPN.PRE_NMS_TOPK_TEST 6000
        return FasterRCNN(
            C4Backbone(resnet), rpn_anchor_generator=AnchorGenerator((C4_SIZES,), (RATIOS,)),
            rpn_head=RPNHead(1024, len(C4_SIZES) * len(RATIOS)), box_roi_pool=MultiScaleRoIAlign(["0"], 14, 0),
            box_head=Res5Head(resnet.layer4), box_predictor=FastRCNNPredictor(2048, num_classes + 1), **common,
        )
    raise ValueError(f"unknown detectron2 layout {layout!r}; known: 'c4', 'fpn'")


# ---------------------------------------------------------------- reading and renaming


def read_detectron2(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``model`` dict of a detectron2 checkpoint as tensors (``.pkl`` via the restricted unpickler)."""
    from pipeline.io.safe_pickle import UnsafePickleError, load_restricted, torch_load_refusal

    if not Path(path).is_file():
        raise TeacherWeightsError(path, f"file not found; {WHERE}")
    try:
        if Path(path).suffix == ".pkl":
            ckpt = load_restricted(path)
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except UnsafePickleError as e:
        raise TeacherWeightsError(path, f"refused: {e}") from None
    except pickle.UnpicklingError as e:
        if Path(path).suffix == ".pkl":
            raise TeacherWeightsError(path, f"not a readable detectron2 checkpoint ({e})") from None
        raise TeacherWeightsError(path, f"refused: {torch_load_refusal(e)}") from None
    except Exception as e:  # pickle/torch raise several unrelated types for a bad file
        raise TeacherWeightsError(path, f"not a readable detectron2 checkpoint ({type(e).__name__}: {e})") from None
    model = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(model, dict):
        raise TeacherWeightsError(path, "no 'model' dict of named weights")
    out = {}
    for name, value in model.items():
        if not isinstance(value, (np.ndarray, Tensor)):
            raise TeacherWeightsError(path, f"key {name!r} holds {type(value).__name__}, not an array")
        out[name] = torch.as_tensor(np.asarray(value) if isinstance(value, np.ndarray) else value).clone()
    return out


_RESNET_RULES = [  # (detectron2 pattern after the ResNet prefix, torchvision replacement)
    (r"stem\.conv1\.weight", "conv1.weight"),
    (r"stem\.conv1\.norm\.(\w+)", r"bn1.\1"),
    (r"res(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight"),
    (r"res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}"),
    (r"res(\d)\.(\d+)\.shortcut\.weight", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (r"res(\d)\.(\d+)\.shortcut\.norm\.(\w+)", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}"),
]
_HEAD_NAMES = {
    "proposal_generator.rpn_head.conv": "rpn.head.conv.0.0",
    "proposal_generator.rpn_head.objectness_logits": "rpn.head.cls_logits",
    "proposal_generator.rpn_head.anchor_deltas": "rpn.head.bbox_pred",
    "roi_heads.box_head.fc1": "roi_heads.box_head.fc6",
    "roi_heads.box_head.fc2": "roi_heads.box_head.fc7",
    "roi_heads.box_predictor.cls_score": "roi_heads.box_predictor.cls_score",
    "roi_heads.box_predictor.bbox_pred": "roi_heads.box_predictor.bbox_pred",
}


def _resnet_name(rest: str) -> str | None:
    for pattern, repl in _RESNET_RULES:
        if re.fullmatch(pattern, rest):
            return re.sub(pattern, repl, rest)
    return None


def torchvision_name(name: str, layout: str) -> str | None:
    """The torchvision name of a detectron2 tensor in ``layout`` ('fpn' or 'c4'); None when it has no place."""
    prefix, _, leaf = name.rpartition(".")
    if prefix in _HEAD_NAMES and leaf in ("weight", "bias"):
        return f"{_HEAD_NAMES[prefix]}.{leaf}"
    resnet_prefix = "backbone.bottom_up." if layout == "fpn" else "backbone."
    if name.startswith(resnet_prefix):
        renamed = _resnet_name(name[len(resnet_prefix):])
        # res5 lives in the backbone of FPN models and in the box head of C4 ones
        return f"backbone.body.{renamed}" if renamed and (layout == "fpn" or "layer4" not in renamed) else None
    fpn = re.fullmatch(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias)", name)
    if fpn and layout == "fpn":
        return f"backbone.fpn.{'inner' if fpn[1] == 'lateral' else 'layer'}_blocks.{int(fpn[2]) - 2}.0.{fpn[3]}"
    if layout == "c4" and name.startswith("roi_heads.res5."):
        renamed = _resnet_name("res5." + name[len("roi_heads.res5."):])
        return renamed and f"roi_heads.box_head.res5.{renamed[len('layer4.'):]}"
    return None


def describe(weights: dict[str, Tensor], path: str | os.PathLike = "") -> tuple[str, int, int]:
    """(layout, ResNet depth, foreground classes) read off the tensor names and shapes."""
    layout = "fpn" if any(k.startswith("backbone.bottom_up.") for k in weights) else "c4"
    prefix = "backbone.bottom_up.res4." if layout == "fpn" else "backbone.res4."
    blocks = {int(k[len(prefix):].split(".")[0]) for k in weights if k.startswith(prefix)}
    if len(blocks) not in DEPTHS:
        raise TeacherWeightsError(path, f"{len(blocks)} blocks under {prefix}*: not a ResNet-50/101 "
                                  f"{layout.upper()} model (6 or 23 expected)")
    cls = weights.get("roi_heads.box_predictor.cls_score.weight")
    if cls is None:
        raise TeacherWeightsError(path, "key 'roi_heads.box_predictor.cls_score.weight' missing: not a Faster R-CNN")
    return layout, DEPTHS[len(blocks)], cls.shape[0] - 1


def convert_detectron2_state(weights: dict[str, Tensor], path: str | os.PathLike = "") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """detectron2 tensors -> (torchvision FasterRCNN state dict, {layout, depth, num_classes}), strictly."""
    layout, depth, num_classes = describe(weights, path)
    out: dict[str, Tensor] = {}
    for name, value in weights.items():
        if NOT_WEIGHTS.match(name):
            continue
        target = torchvision_name(name, layout)
        if target is None:
            raise TeacherWeightsError(path, f"key {name!r} has no place in a torchvision Faster R-CNN "
                                      f"R{depth}-{layout.upper()} (left over; only Faster R-CNN checkpoints convert)")
        out[target] = value
    out["backbone.body.conv1.weight"] = out["backbone.body.conv1.weight"].flip(1)  # BGR -> RGB input
    for leaf in ("weight", "bias"):
        cls_key, box_key = f"roi_heads.box_predictor.cls_score.{leaf}", f"roi_heads.box_predictor.bbox_pred.{leaf}"
        cls = out[cls_key]
        out[cls_key] = torch.cat([cls[-1:], cls[:-1]])  # background last -> first
        if box_key in out:
            box = out[box_key]
            out[box_key] = (box.repeat(num_classes + 1, *[1] * (box.dim() - 1)) if box.shape[0] == 4
                            else torch.cat([torch.zeros_like(box[:4]), box]))
        if layout == "c4":
            for key, per_anchor in (("rpn.head.cls_logits", 1), ("rpn.head.bbox_pred", 4)):
                if f"{key}.{leaf}" in out:
                    out[f"{key}.{leaf}"] = size_major_to_ratio_major(out[f"{key}.{leaf}"], len(C4_SIZES), per_anchor)
    return out, {"layout": layout, "depth": depth, "num_classes": num_classes}


def size_major_to_ratio_major(t: Tensor, num_sizes: int, per_anchor: int) -> Tensor:
    """Rows ordered (size, ratio, per_anchor) -> (ratio, size, per_anchor)."""
    num_ratios = t.shape[0] // (num_sizes * per_anchor)
    return t.reshape(num_sizes, num_ratios, per_anchor, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def load_strict(model: nn.Module, state: dict[str, Tensor], path: str | os.PathLike = "") -> None:
    """Load ``state`` into ``model``; a missing place or a shape that does not fit is named."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise TeacherWeightsError(path, f"{missing[0]!r} has no tensor in the checkpoint ({len(missing)} missing in all)")
    for name, value in state.items():
        if name not in expected or value.shape != expected[name].shape:
            shape = list(expected[name].shape) if name in expected else "no place"
            raise TeacherWeightsError(path, f"{name!r}: {list(value.shape)} does not fit {shape}")
    model.load_state_dict(state)


# ---------------------------------------------------------------- files


def convert_detectron2(src: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Convert a detectron2 checkpoint into ``out``: ``{"format", "layout", "depth", "num_classes",
    "state_dict", "source"}`` for :func:`load_converted` (a detector, not a teacher: it has no contact head)."""
    state, info = convert_detectron2_state(read_detectron2(src), src)
    model = build_fasterrcnn(info["layout"], info["depth"], info["num_classes"])
    load_strict(model, state, src)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = {"format": "detectron2", "file": str(Path(src).resolve()), "sha256": file_sha256(src)}
    torch.save({"format": FORMAT, **info, "state_dict": model.state_dict(), "source": source}, out)
    return {"out": str(out), "arch": f"fasterrcnn_r{info['depth']}_{info['layout']}", "num_classes": info["num_classes"],
            "tensors": len(state)}


def load_converted(path: str | os.PathLike, **kwargs: Any) -> FasterRCNN:
    """The torchvision Faster R-CNN of a :func:`convert_detectron2` file, in eval mode."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise TeacherWeightsError(path, f"not a converted detectron2 file (format {FORMAT!r})")
    model = build_fasterrcnn(payload["layout"], payload["depth"], payload["num_classes"], **kwargs)
    load_strict(model, payload["state_dict"], path)
    return model.eval()
