"""Weight converters: torchvision classification state dicts (detectron2: test_teachers_detectron2.py)."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torchvision

from teachers import objects
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
