"""The 100DOH hand-object detector: the authors' checkpoint layout loads strictly, their preprocessing,
box arithmetic and thresholds, and the teacher's store rows."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from teachers import hoi100doh
from teachers.base import TeacherWeightsError, load_teacher
from teachers.convert.hoi100doh import check_100doh_state, convert_100doh

# ---------------------------------------------------------------- the authors' names and shapes
# Written down from ddshan/hand_object_detector: lib/model/faster_rcnn/resnet.py (resnet101 = Bottleneck x
# [3, 4, 23, 3], expansion 4, downsample = Sequential(conv 1x1, BN) on each stage's first block;
# RCNN_base = Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3), RCNN_top = Sequential(layer4),
# RCNN_cls_score = Linear(2048, 3), RCNN_bbox_pred = Linear(2048, 4 * 3)), rpn/rpn.py (RPN_Conv 1024 -> 512
# 3x3 with bias, RPN_cls_score 512 -> 2 * 12, RPN_bbox_pred 512 -> 4 * 12, 1x1) and
# extension_layers/extension_layers.py (hand_contact_state_layer = Sequential(Linear(2048, 32), ReLU,
# Dropout, Linear(32, 5)), hand_dydx_layer = Linear(2048, 3), hand_lr_layer = Linear(2048, 1)).


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def authors_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {"RCNN_base.0.weight": (64, 3, 7, 7), **_bn("RCNN_base.1", 64)}
    inplanes = 64
    for stage, planes, blocks in (("RCNN_base.4", 64, 3), ("RCNN_base.5", 128, 4), ("RCNN_base.6", 256, 23),
                                  ("RCNN_top.0", 512, 3)):
        for i in range(blocks):
            p = f"{stage}.{i}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            shapes |= _bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes |= _bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            shapes |= _bn(f"{p}.bn3", planes * 4)
            if i == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                shapes |= _bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    shapes |= {
        "RCNN_rpn.RPN_Conv.weight": (512, 1024, 3, 3), "RCNN_rpn.RPN_Conv.bias": (512,),
        "RCNN_rpn.RPN_cls_score.weight": (24, 512, 1, 1), "RCNN_rpn.RPN_cls_score.bias": (24,),
        "RCNN_rpn.RPN_bbox_pred.weight": (48, 512, 1, 1), "RCNN_rpn.RPN_bbox_pred.bias": (48,),
        "RCNN_cls_score.weight": (3, 2048), "RCNN_cls_score.bias": (3,),
        "RCNN_bbox_pred.weight": (12, 2048), "RCNN_bbox_pred.bias": (12,),
        "extension_layer.hand_contact_state_layer.0.weight": (32, 2048),
        "extension_layer.hand_contact_state_layer.0.bias": (32,),
        "extension_layer.hand_contact_state_layer.3.weight": (5, 32),
        "extension_layer.hand_contact_state_layer.3.bias": (5,),
        "extension_layer.hand_dydx_layer.weight": (3, 2048), "extension_layer.hand_dydx_layer.bias": (3,),
        "extension_layer.hand_lr_layer.weight": (1, 2048), "extension_layer.hand_lr_layer.bias": (1,),
    }
    return shapes


CLS_PROBS = (0.1, 0.3, 0.6)  # background, targetobject, hand: set through the classifier bias alone
HAND_DELTA = (0.5, 0.0, 0.0, 0.0)  # the hand class's normalised box delta (x0.1 -> dx 0.05)


def authors_model_dict() -> dict[str, torch.Tensor]:
    """A random state dict of the authors' names and shapes, with heads whose outputs are known:
    class probabilities CLS_PROBS, hand box delta HAND_DELTA, contact 3 (portable object), right hand,
    offset (2, 0.6, 0.8) -> (2, 0.06, 0.08)."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, shape in authors_shapes().items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            sd[name] = torch.ones(shape)
        elif name.endswith(("running_mean", "bias")):
            sd[name] = torch.zeros(shape)
        elif len(shape) == 1:  # BN weight
            sd[name] = torch.full(shape, 0.5)
        else:
            fan_in = math.prod(shape[1:])
            sd[name] = torch.randn(shape, generator=g) * math.sqrt(1.0 / fan_in)
    for head in ("RCNN_cls_score", "RCNN_bbox_pred", "extension_layer.hand_contact_state_layer.3",
                 "extension_layer.hand_dydx_layer", "extension_layer.hand_lr_layer"):
        sd[f"{head}.weight"].zero_()
    sd["RCNN_cls_score.bias"] = torch.tensor(CLS_PROBS).log()
    sd["RCNN_bbox_pred.bias"][8:12] = torch.tensor(HAND_DELTA)
    sd["extension_layer.hand_contact_state_layer.3.bias"][3] = 5.0
    sd["extension_layer.hand_dydx_layer.bias"] = torch.tensor([2.0, 3.0, 4.0])
    sd["extension_layer.hand_lr_layer.bias"] = torch.tensor([5.0])
    return sd


