"""Weight converters: torchvision classification state dicts and detectron2 Faster R-CNN checkpoints."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator

from teachers import handobj, objects
from teachers.base import IMAGENET_MEAN, TeacherWeightsError, file_sha256, load_teacher, save_teacher

# ---------------------------------------------------------------- torchvision classifiers


@pytest.fixture
def resnet18_file(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    for m in model.modules():  # non-default BN statistics, so a skipped buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_load_torchvision_classifier_loads_the_saved_weights(resnet18_file, tmp_path):
    path, saved = resnet18_file
    classes = ["a", "b", "c", "d", "e"]
    teacher = objects.load_torchvision_classifier(path, arch="resnet18", classes=classes)
    loaded = teacher.model.state_dict()
    assert loaded.keys() == saved.keys()
    for name, value in saved.items():
        assert torch.equal(loaded[name], value), name
    assert teacher.classes == classes
    assert teacher.meta["weights_sha256"] == file_sha256(path)
    assert teacher.spec.size == 224 and teacher.spec.mean == IMAGENET_MEAN  # ResNet18_Weights.DEFAULT
    out = teacher.predict(np.zeros((1, 3, 50, 60, 3), np.uint8), np.array([[0, 0.25, np.nan]], np.float32))
    assert out["object/logits"].shape == (1, 3, 5) and np.all(out["object/logits"][0, 2] == 0)

    # ...and it can be re-saved in our format and rebuilt from it, giving the same logits
    again = save_teacher(tmp_path / "obj.pt", teacher.model, "object", "resnet18", teacher.meta["arch_kwargs"], teacher.meta)
    frames = np.random.default_rng(0).integers(0, 256, (1, 2, 96, 128, 3), dtype=np.uint8)
    times = np.zeros((1, 2), np.float32)
    np.testing.assert_array_equal(
        load_teacher(again).predict(frames, times)["object/logits"], teacher.predict(frames, times)["object/logits"]
    )


def test_load_torchvision_classifier_unwraps_and_checks(resnet18_file, tmp_path):
    path, saved = resnet18_file
    torch.save({"state_dict": saved, "epoch": 3}, tmp_path / "wrapped.pth")
    assert len(objects.load_torchvision_classifier(tmp_path / "wrapped.pth", arch="resnet18").classes) == 5
    with pytest.raises(TeacherWeightsError, match="do not fit torchvision resnet34"):
        objects.load_torchvision_classifier(path, arch="resnet34")
    with pytest.raises(ValueError, match="2 class names"):
        objects.load_torchvision_classifier(path, arch="resnet18", classes=["a", "b"])
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(TeacherWeightsError, match="not a readable torch file"):
        objects.load_torchvision_classifier(tmp_path / "junk.pth", arch="resnet18")


def test_imagenet_class_names_come_with_torchvision():
    names = objects.imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench"


# ---------------------------------------------------------------- detectron2 checkpoints

SIZES, RATIOS = (8, 16, 32, 64), (0.5, 1.0, 2.0)  # handobj.build's defaults


def _detectron2_anchor_wh() -> np.ndarray:
    """Cell anchor (w, h) in detectron2's order: size-major (DefaultAnchorGenerator.generate_cell_anchors)."""
    return np.array([(math.sqrt(s * s / a), a * math.sqrt(s * s / a)) for s in SIZES for a in RATIOS])


def _torchvision_anchor_wh() -> np.ndarray:
    cell = AnchorGenerator((SIZES,), (RATIOS,)).cell_anchors[0].numpy()
    return cell[:, 2:] - cell[:, :2]


def _torchvision_to_detectron2_order() -> list[int]:
    """For each torchvision anchor, the index of the same-shaped detectron2 anchor."""
    d2, tv = _detectron2_anchor_wh(), _torchvision_anchor_wh()
    return [int(np.abs(d2 - wh).sum(1).argmin()) for wh in tv]


