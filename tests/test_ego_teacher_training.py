"""The Ego-Score teacher's training: balanced ego/exo sampling, validation accuracy each epoch,
the best epoch's weights written with their metadata, and the paper-size Slow R50 started
from a Kinetics-format checkpoint by name. Tiny sizes and the demo world's clips only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.stages.train_teachers import TrainTeachersConfig, run_train_teachers, split_pairs
from teachers import ego, ego_train
from teachers.base import read_weights
from teachers.ego_train import EgoVideo, EgoWindows, balanced_keys


def test_each_epoch_draws_ego_and_exo_equally_often():
    """3 ego and 7 exo videos, 2 windows per video: 14 draws per class; every exo video twice,
    the ego videos 4 or 5 times each; starts on the frame grid where a whole window fits."""
    videos = [EgoVideo(f"e{i}.mp4", 0.0, 4.0, 1) for i in range(3)] + [EgoVideo(f"x{i}.mp4", 1.0, 3.0, 0) for i in range(7)]
    data = EgoWindows(videos, ego.DEFAULT_SPEC)  # 4 frames at 4 fps: 1 s windows
    keys = balanced_keys(data, np.random.default_rng(0), windows_per_video=2)
    uses = np.bincount([i for i, _ in keys], minlength=10)
    assert np.bincount(data.labels[[i for i, _ in keys]]).tolist() == [14, 14]
    assert uses[3:].tolist() == [2] * 7 and sorted(uses[:3].tolist()) == [4, 5, 5]
    for i, t0 in keys:
        v = videos[i]
        assert v.start <= t0 <= v.end - 1.0 and (t0 * 4) == int(t0 * 4)


def test_pairs_stay_on_one_side_of_the_validation_split(tiny_world):
    from pipeline.stages.common import load_table

    table = load_table(str(tiny_world / "charades_ego" / "CharadesEgo_v1_train.csv"))
    train, val = split_pairs(table, 0.25, seed=0)
    assert sorted(train + val) == list(range(len(table))) and val
    pair = lambda i: table[i].clip_id.removesuffix("EGO")
    assert not {pair(i) for i in train} & {pair(i) for i in val}


def _teacher_config(world, out, *extra: str) -> TrainTeachersConfig:
    return load_config(TrainTeachersConfig, None, [
        f"manifest={world / 'charades_ego' / 'CharadesEgo_v1_train.csv'}",
        f"test_manifest={world / 'charades_ego' / 'CharadesEgo_v1_test.csv'}",
        f"video_root={world / 'charades_ego' / 'videos'}", f"out={out}", "teachers=[ego]", "device=cpu",
        "ego.val_fraction=0.25", "ego.batch_size=8", "ego.windows_per_video=1", *extra])


def test_the_best_epochs_weights_are_written_with_their_metadata(tiny_world, tmp_path, monkeypatch):
    """Validation accuracies forced to 0.5, 0.9, 0.7: the file holds the weights as they were
    after epoch 1, and its metadata the per-epoch log, the best epoch and the held-out accuracy."""
    scores = iter([0.5, 0.9, 0.7, 0.42])  # three epochs, then the test set
    snapshots = []

    def fake_evaluate(model, data, **kwargs):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(ego_train, "evaluate_windows", fake_evaluate)
    monkeypatch.setattr("teachers.ego_train.evaluate_windows", fake_evaluate)
    cfg = _teacher_config(tiny_world, tmp_path / "teachers", "ego.epochs=3", "ego.arch_kwargs={width: 8}")
    result = run_train_teachers(cfg)
    payload, _ = read_weights(result["weights"]["ego"])
    assert len(snapshots) == 4
    for k, v in payload["state_dict"].items():
        torch.testing.assert_close(v, snapshots[1][k], rtol=0, atol=0, msg=k)
    assert any((snapshots[1][k] != snapshots[2][k]).any() for k in snapshots[1] if snapshots[1][k].is_floating_point())

    meta = payload["meta"]
    assert payload["arch"] == "videoresnet_tiny" and payload["arch_kwargs"] == {"width": 8}
    assert meta["classes"] == ["exo", "ego"] and meta["spec"] == ego.DEFAULT_SPEC.to_dict()
    train = meta["train"]
    assert [e["val_accuracy"] for e in train["epochs"]] == [0.5, 0.9, 0.7]
    assert train["best_epoch"] == 1 and train["best_val_accuracy"] == 0.9
    n_train = train["train_videos"]
    for e in train["epochs"]:  # one window per video of the larger class, per class
        assert e["samples"]["ego"] == e["samples"]["exo"] >= n_train // 2 and np.isfinite(e["train_loss"])
    assert train["val_videos"] > 0 and n_train + train["val_videos"] == meta["source"]["videos"]
    assert meta["train_metrics"]["accuracy"] == 0.42 and result["metrics"]["ego"]["accuracy"] == 0.42


# A few names and shapes of PySlowFast's SLOW_8x8_R50 (video_model_builder.ResNet, width 64)
# and its ResNetBasicHead ``head.projection`` (Kinetics: 400 classes), as the ego teacher must hold them.
SLOW_R50_EGO_SHAPES = {
    "backbone.s1.pathway0_stem.conv.weight": (64, 3, 1, 7, 7),
    "backbone.s4.pathway0_res0.branch2.a.weight": (256, 512, 3, 1, 1),
    "backbone.s5.pathway0_res2.branch2.c.weight": (2048, 512, 1, 1, 1),
    "head.projection.weight": (2, 2048),
    "head.projection.bias": (2,),
}


def test_slow_r50_ego_teacher_has_pyslowfast_names_and_a_two_way_head():
    with torch.device("meta"):
        model = ego.build("slow_r50")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, shape in SLOW_R50_EGO_SHAPES.items():
        assert shapes[name] == shape, name
    assert ego.default_spec("slow_r50").size == 224 and ego.default_spec("slow_r50").num_frames == 8


def test_slow_r50_ego_teacher_starts_from_a_kinetics_checkpoint(tiny_world, tmp_path):
    """A PySlowFast-format checkpoint ({"model_state": ...}, 400-way head) loads into the
    backbone by name; the 2-way head is left as initialised. lr=0 keeps the loaded weights.
    Narrow and one block per stage so the test stays small; the names are slow_r50's."""
    torch.manual_seed(1)
    small = {"width": 8, "depths": [1, 1, 1, 1]}
    kinetics = ego.build("slow_r50", num_classes=400, **small)
    state = {k.removeprefix("backbone."): v for k, v in kinetics.state_dict().items()}
    torch.save({"model_state": state, "epoch": 196}, tmp_path / "SLOW_8x8_R50.pyth")
    cfg = _teacher_config(tiny_world, tmp_path / "teachers", "ego.arch=slow_r50", f"ego.arch_kwargs={small}",
                          f"ego.init={tmp_path / 'SLOW_8x8_R50.pyth'}", "ego.size=32", "ego.epochs=1", "ego.lr=0.0",
                          "test_manifest=null")
    payload, _ = read_weights(run_train_teachers(cfg)["weights"]["ego"])
    saved = payload["state_dict"]
    assert payload["arch"] == "slow_r50" and saved["head.projection.weight"].shape == (2, 256)
    for k, v in state.items():
        if k.startswith("s") and "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(saved[f"backbone.{k}"], v, rtol=0, atol=0, msg=k)
    init = payload["meta"]["train"]["init"]
    assert init["path"].endswith("SLOW_8x8_R50.pyth") and init["skipped"] == ["head.projection.weight", "head.projection.bias"]
    assert payload["meta"]["spec"]["size"] == 32 and payload["meta"]["spec"]["mean"] == [0.45, 0.45, 0.45]


def test_init_is_refused_for_the_tiny_arch(tmp_path):
    with pytest.raises(Exception, match="'ego.init'"):
        _teacher_config(tmp_path, tmp_path / "t", "ego.init=k.pyth")