def _write_checkpoint(path, model: dict, **extra):
    """As trainval_net.py saves it; torch 1.0 wrote the legacy (non-zip) format."""
    ckpt = {"session": 1, "epoch": 8, "model": model, "pooling_mode": "align", "class_agnostic": False,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "momentum": 0.9, "params": [0, 1]}]}, **extra}
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture(scope="module")
def authors_dict():
    return authors_model_dict()


@pytest.fixture(scope="module")
def converted(authors_dict, tmp_path_factory):
    root = tmp_path_factory.mktemp("hoi")
    src = _write_checkpoint(root / "faster_rcnn_1_8_132028.pth", authors_dict)
    done = convert_100doh(src, root / "hoi100doh.pt", short_side=64, max_size=100)
    return load_teacher(done["out"]), done


# ---------------------------------------------------------------- layout and strict conversion


def test_model_names_and_shapes_are_the_authors(authors_dict):
    with torch.device("meta"):  # shapes only
        model = hoi100doh.build()
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert mine == authors_shapes()
    assert len(mine) == 642 and sum(math.prod(s) for s in mine.values()) == 47_466_312  # R101 C4 + heads
    # Caffe-style: stride on the first 1x1 conv of a stage's first block; stem max-pool unpadded, rounding up
    first = model.RCNN_base[5][0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    assert model.RCNN_top[0][0].conv1.stride == (2, 2)
    pool = model.RCNN_base[3]
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True)
    # 100 x 130 -> 7 x 8 (torchvision's padded max-pool would give 7 x 9)
    assert model.RCNN_base(torch.zeros(1, 3, 100, 130, device="meta")).shape == (1, 1024, 7, 8)


def test_converter_loads_every_tensor_into_a_teacher_file(converted, authors_dict):
    teacher, done = converted
    assert done["kind"] == "hoi100doh" and done["tensors"] == 642
    assert type(teacher) is hoi100doh.HandObject100DOHTeacher
    loaded = teacher.model.state_dict()
    for name in ("RCNN_base.6.22.conv3.weight", "RCNN_top.0.0.downsample.0.weight", "RCNN_rpn.RPN_cls_score.weight",
                 "extension_layer.hand_contact_state_layer.3.bias"):
        assert torch.equal(loaded[name], authors_dict[name]), name
    assert teacher.meta["thresholds"] == {"hand": 0.5, "object": 0.5, "nms": 0.3}
    assert teacher.meta["converted_from"]["epoch"] == 8 and teacher.meta["spec"]["size"] == 64


@pytest.mark.parametrize("change, named", [
    (lambda sd: sd.__setitem__("RCNN_rpn.RPN_conv.weight", sd.pop("RCNN_rpn.RPN_Conv.weight")), "RCNN_rpn.RPN_conv.weight"),
    (lambda sd: sd.__setitem__("extension_layer.extra.weight", torch.zeros(2)), "extension_layer.extra.weight"),
    (lambda sd: sd.pop("RCNN_top.0.2.bn3.running_var"), "RCNN_top.0.2.bn3.running_var"),
    (lambda sd: sd.__setitem__("RCNN_cls_score.weight", torch.zeros(4, 2048)), "RCNN_cls_score.weight"),
])
def test_strict_load_refuses_a_key_that_does_not_fit_naming_it(authors_dict, change, named):
    check_100doh_state(authors_dict, "c.pth")  # fits as it is
    sd = dict(authors_dict)
    change(sd)
    with pytest.raises(TeacherWeightsError, match=f"c.pth: key '{named}'"):
        check_100doh_state(sd, "c.pth")


