import pytest
import torch

from student.backbones import create_backbone
from student.heads import EgoExoStudent



def tiny_student(name="slow_tiny", seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(num_actions=5, num_objects=7, dropout=0.0, interaction_maps=True)
    return EgoExoStudent(create_backbone(name, width=8), **{**args, **kwargs})


def test_output_shapes_slow():
    model = tiny_student().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "action": (2, 5), "ego": (2, 2), "object": (2, 7), "interaction_map": (2, 2, 8, 4, 4)}


def test_output_shapes_slowfast_map_on_slow_grid():
    model = tiny_student("slowfast_tiny").eval()
    assert model.head.projection.in_features == 256 + 64  # both pathways pooled and concatenated
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 64, 64))
    assert tuple(out["action"].shape) == (2, 5)
    assert tuple(out["interaction_map"].shape) == (2, 2, 8, 4, 4)


def test_optional_heads_are_absent():
    model = tiny_student(num_objects=0, interaction_maps=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 32, 32))
    assert set(out) == {"action", "ego"}
    assert not any(k.startswith(("object_head", "map_head")) for k in model.state_dict())


def test_head_names_follow_pyslowfast():
    state = tiny_student().state_dict()
    assert tuple(state["head.projection.weight"].shape) == (5, 256)
    assert tuple(state["ego_head.weight"].shape) == (2, 256)
    assert tuple(state["object_head.weight"].shape) == (7, 256)
    assert tuple(state["map_head.hidden.weight"].shape) == (64, 256, 1, 3, 3)  # slow_tiny's head_config
    assert tuple(state["map_head.score.weight"].shape) == (2, 64, 1, 1, 1)
    assert "backbone.s1.pathway0_stem.conv.weight" in state


def test_paper_backbones_get_the_release_map_head_from_their_model_args():
    # Ego-Exo release, HandObjHeadSingle on the slow pathway's res5 (2048 channels):
    # handobjhead.pathway0_conv_fcn0 (512, 2048, 1, 3, 3) + ReLU, score_projection (2, 512, 1, 1, 1).
    from pipeline.stages.common import build_model

    args = dict(backbone="slowfast_r50", num_actions=400, num_objects=1000, dropout=0.0, interaction_maps=True)
    state = build_model(args).state_dict()
    assert tuple(state["map_head.hidden.weight"].shape) == (512, 2048, 1, 3, 3)
    assert tuple(state["map_head.hidden.bias"].shape) == (512,)
    assert tuple(state["map_head.score.weight"].shape) == (2, 512, 1, 1, 1)
    assert float(state["map_head.score.bias"].abs().sum()) == 0.0
    assert float(state["map_head.score.weight"].std()) == pytest.approx(0.01, rel=0.1)  # FC_INIT_STD
    single = build_model({**args, "backbone": "slow_r50", "map_hidden_channels": 0}).state_dict()
    assert "map_head.hidden.weight" not in single
    assert tuple(single["map_head.score.weight"].shape) == (2, 2048, 1, 1, 1)


def test_action_head_is_linear_on_mean_pooled_features():
    model = tiny_student().eval()
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        (feat,) = model.forward_features(clip)
        expected = feat.mean(dim=(2, 3, 4)) @ model.head.projection.weight.T + model.head.projection.bias
        torch.testing.assert_close(model(clip)["action"], expected)


def test_map_head_with_hidden_conv():
    model = tiny_student(map_hidden_channels=16).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 64, 64))
    assert tuple(out["interaction_map"].shape) == (1, 2, 8, 4, 4)
    assert tuple(model.state_dict()["map_head.hidden.weight"].shape) == (16, 256, 1, 3, 3)


def test_reset_action_head_keeps_everything_else():
    model = tiny_student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_action_head(9)
    assert model.num_actions == 9
    after = model.state_dict()
    assert tuple(after["head.projection.weight"].shape) == (9, 256)
    for k, v in before.items():
        if not k.startswith("head."):
            assert torch.equal(after[k], v), k
    with torch.no_grad():
        assert tuple(model.eval()(torch.randn(1, 3, 8, 32, 32))["action"].shape) == (1, 9)


def test_testing_scores_each_training_sized_window_and_averages_probabilities():
    # PySlowFast tests fully convolutionally: avg-pool windows of the training grid (here 64 px
    # crop / stride 16 = 4x4) at stride 1 over the larger test grid, classify each, average softmax.
    model = tiny_student(num_objects=0, interaction_maps=False).eval()
    clip = torch.randn(1, 3, 8, 80, 80)
    with torch.no_grad():
        (feat,) = model.forward_features(clip)
        assert tuple(feat.shape[-2:]) == (5, 5)  # 2 x 2 positions of a 4 x 4 window
        windows = [feat[..., y:y + 4, x:x + 4].mean(dim=(2, 3, 4)) for y in (0, 1) for x in (0, 1)]
        expected = torch.stack([torch.softmax(model.head.projection(w), dim=1) for w in windows]).mean(0)
        torch.testing.assert_close(model.forward_test(clip, (4, 4))["action"], expected)
        sig = torch.stack([torch.sigmoid(model.head.projection(w)) for w in windows]).mean(0)
        torch.testing.assert_close(model.forward_test(clip, (4, 4), multilabel=True)["action"], sig)
        small = torch.randn(1, 3, 8, 64, 64)  # the training size: one position, the training forward
        torch.testing.assert_close(model.forward_test(small, (4, 4))["action"], torch.softmax(model(small)["action"], 1))
