"""The Object-Score teacher on torchvision classifiers: named weights, their preprocessing, torchvision's numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from pipeline.errors import PipelineError
from pipeline.stages.extract import ExtractConfig, TeacherWeights, _teacher_paths
from teachers import load_teacher, objects, source_kind
from teachers.base import InputSpec, TeacherWeightsError


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp_path; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called torch.hub.set_dir

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    return tmp_path / "torch" / "hub"


def _random_resnet18() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    for m in model.modules():  # non-default BN statistics, so a skipped buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.state_dict()


def test_named_weights_give_torchvisions_own_numbers(hub_dir):
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = hub_dir / "checkpoints" / "resnet18-f37072fd.pth"  # the file name of weights.url
    assert objects.hub_cache_file(weights) == cached
    cached.parent.mkdir(parents=True)
    torch.save(_random_resnet18(), cached)

    teacher = load_teacher("resnet18:IMAGENET1K_V1")
    # torchvision's own model and preprocessing, with the same file (found in the same cache)
    reference = torchvision.models.get_model("resnet18", weights="IMAGENET1K_V1").eval()
    transform = weights.transforms()
    assert teacher.meta["preprocess"] == {"resize_size": 256, "crop_size": 224, "interpolation": "bilinear",
                                          "antialias": True}
    assert teacher.classes == weights.meta["categories"] and teacher.spec.size == 224
    rng = np.random.default_rng(0)
    for h, w in ((120, 170), (300, 140)):  # landscape and portrait: resized by the short side, centre-cropped
        frames = rng.integers(0, 256, (2, 1, h, w, 3), dtype=np.uint8)
        frames[:, :, : h // 2, : w // 3] = rng.integers(0, 256, 3)
        got = teacher.predict(frames, np.zeros((2, 1), np.float32))["object/logits"][:, 0]
        with torch.inference_mode():
            images = torch.stack([transform(torch.from_numpy(f[0]).permute(2, 0, 1)) for f in frames])
            want = reference(images).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        assert np.abs(want).max() > 1  # not a trivially zero output


def test_preprocessing_keeps_the_aspect_ratio():
    # Columns: 50 red, 100 green, 50 blue. Short side 100 -> 50 gives red 0-24, green 25-74, blue 75-99;
    # the centre 40 columns (30-69) are all green. Squashing to 40x40 would keep red and blue stripes.
    frame = np.zeros((1, 100, 200, 3), np.uint8)
    frame[:, :, :50, 0] = frame[:, :, 50:150, 1] = frame[:, :, 150:, 2] = 255
    settings = {"resize_size": 50, "crop_size": 40, "interpolation": "bilinear", "antialias": True}
    spec = InputSpec(4.0, 40, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x = objects.classification_inputs(frame, settings, spec)
    assert x.shape == (1, 3, 40, 40) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].mean((1, 2)).numpy(), [0.0, 1.0, 0.0], atol=1e-6)
    portrait = np.ascontiguousarray(frame.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(objects.classification_inputs(portrait, settings, spec), x.transpose(2, 3))


def test_resnet152_loads_by_name_with_the_published_shapes(tmp_path):
    with torch.device("meta"):  # the shapes of torchvision's resnet152; zeros, to keep the test fast
        shapes = torchvision.models.resnet152().state_dict()
    path = tmp_path / "resnet152.pth"
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}, path)
    teacher = load_teacher(f"resnet152:IMAGENET1K_V2@{path}")
    weights = torchvision.models.ResNet152_Weights.IMAGENET1K_V2
    assert sum(p.numel() for p in teacher.model.parameters()) == weights.meta["num_params"] == 60_192_808
    assert teacher.model.fc.weight.shape == (1000, 2048) and not teacher.model.fc.weight.is_meta
    assert teacher.meta["preprocess"]["resize_size"] == 232 and teacher.spec.size == 224
    assert teacher.meta["torchvision_weights"] == "resnet152:IMAGENET1K_V2" and len(teacher.classes) == 1000
    assert teacher.output_shapes(5) == {"object/logits": ((5, 1000), "float16")}
    v1, _ = objects.preprocessing(torchvision.models.ResNet152_Weights.IMAGENET1K_V1)
    assert (v1["resize_size"], v1["crop_size"], v1["interpolation"]) == (256, 224, "bilinear")


def test_missing_or_wrong_weights_are_one_clear_error(hub_dir, tmp_path):
    with pytest.raises(TeacherWeightsError) as err:
        load_teacher("resnet152:IMAGENET1K_V2")
    message = str(err.value)
    assert str(hub_dir / "checkpoints" / "resnet152-f82ba261.pth") in message
    assert "https://download.pytorch.org/models/resnet152-f82ba261.pth" in message
    assert isinstance(err.value, PipelineError)  # the CLI prints it as one line
    with pytest.raises(TeacherWeightsError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        load_teacher("resnet152:IMAGENET1K_V9")
    with pytest.raises(TeacherWeightsError, match=f"{tmp_path / 'absent.pth'}: no such file"):
        load_teacher(f"resnet152:IMAGENET1K_V1@{tmp_path / 'absent.pth'}")
    torch.save(_random_resnet18(), tmp_path / "r18.pth")
    with pytest.raises(TeacherWeightsError, match=r"do not fit torchvision resnet34 .*missing \(layer1.2.conv1.weight"):
        load_teacher(f"resnet34:IMAGENET1K_V1@{tmp_path / 'r18.pth'}")


def test_named_sources_belong_to_the_object_teacher(tmp_path):
    assert source_kind("resnet152:IMAGENET1K_V2") == "object"
    assert source_kind("convnext_tiny:IMAGENET1K_V1@/data/x.pth") == "object"
    assert source_kind("r3d_18:KINETICS400_V1") is None  # a video model: not an image classifier
    assert source_kind("teacher.pt") is None
    cfg = ExtractConfig(teachers=TeacherWeights(object="resnet152:IMAGENET1K_V2"))
    assert _teacher_paths(cfg) == {"object": "resnet152:IMAGENET1K_V2"}
    with pytest.raises(PipelineError, match="teachers.ego: weights file not found: resnet152:IMAGENET1K_V2"):
        _teacher_paths(ExtractConfig(teachers=TeacherWeights(ego="resnet152:IMAGENET1K_V2")))