def test_converter_refuses_a_renamed_key_in_the_file(tmp_path):
    sd = {"extension_layer.hand_side_layer.weight": torch.zeros(1, 2048)}  # hand_lr_layer, renamed
    with pytest.raises(TeacherWeightsError, match="key 'extension_layer.hand_side_layer.weight' has no place"):
        convert_100doh(_write_checkpoint(tmp_path / "c.pth", sd), tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_converter_refuses_other_variants_and_missing_files(tmp_path):
    tiny = {"RCNN_cls_score.weight": torch.zeros(3, 2048)}  # refused before any shape is looked at
    with pytest.raises(TeacherWeightsError, match="class_agnostic"):
        convert_100doh(_write_checkpoint(tmp_path / "a.pth", tiny, class_agnostic=True), tmp_path / "o.pt")
    with pytest.raises(TeacherWeightsError, match="pooling_mode 'crop'"):
        convert_100doh(_write_checkpoint(tmp_path / "b.pth", tiny, pooling_mode="crop"), tmp_path / "o.pt")
    with pytest.raises(TeacherWeightsError, match=r"nope\.pth: file not found.*github.com/ddshan/hand_object_detector"):
        convert_100doh(tmp_path / "nope.pth", tmp_path / "o.pt")


# ---------------------------------------------------------------- their arithmetic


def test_anchors_are_py_faster_rcnn_ones():
    anchors = hoi100doh.generate_anchors()
    assert anchors.shape == (12, 4)
    # ratio 0.5: 23 x 12 base (round(sqrt(512)), round(23 * 0.5)) around (7.5, 7.5), then x 8/16/32/64
    torch.testing.assert_close(anchors[:4], torch.tensor([
        [-84.0, -40.0, 99.0, 55.0], [-176.0, -88.0, 191.0, 103.0], [-360.0, -184.0, 375.0, 199.0],
        [-728.0, -376.0, 743.0, 391.0]]))
    torch.testing.assert_close(anchors[4], torch.tensor([-56.0, -56.0, 71.0, 71.0]))  # ratio 1, scale 8


def test_decode_clip_enlarge_and_nms_use_their_pixel_conventions():
    box = torch.tensor([[10.0, 20.0, 29.0, 59.0]])  # w 20, h 40 with the +1 convention; centre (20, 40)
    out = hoi100doh.decode_boxes(box, torch.tensor([[0.1, -0.25, math.log(2), 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[2.0 + 0.0, 10.0, 42.0, 50.0]]))  # cx 22, w 40; cy 30, h 40
    clipped = hoi100doh.clip_boxes(torch.tensor([[-5.0, 3.0, 120.0, 70.0]]), height=60, width=100)
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 3.0, 99.0, 59.0]]))
    # enlarge by 30 % per side, x2 clamped at the image HEIGHT (45) and y2 at its WIDTH (35), as theirs
    big = hoi100doh.enlarge_rois(torch.tensor([[10.0, 10.0, 40.0, 30.0]]), 0.3, height=45, width=35)
    torch.testing.assert_close(big, torch.tensor([[1.0, 4.0, 45.0, 35.0]]))
    # 10 x 10 px boxes overlapping by 10 x 5 px: IoU 50/150 = 0.333 with +1 areas, 36/126 = 0.286 without
    a, s = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 5.0, 9.0, 14.0]]), torch.tensor([1.0, 0.9])
    assert len(hoi100doh.nms_plus_one(a, s, 0.3)) == 1 and len(torchvision.ops.nms(a, s, 0.3)) == 2
    assert len(hoi100doh.nms_plus_one(a, s, 0.34)) == 2


def test_preprocessing_is_their_demo_blob():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[...] = (200, 100, 50)  # RGB
    blob, sizes, scales = hoi100doh.preprocess([frame])
    assert blob.shape == (1, 3, 600, 800) and sizes == [(600, 800)] and scales == [1.25]
    torch.testing.assert_close(blob[0, :, 300, 400], torch.tensor([50 - 102.9801, 100 - 115.9465, 200 - 122.7717]))
    _, sizes, scales = hoi100doh.preprocess([np.zeros((300, 1000, 3), np.uint8)])  # 600/300 would make it 2000 wide
    assert sizes == [(300, 1000)] and scales == [1.0]


# ---------------------------------------------------------------- forward pass and thresholds


