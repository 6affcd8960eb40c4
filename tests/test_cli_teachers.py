"""``pipeline teachers list`` and ``pipeline teachers check`` through the CLI, with the demo teachers' architectures."""
from __future__ import annotations

import re

import pytest
import torch
import yaml

from pipeline.cli import main
from teachers import ego, handobj, list_teachers, load_teacher, objects, save_teacher

# (module, arch kwargs, meta) of a small untrained teacher of each demo architecture
DEMO_TEACHERS = {
    "ego": (ego, {"width": 8}, ego.make_meta()),
    "object": (objects, {"num_classes": 3, "width": 8}, objects.make_meta(["cup", "knife", "phone"])),
    "handobj": (handobj, {}, handobj.make_meta()),
}
ROW = re.compile(r"^(\w+) +(\S+) +(\[[\d, ]*\]) +(\w+) +(\w+) +(\S+) +(\w+) +([\d.]+)$")


@pytest.fixture(scope="module")
def check_config(tiny_world, tmp_path_factory):
    """An extract-teachers config over the tiny world's Kinetics manifest with the three demo teachers."""
    root = tmp_path_factory.mktemp("teachers-check")
    files = {}
    for kind, (module, kwargs, meta) in DEMO_TEACHERS.items():
        torch.manual_seed(0)
        model = module.build(module.DEFAULT_ARCH, **kwargs)
        files[kind] = str(save_teacher(root / f"{kind}.pt", model, kind, module.DEFAULT_ARCH, kwargs, meta))
    kinetics = tiny_world / "kinetics"
    config = {"manifest": str(kinetics / "kinetics_demo.csv"), "classes": str(kinetics / "classes.txt"),
              "video_root": str(kinetics / "videos"), "out": str(root / "signals.zarr"), "teachers": files}
    path = root / "extract-teachers.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, files


def test_teachers_list_prints_every_kind_with_its_input_and_weights(capsys):
    assert main(["teachers", "list"]) == 0
    out = capsys.readouterr().out
    kinds = re.findall(r"^(\w+): ", out, re.M)
    assert kinds == list_teachers() == ["ego", "handobj", "hoi100doh", "object"]
    blocks = dict(zip(kinds, re.split(r"^\w+: ", out, flags=re.M)[1:]))
    assert "clips of 4 frames at 4 fps, squashed to 64x64" in blocks["ego"]
    assert "fasterrcnn_tiny, fasterrcnn_tiny_fpn" in blocks["handobj"]
    assert "resnet152:IMAGENET1K_V1 256->224 bilinear; resnet152:IMAGENET1K_V2 232->224 bilinear" in blocks["object"]
    assert "ARCH:WEIGHTS@FILE" in blocks["object"] and "egoexo-teacher/1" in blocks["object"]


def test_teachers_check_prints_the_shapes_the_store_expects(check_config, capsys):
    path, files = check_config
    assert main(["teachers", "check", "--config", str(path), "max_frames=6"]) == 0
    out = capsys.readouterr().out
    rows = {m[1]: m for line in out.splitlines() if (m := ROW.match(line))}
    assert sorted(rows) == ["ego", "handobj", "object"]
    clip = re.search(r"^clip \S+ \((.+)\): (\d+) frames at 4 fps from 0 to 1.5 s, decoded at 160x120$", out, re.M)
    assert clip and int(clip[2]) == 6  # the first Kinetics clip lasts 2 s; max_frames=6 keeps 6 frames
    for kind, row in rows.items():
        (name, (shape, store_dtype)), = load_teacher(files[kind]).output_shapes(6).items()
        assert row[2] == name and row[3] == str(list(shape))
        assert (row[4], row[5], row[6], row[7]) == ("float32", store_dtype, "cpu", "float32")
        assert float(row[8]) > 0
    assert rows["ego"][3] == "[2, 2]" and rows["object"][3] == "[6, 3]" and rows["handobj"][3] == "[6, 8, 7]"


def test_teachers_check_missing_weights_is_one_error_line(check_config, tmp_path, capsys, monkeypatch):
    path, _ = check_config
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert main(["teachers", "check", "--config", str(path), "teachers.object=resnet152:IMAGENET1K_V2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'hub' / 'checkpoints' / 'resnet152-f82ba261.pth'}: no such file")
    assert len(err.splitlines()) == 1 and "https://download.pytorch.org/models/resnet152-f82ba261.pth" in err