def _as_detectron2(detector_state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Write a torchvision FasterRCNN state in detectron2's layout (the inverse of the converter),
    plus backbone tensors under detectron2 names that the converter must leave alone."""
    perm = _torchvision_to_detectron2_order()  # tv row j holds d2 anchor perm[j]
    inverse = np.argsort(perm)  # d2 anchor i sits in tv row inverse[i]
    s = {k: v.numpy().copy() for k, v in detector_state.items()}
    out = {
        "backbone.bottom_up.stem.conv1.weight": next(v for k, v in s.items() if k.startswith("backbone.")),
        "backbone.bottom_up.res2.0.conv1.norm.running_mean": np.zeros(16, np.float32),
        "proposal_generator.rpn_head.conv.weight": s["rpn.head.conv.0.0.weight"],
        "proposal_generator.rpn_head.conv.bias": s["rpn.head.conv.0.0.bias"],
        "roi_heads.box_head.fc1.weight": s["roi_heads.box_head.fc6.weight"],
        "roi_heads.box_head.fc1.bias": s["roi_heads.box_head.fc6.bias"],
        "roi_heads.box_head.fc2.weight": s["roi_heads.box_head.fc7.weight"],
        "roi_heads.box_head.fc2.bias": s["roi_heads.box_head.fc7.bias"],
    }
    for leaf in ("weight", "bias"):
        cls = s[f"roi_heads.box_predictor.cls_score.{leaf}"]
        out[f"roi_heads.box_predictor.cls_score.{leaf}"] = np.concatenate([cls[1:], cls[:1]])  # background last
        out[f"roi_heads.box_predictor.bbox_pred.{leaf}"] = s[f"roi_heads.box_predictor.bbox_pred.{leaf}"][4:]
        logits = s[f"rpn.head.cls_logits.{leaf}"]
        out[f"proposal_generator.rpn_head.objectness_logits.{leaf}"] = logits[inverse]
        deltas = s[f"rpn.head.bbox_pred.{leaf}"]
        out[f"proposal_generator.rpn_head.anchor_deltas.{leaf}"] = deltas.reshape(12, 4, *deltas.shape[1:])[
            inverse
        ].reshape(deltas.shape)
    return out


@pytest.fixture(scope="module")
def trained_like_detector():
    torch.manual_seed(0)
    model = handobj.build().eval()
    with torch.no_grad():  # make background/bbox rows distinct from torchvision's init
        for p in model.detector.roi_heads.box_predictor.parameters():
            p.normal_(0, 0.05)
    return model


def _write_pkl(path, weights: dict[str, np.ndarray]):
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "test", "matching_heuristics": True}, f)
    return path


def test_anchor_orders_really_differ_between_detectron2_and_torchvision():
    perm = _torchvision_to_detectron2_order()
    assert sorted(perm) == list(range(12)) and perm != list(range(12))
    np.testing.assert_allclose(_detectron2_anchor_wh()[perm], _torchvision_anchor_wh(), atol=1.0)


def test_detectron2_converter_maps_names_and_rearranges_rows(trained_like_detector, tmp_path):
    d2 = _as_detectron2(trained_like_detector.detector.state_dict())
    sd = handobj.convert_detectron2_checkpoint(_write_pkl(tmp_path / "model_final.pkl", d2), anchor_sizes_per_level=4)
    assert sorted(sd) == sorted(
        f"{p}.{leaf}"
        for p in (
            "rpn.head.conv.0.0", "rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_head.fc6",
            "roi_heads.box_head.fc7", "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
        )
        for leaf in ("weight", "bias")
    )
    cls = d2["roi_heads.box_predictor.cls_score.weight"]  # rows: hand, object, background
    np.testing.assert_array_equal(sd["roi_heads.box_predictor.cls_score.weight"].numpy(), cls[[2, 0, 1]])
    box = sd["roi_heads.box_predictor.bbox_pred.weight"].numpy()
    assert box.shape == (12, 256) and np.all(box[:4] == 0)
    np.testing.assert_array_equal(box[4:], d2["roi_heads.box_predictor.bbox_pred.weight"])
    perm = _torchvision_to_detectron2_order()  # (weights: torchvision initialises RPN biases to 0)
    np.testing.assert_array_equal(
        sd["rpn.head.cls_logits.weight"].numpy(), d2["proposal_generator.rpn_head.objectness_logits.weight"][perm]
    )
    deltas = d2["proposal_generator.rpn_head.anchor_deltas.weight"].reshape(12, 4, -1)
    np.testing.assert_array_equal(sd["rpn.head.bbox_pred.weight"].numpy().reshape(12, 4, -1), deltas[perm])


def test_converted_detectron2_checkpoint_reproduces_the_detector(trained_like_detector, tmp_path):
    original = trained_like_detector
    sd = handobj.convert_detectron2_checkpoint(
        _write_pkl(tmp_path / "m.pkl", _as_detectron2(original.detector.state_dict())), anchor_sizes_per_level=4
    )
    torch.manual_seed(1)
    fresh = handobj.build().eval()
    result = fresh.detector.load_state_dict(sd, strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith("backbone.") for k in result.missing_keys)  # the backbone is not mapped
    fresh.detector.backbone.load_state_dict(original.detector.backbone.state_dict())
    fresh.contact_head.load_state_dict(original.contact_head.state_dict())
    frames = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    want, got = handobj.detect(original, frames), handobj.detect(fresh, frames)
    assert sum(len(d["scores"]) for d in want) > 0
    for w, g in zip(want, got):
        for key in w:
            np.testing.assert_allclose(g[key], w[key], atol=1e-5)


def test_detectron2_converter_handles_agnostic_boxes_pth_files_and_bad_files(trained_like_detector, tmp_path):
    d2 = _as_detectron2(trained_like_detector.detector.state_dict())
    d2["roi_heads.box_predictor.bbox_pred.weight"] = d2["roi_heads.box_predictor.bbox_pred.weight"][:4]
    d2["roi_heads.box_predictor.bbox_pred.bias"] = d2["roi_heads.box_predictor.bbox_pred.bias"][:4]
    torch.save({"model": {k: torch.from_numpy(v) for k, v in d2.items()}, "iteration": 9}, tmp_path / "m.pth")
    sd = handobj.convert_detectron2_checkpoint(tmp_path / "m.pth", anchor_sizes_per_level=4)
    box = sd["roi_heads.box_predictor.bbox_pred.weight"].numpy()
    np.testing.assert_array_equal(box, np.tile(d2["roi_heads.box_predictor.bbox_pred.weight"], (3, 1)))

    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(TeacherWeightsError, match="not a readable detectron2 checkpoint"):
        handobj.convert_detectron2_checkpoint(tmp_path / "junk.pkl")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(TeacherWeightsError, match="no 'model' dict"):
        handobj.convert_detectron2_checkpoint(tmp_path / "list.pkl")


class _Hostile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_detectron2_pickle_reader_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    _write_pkl(tmp_path / "evil.pkl", {"roi_heads.box_head.fc1.weight": _Hostile(marker)})
    with pytest.raises(TeacherWeightsError, match="refusing to load"):
        handobj.convert_detectron2_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()
