"""train-teachers dispatches on its registry of trainers: one per teacher kind, no branching on kinds."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.stages import train_teachers
from pipeline.stages.train_teachers import (
    TRAINERS,
    FitSettings,
    TrainedTeacher,
    Trainer,
    TrainTeachersConfig,
    register_trainer,
    run_train_teachers,
)
from teachers import list_teachers, load_teacher, objects


def test_every_trainer_is_a_teacher_kind_with_a_settings_section():
    assert list(TRAINERS) == TrainTeachersConfig().teachers == ["ego", "object", "handobj"]
    assert set(TRAINERS) <= set(list_teachers())
    fields = {f.name for f in dataclasses.fields(TrainTeachersConfig)}
    assert set(TRAINERS) <= fields
    assert [k for k, t in TRAINERS.items() if t.needs_ground_truth] == ["object", "handobj"]


def test_a_second_trainer_for_a_kind_is_refused():
    before = dict(TRAINERS)
    with pytest.raises(ValueError, match="'ego' is already registered"):
        register_trainer("ego")(lambda job, settings, progress: None)
    assert TRAINERS == before


def test_kinds_trained_on_ground_truth_need_it():
    with pytest.raises(ValueError, match="training the handobj teacher needs 'ground_truth'"):
        TrainTeachersConfig(manifest="m.csv", video_root="v", out="o", teachers=["ego", "handobj"]).validate()
    with pytest.raises(ValueError, match=r"unknown kinds \['hoi100doh'\]; known: \['ego', 'object', 'handobj'\]"):
        TrainTeachersConfig(manifest="m.csv", video_root="v", out="o", teachers=["hoi100doh"]).validate()


def test_the_stage_saves_what_the_kinds_trainer_returns(tiny_world, tmp_path, monkeypatch):
    """A stand-in object trainer: it gets the job and the ``object`` settings section, and the stage
    writes its model with its metadata and rounds its metrics."""
    calls = []

    def fake_train(job, settings, progress):
        calls.append((job.cfg.seed, settings, job.source["videos"]))
        torch.manual_seed(0)
        model = objects.build(num_classes=3, width=8)
        meta = objects.make_meta(["cup", "knife", "phone"], train_metrics={"accuracy": 0.123456})
        return TrainedTeacher(model, objects.DEFAULT_ARCH, {"num_classes": 3, "width": 8}, meta, {"accuracy": 0.123456})

    monkeypatch.setitem(TRAINERS, "object", Trainer(fake_train, needs_ground_truth=False))
    ce = tiny_world / "charades_ego"
    cfg = load_config(TrainTeachersConfig, None, [
        f"manifest={ce / 'CharadesEgo_v1_train.csv'}", f"video_root={ce / 'videos'}", f"out={tmp_path / 't'}",
        "teachers=[object]", "device=cpu", "seed=7", "object.epochs=2"])
    result = run_train_teachers(cfg)
    (seed, settings, videos), = calls
    assert seed == 7 and settings is cfg.object and isinstance(settings, FitSettings) and settings.epochs == 2
    assert videos == len(train_teachers.load_table(cfg.manifest))
    assert result["metrics"] == {"object": {"accuracy": 0.1235}}
    teacher = load_teacher(result["weights"]["object"])
    assert type(teacher) is objects.ObjectTeacher and teacher.classes == ["cup", "knife", "phone"]
    torch.manual_seed(0)
    expected = objects.build(num_classes=3, width=8).state_dict()
    for k, v in teacher.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), expected[k].numpy(), err_msg=k)
