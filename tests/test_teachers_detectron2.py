"""detectron2 model-zoo Faster R-CNN checkpoints -> torchvision Faster R-CNN: names, rearranged rows, strictness."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator

from teachers.base import TeacherWeightsError
from teachers.convert import detectron2 as d2
from test_safe_pickle import _CreatesFile  # a pickle whose loading would create a file

# ---------------------------------------------------------------- detectron2's names and shapes
# Written down from facebookresearch/detectron2: modeling/backbone/resnet.py (BasicStem.conv1 7x7 64 with
# .norm; stages "res2".."res5" of BottleneckBlock conv1/conv2/conv3 (+ .norm) and a "shortcut" (+ .norm) on
# each stage's first block; R50 [3, 4, 6, 3], R101 [3, 4, 23, 3]; FrozenBatchNorm2d buffers weight, bias,
# running_mean, running_var), backbone/fpn.py (fpn_lateral{2..5} 1x1 and fpn_output{2..5} 3x3 to 256, with
# bias as norm is ""), proposal_generator/rpn.py StandardRPNHead (conv 3x3, objectness_logits A,
# anchor_deltas 4A), roi_heads/box_head.py (fc1 256*7*7 -> 1024, fc2), fast_rcnn.py (cls_score K+1 with
# background last, bbox_pred 4K), roi_heads.py Res5ROIHeads (roi_heads.res5.*).
# FPN: "backbone.bottom_up." before the ResNet; C4: "backbone." (res2..res4) and roi_heads.res5.


def _norm(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.norm.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}


def detectron2_shapes(layout: str, depth: int = 50, num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    trunk = "backbone.bottom_up." if layout == "fpn" else "backbone."
    shapes = {f"{trunk}stem.conv1.weight": (64, 3, 7, 7), **_norm(f"{trunk}stem.conv1", 64)}
    cin = 64
    for stage, n in zip(range(2, 6), blocks):
        mid, out = 64 * 2 ** (stage - 2), 256 * 2 ** (stage - 2)
        prefix = trunk if layout == "fpn" or stage < 5 else "roi_heads."
        for i in range(n):
            p = f"{prefix}res{stage}.{i}"
            if i == 0:
                shapes |= {f"{p}.shortcut.weight": (out, cin, 1, 1), **_norm(f"{p}.shortcut", out)}
            for j, shape in enumerate([(mid, cin, 1, 1), (mid, mid, 3, 3), (out, mid, 1, 1)], 1):
                shapes |= {f"{p}.conv{j}.weight": shape, **_norm(f"{p}.conv{j}", shape[0])}
            cin = out
    if layout == "fpn":
        for s, c in zip(range(2, 6), (256, 512, 1024, 2048)):
            shapes |= {f"backbone.fpn_lateral{s}.weight": (256, c, 1, 1), f"backbone.fpn_lateral{s}.bias": (256,),
                       f"backbone.fpn_output{s}.weight": (256, 256, 3, 3), f"backbone.fpn_output{s}.bias": (256,)}
        rpn_c, anchors, box_c = 256, 3, 1024
        shapes |= {"roi_heads.box_head.fc1.weight": (1024, 256 * 7 * 7), "roi_heads.box_head.fc1.bias": (1024,),
                   "roi_heads.box_head.fc2.weight": (1024, 1024), "roi_heads.box_head.fc2.bias": (1024,)}
    else:
        rpn_c, anchors, box_c = 1024, 15, 2048
    rpn = "proposal_generator.rpn_head"
    shapes |= {
        f"{rpn}.conv.weight": (rpn_c, rpn_c, 3, 3), f"{rpn}.conv.bias": (rpn_c,),
        f"{rpn}.objectness_logits.weight": (anchors, rpn_c, 1, 1), f"{rpn}.objectness_logits.bias": (anchors,),
        f"{rpn}.anchor_deltas.weight": (4 * anchors, rpn_c, 1, 1), f"{rpn}.anchor_deltas.bias": (4 * anchors,),
        "roi_heads.box_predictor.cls_score.weight": (num_classes + 1, box_c),
        "roi_heads.box_predictor.cls_score.bias": (num_classes + 1,),
        "roi_heads.box_predictor.bbox_pred.weight": (4 * num_classes, box_c),
        "roi_heads.box_predictor.bbox_pred.bias": (4 * num_classes,),
    }
    return shapes


FAVOURITE = 6  # detectron2 class index the classifier bias favours (torchvision label 7)


def detectron2_weights(layout: str, depth: int = 50, num_classes: int = 80) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, shape in detectron2_shapes(layout, depth, num_classes).items():
        if name.endswith(("running_var", "norm.weight")):
            out[name] = np.ones(shape, np.float32)
        elif name.endswith(("running_mean", "bias")):
            out[name] = rng.standard_normal(shape, np.float32) * 0.01
        else:
            out[name] = rng.standard_normal(shape, np.float32) * math.sqrt(1.0 / math.prod(shape[1:]))
    # class scores from the bias alone (favouring one class), zero box deltas: a forward pass has known classes
    for name in ("cls_score.weight", "bbox_pred.weight", "bbox_pred.bias"):
        out[f"roi_heads.box_predictor.{name}"][:] = 0
    out["roi_heads.box_predictor.cls_score.bias"][FAVOURITE] = 20.0
    return out


def write_pkl(path, weights: dict) -> str:
    """As the model zoo ships them: a pickle of {"model": {name: ndarray}, "__author__", "matching_heuristics"}."""
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f)
    return path


@pytest.fixture(scope="module", params=["fpn", "c4"])
def converted(request, tmp_path_factory):
    layout = request.param
    weights = detectron2_weights(layout)
    root = tmp_path_factory.mktemp(f"d2{layout}")
    done = d2.convert_detectron2(write_pkl(root / "model_final.pkl", weights), root / "out.pt")
    small = dict(min_size=64, max_size=96, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20)
    return layout, weights, done, d2.load_converted(done["out"], **small)


# ---------------------------------------------------------------- conversion


def test_every_detectron2_tensor_lands_with_its_rows_rearranged(converted):
    layout, weights, done, model = converted
    assert done["arch"] == f"fasterrcnn_r50_{layout}" and done["num_classes"] == 80 and done["tensors"] == len(weights)
    sd = model.state_dict()
    assert len(sd) == len(weights)  # one place per tensor, none empty (load_strict checked the names)
    trunk = "backbone.bottom_up." if layout == "fpn" else "backbone."
    np.testing.assert_array_equal(sd["backbone.body.layer3.5.bn2.running_var"], weights[f"{trunk}res4.5.conv2.norm.running_var"])
    np.testing.assert_array_equal(sd["backbone.body.layer2.0.downsample.0.weight"], weights[f"{trunk}res3.0.shortcut.weight"])
    head = "backbone.body.layer4" if layout == "fpn" else "roi_heads.box_head.res5"
    res5 = f"{trunk}res5" if layout == "fpn" else "roi_heads.res5"
    np.testing.assert_array_equal(sd[f"{head}.2.conv3.weight"], weights[f"{res5}.2.conv3.weight"])
    if layout == "fpn":
        np.testing.assert_array_equal(sd["backbone.fpn.inner_blocks.1.0.weight"], weights["backbone.fpn_lateral3.weight"])
        np.testing.assert_array_equal(sd["backbone.fpn.layer_blocks.3.0.bias"], weights["backbone.fpn_output5.bias"])
        np.testing.assert_array_equal(sd["roi_heads.box_head.fc7.weight"], weights["roi_heads.box_head.fc2.weight"])
    cls = weights["roi_heads.box_predictor.cls_score.weight"]  # background last -> first
    np.testing.assert_array_equal(sd["roi_heads.box_predictor.cls_score.weight"], np.concatenate([cls[-1:], cls[:-1]]))
    box = sd["roi_heads.box_predictor.bbox_pred.weight"].numpy()
    assert box.shape[0] == 4 * 81 and np.all(box[:4] == 0)
    np.testing.assert_array_equal(box[4:], weights["roi_heads.box_predictor.bbox_pred.weight"])
    np.testing.assert_array_equal(sd["roi_heads.box_predictor.cls_score.bias"][[0, FAVOURITE + 1]],
                                  weights["roi_heads.box_predictor.cls_score.bias"][[80, FAVOURITE]])


def test_bgr_input_of_detectron2_becomes_rgb(converted):
    """conv1 of the converted model on torchvision's normalised RGB equals detectron2's conv1 on BGR 0-255
    minus its pixel mean."""
    layout, weights, _, model = converted
    trunk = "backbone.bottom_up." if layout == "fpn" else "backbone."
    rgb = torch.rand(1, 3, 32, 32)
    mine = model.backbone.body.conv1((rgb - torch.tensor(model.transform.image_mean).view(3, 1, 1))
                                     / torch.tensor(model.transform.image_std).view(3, 1, 1))
    bgr = rgb.flip(1) * 255 - torch.tensor(d2.PIXEL_MEAN_BGR).view(3, 1, 1)
    theirs = F.conv2d(bgr, torch.from_numpy(weights[f"{trunk}stem.conv1.weight"]), stride=2, padding=3)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-3)


def test_c4_rpn_rows_follow_torchvision_anchor_order():
    weights = {k: torch.from_numpy(v) for k, v in detectron2_weights("c4").items()}
    state, info = d2.convert_detectron2_state(weights)
    assert info == {"layout": "c4", "depth": 50, "num_classes": 80}
    # detectron2's cell anchors are size-major (DefaultAnchorGenerator), torchvision's ratio-major
    theirs = [(math.sqrt(s * s / a), a * math.sqrt(s * s / a)) for s in d2.C4_SIZES for a in d2.RATIOS]
    cell = AnchorGenerator((d2.C4_SIZES,), (d2.RATIOS,)).cell_anchors[0].numpy()
    mine = cell[:, 2:] - cell[:, :2]
    perm = [int(np.abs(np.array(theirs) - wh).sum(1).argmin()) for wh in mine]
    assert sorted(perm) == list(range(15)) and perm != list(range(15))
    logits = weights["proposal_generator.rpn_head.objectness_logits.bias"]
    torch.testing.assert_close(state["rpn.head.cls_logits.bias"], logits[perm])
    deltas = weights["proposal_generator.rpn_head.anchor_deltas.weight"].reshape(15, 4, -1)
    torch.testing.assert_close(state["rpn.head.bbox_pred.weight"].reshape(15, 4, -1), deltas[perm])


def test_depth_is_read_off_the_names():
    r101 = {k: torch.zeros(shape) for k, shape in detectron2_shapes("fpn", 101).items() if "cls_score" in k or "res" in k}
    assert d2.describe(r101) == ("fpn", 101, 80)
    c4 = {k: torch.zeros(shape) for k, shape in detectron2_shapes("c4", 101, 1).items() if "cls_score" in k or "res" in k}
    assert d2.describe(c4) == ("c4", 101, 1)
    del r101["backbone.bottom_up.res4.22.conv1.weight"], r101["backbone.bottom_up.res4.22.conv1.norm.weight"]
    assert d2.describe(r101)[1] == 101  # (a block with a tensor missing still counts; load_strict names it)


def test_forward_pass_finds_the_favoured_class(converted):
    _, _, _, model = converted
    image = torch.rand(3, 60, 90)
    with torch.inference_mode():
        (found,) = model([image])
    assert len(found["boxes"]) > 0
    assert (found["labels"] == FAVOURITE + 1).all()  # torchvision counts background as 0
    assert found["scores"].min() > 0.99
    boxes = found["boxes"]
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 90 and boxes[:, 3].max() <= 60  # original-image pixels


# ---------------------------------------------------------------- strictness and safety


@pytest.fixture(scope="module")
def fpn_weights():
    return {k: torch.from_numpy(v) for k, v in detectron2_weights("fpn").items()}


def test_a_renamed_key_in_a_model_zoo_file_is_refused_naming_it(tmp_path):
    weights = detectron2_weights("fpn")
    weights["backbone.fpn_lat3.weight"] = weights.pop("backbone.fpn_lateral3.weight")
    with pytest.raises(TeacherWeightsError, match="m.pkl: key 'backbone.fpn_lat3.weight' has no place"):
        d2.convert_detectron2(write_pkl(tmp_path / "m.pkl", weights), tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("change, message", [
    (lambda w: w.__setitem__("roi_heads.mask_head.mask_fcn1.weight", torch.zeros(256, 256, 3, 3)),
     "key 'roi_heads.mask_head.mask_fcn1.weight' has no place"),
    (lambda w: w.pop("backbone.bottom_up.res3.0.shortcut.norm.running_var"),
     "'backbone.body.layer2.0.downsample.1.running_var' has no tensor"),
    (lambda w: w.__setitem__("backbone.fpn_output2.weight", torch.zeros(256, 256, 1, 1)),
     r"'backbone.fpn.layer_blocks.0.0.weight': \[256, 256, 1, 1\] does not fit"),
])
def test_a_key_that_does_not_fit_is_refused_naming_it(fpn_weights, change, message):
    weights = dict(fpn_weights)
    change(weights)
    with pytest.raises(TeacherWeightsError, match=message):
        state, info = d2.convert_detectron2_state(weights)
        with torch.device("meta"):  # refused on names and shapes, before anything is loaded
            model = d2.build_fasterrcnn(info["layout"], info["depth"], info["num_classes"])
        d2.load_strict(model, state)


def test_bad_and_missing_files(tmp_path):
    with pytest.raises(TeacherWeightsError, match=r"nope\.pkl: file not found.*MODEL_ZOO\.md"):
        d2.read_detectron2(tmp_path / "nope.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(TeacherWeightsError, match="not a readable detectron2 checkpoint"):
        d2.read_detectron2(tmp_path / "junk.pkl")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(TeacherWeightsError, match="no 'model' dict"):
        d2.read_detectron2(tmp_path / "list.pkl")
    torch.save({"model": {"a.weight": torch.ones(2)}, "iteration": 9}, tmp_path / "m.pth")  # a training .pth
    assert torch.equal(d2.read_detectron2(tmp_path / "m.pth")["a.weight"], torch.ones(2))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    write_pkl(tmp_path / "evil.pkl", {"roi_heads.box_head.fc1.weight": _CreatesFile(marker)})
    with pytest.raises(TeacherWeightsError, match="refused: refusing to load io.open"):
        d2.read_detectron2(tmp_path / "evil.pkl")
    assert not marker.exists()