def _image(h=32, w=48, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[5:20, 10:30] = (220, 180, 150)
    return img


SIDE = 32  # short side for the tests: the picture enters the network unresized, few anchors (R101 on CPU)


def test_forward_heads_and_boxes_follow_the_weights(converted):
    teacher, _ = converted
    blob, sizes, _ = hoi100doh.preprocess([_image(32, 40)], 48, 100)  # resized by 1.5 to 48 x 60
    with torch.inference_mode():
        out = teacher.model(blob, sizes)[0]
    rois, h, w = out["rois"], *sizes[0]
    assert sizes[0] == (48, 60) and 0 < len(rois) <= 300
    assert rois.min() >= 0 and rois[:, 2].max() <= w - 1 and rois[:, 3].max() <= h - 1
    torch.testing.assert_close(out["probs"], torch.tensor([CLS_PROBS]).expand(len(rois), 3))
    widths = rois[:, 2] - rois[:, 0] + 1
    want_hand = torch.stack([rois[:, 0] + 0.05 * widths, rois[:, 1], rois[:, 2] + 1 + 0.05 * widths, rois[:, 3] + 1], 1)
    torch.testing.assert_close(out["boxes"][:, 8:], hoi100doh.clip_boxes(want_hand, h, w))
    assert (out["contact"].argmax(1) == 3).all() and (out["side"] > 0).all()
    torch.testing.assert_close(out["offset"], torch.tensor([[2.0, 0.06, 0.08]]).expand(len(rois), 3))
    # demo.py's selection: hands (0.6 > 0.5) kept, objects (0.3) not; boxes divided by the resize scale
    found = hoi100doh.select_detections(out, 1.5)
    assert len(found["scores"]) > 0 and set(found["kinds"]) == {0}
    np.testing.assert_allclose(found["scores"], 0.6, rtol=1e-6)
    assert (found["contact"] == 3).all() and (found["side"] == 1).all()
    kept = [int(np.flatnonzero((out["boxes"][:, 8:].numpy() / 1.5 == b).all(1))[0]) for b in found["boxes"]]
    assert len(set(kept)) == len(kept)  # each a distinct RoI's hand box, in original-image pixels
    # thresholds: objects come in at 0.25 (contact 0); no hands at 0.65; NMS at IoU 1.0 keeps every hand box
    low = hoi100doh.select_detections(out, 1.5, hoi100doh.Thresholds(object=0.25))
    assert (low["kinds"] == 1).sum() > 0 and (low["kinds"] == 0).sum() == len(found["scores"])
    assert (low["contact"][low["kinds"] == 1] == 0).all() and low["scores"][0] == pytest.approx(0.6)
    assert len(hoi100doh.select_detections(out, 1.5, hoi100doh.Thresholds(hand=0.65))["scores"]) == 0
    loose = hoi100doh.select_detections(out, 1.5, hoi100doh.Thresholds(nms=1.0))
    assert len(loose["scores"]) == len(rois) > len(found["scores"])


def test_detections_are_in_original_image_pixels(converted):
    model, img = converted[0].model, _image()
    # at short side 32 the picture enters unresized; at twice its size (pixels doubled) it is halved back
    # to the same blob: the boxes, in original pixels, are exactly twice as large
    once, twice = (hoi100doh.detect(model, [x], short_side=SIDE, max_size=100)[0]
                   for x in (img, np.repeat(np.repeat(img, 2, 0), 2, 1)))
    assert len(once["scores"]) > 0 and once["boxes"].min() >= 0 and once["boxes"][:, 2].max() <= 47
    np.testing.assert_array_equal(twice["boxes"], 2 * once["boxes"])


def test_teacher_writes_store_rows_of_the_frame(converted):
    teacher, _ = converted
    frames = np.stack([_image(), _image(seed=1)])[None]  # [1, 2, 32, 48, 3]
    times = np.array([[0.0, np.nan]], np.float32)
    teacher.spec = hoi100doh.InputSpec(4.0, SIDE)  # the file says 64; 32 keeps R101 quick
    rows = teacher.predict(frames, times)["handobj/boxes"]
    assert rows.shape == (1, 2, 8, 7) == (1, 2, *teacher.output_shapes(2)["handobj/boxes"][0][1:])
    assert np.all(rows[0, 1] == 0)
    found = hoi100doh.detect(teacher.model, [frames[0, 0]], short_side=SIDE, max_size=100)[0]
    k = min(8, len(found["scores"]))
    assert k > 0
    np.testing.assert_allclose(rows[0, 0, :k, :4], found["boxes"][:k] / [48, 32, 48, 32], atol=1e-6)
    np.testing.assert_allclose(rows[0, 0, :k, 4:], np.c_[found["scores"][:k], np.zeros(k), np.full(k, 3)], atol=1e-6)


def test_cli_convert_reports_a_missing_file_in_one_line(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["teachers", "convert", str(tmp_path / "faster_rcnn_1_8_132028.pth"), "--format", "100doh",
                 "--out", str(tmp_path / "o.pt"), "--hand-threshold", "0.7"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "faster_rcnn_1_8_132028.pth: file not found" in err[0] and "ddshan" in err[0]
    assert main(["teachers", "convert", "m.pkl", "--format", "detectron2", "--out", "o.pt", "--nms-threshold", "0.5"]) == 1
    assert "--nms-threshold applies to --format 100doh only" in capsys.readouterr().err
