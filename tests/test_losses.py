import math

import pytest
import torch
import torch.nn.functional as F

from student.backbones import create_backbone
from student.heads import EgoExoStudent
from student.losses import PAPER_TEMPERATURE, PAPER_WEIGHTS, distillation_kl, egoexo_losses, interaction_map_bce

ONES = dict(action=1.0, ego=1.0, object=1.0, hand_map=1.0, object_map=1.0)




def test_paper_weights_from_the_ego_exo_configs():
    assert PAPER_WEIGHTS == dict(action=0.5, ego=0.1, object=0.5, hand_map=1.0, object_map=1.0)
    assert PAPER_TEMPERATURE == 1.0


def test_kl_of_identical_distributions_is_zero():
    logits = torch.randn(4, 10)
    assert distillation_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(logits, logits + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant


def test_kl_worked_example():
    # Teacher softmax([ln 3, 0]) = [0.75, 0.25], student uniform:
    # KL = 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5) = 0.1308121; the second row matches (KL 0).
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    out = egoexo_losses({"ego": student}, {"ego": teacher}, {"ego": 0.1})
    assert out["loss_ego"].item() == pytest.approx(0.1 * 0.1308121 / 2, rel=1e-5)


def test_kl_temperature_scales_by_t_squared():
    # At T=2 the teacher [2 ln 3, 0] softens to [0.75, 0.25] again; loss is KL * T^2.
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])
    student = torch.zeros(1, 2)
    assert distillation_kl(student, teacher, temperature=2.0).item() == pytest.approx(4 * 0.1308121, rel=1e-5)


def test_kl_matches_the_ego_exo_formula():
    # Ego-Exo slowfast/models/losses.py loss_fn_kd, mode "none".
    torch.manual_seed(0)
    s, t, temp = torch.randn(6, 1000), torch.randn(6, 1000) * 3, 1.7
    reference = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / temp, -1), F.softmax(t / temp, -1))
    assert distillation_kl(s, t, temp).item() == pytest.approx(reference.item() * temp**2, rel=1e-5)


def test_action_cross_entropy_and_multilabel_bce():
    out = egoexo_losses({"action": torch.zeros(2, 3)}, {"action": torch.tensor([0, 2])}, {"action": 0.5})
    assert out["loss_action"].item() == pytest.approx(0.5 * math.log(3.0), rel=1e-6)
    multi = egoexo_losses({"action": torch.zeros(2, 3)}, {"action": torch.tensor([[1, 0, 1], [0, 0, 0]])},
                          {"action": 1.0}, multilabel=True)
    assert multi["loss_action"].item() == pytest.approx(math.log(2.0), rel=1e-6)


def _map_example():
    # Logit ln 3 -> p = 0.75: BCE is -ln 0.75 = 0.2876821 on target 1, -ln 0.25 = 1.3862944 on 0.
    logits = torch.full((2, 2, 2, 2, 2), math.log(3.0))
    target = torch.zeros(2, 2, 2, 2, 2)
    target[0] = 1.0  # sample 0 all ones, sample 1 all zeros
    return logits, target


def test_map_bce_with_and_without_mask():
    logits, target = _map_example()
    w = dict(hand_map=1.0, object_map=2.0)
    out = egoexo_losses({"interaction_map": logits}, {"interaction_map": target}, w)
    both = (0.2876821 + 1.3862944) / 2
    assert out["loss_hand_map"].item() == pytest.approx(both, rel=1e-5)
    assert out["loss_object_map"].item() == pytest.approx(2 * both, rel=1e-5)
    masked = egoexo_losses({"interaction_map": logits},
                           {"interaction_map": target, "interaction_map_valid": torch.tensor([True, False])}, w)
    assert masked["loss_hand_map"].item() == pytest.approx(0.2876821, rel=1e-5)


def test_map_channels_are_hand_then_object():
    logits = torch.zeros(1, 2, 1, 1, 1)
    logits[:, 1] = 100.0  # object channel confidently on
    target = torch.ones(1, 2, 1, 1, 1)
    out = egoexo_losses({"interaction_map": logits}, {"interaction_map": target}, ONES)
    assert out["loss_hand_map"].item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert out["loss_object_map"].item() == pytest.approx(0.0, abs=1e-6)


def test_no_valid_map_gives_a_zero_that_keeps_the_graph():
    logits, target = _map_example()
    logits.requires_grad_(True)
    loss = interaction_map_bce(logits[:, 0], target[:, 0], torch.zeros(2))
    assert loss.item() == 0.0 and loss.requires_grad


def test_zero_weight_or_missing_target_omits_the_term():
    outputs = {"action": torch.zeros(2, 3), "ego": torch.zeros(2, 2), "object": torch.zeros(2, 4),
               "interaction_map": torch.zeros(2, 2, 1, 2, 2)}
    targets = {"action": torch.tensor([0, 1]), "ego": torch.zeros(2, 2), "interaction_map": torch.zeros(2, 2, 1, 2, 2)}
    out = egoexo_losses(outputs, targets, dict(PAPER_WEIGHTS, hand_map=0.0))
    assert set(out) == {"loss_action", "loss_ego", "loss_object_map"}  # no object target, hand weight 0
    assert egoexo_losses(outputs, targets, {}) == {}


def test_wanted_term_without_model_output_is_an_error():
    with pytest.raises(KeyError, match="interaction_map"):
        egoexo_losses({"action": torch.zeros(1, 3)}, {"interaction_map": torch.zeros(1, 2, 1, 1, 1)}, ONES)


def test_map_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        egoexo_losses({"interaction_map": torch.zeros(1, 2, 8, 4, 4)},
                      {"interaction_map": torch.zeros(1, 2, 8, 7, 7)}, ONES)


def test_float16_teacher_logits_are_accepted():
    student = torch.randn(3, 5)
    out = egoexo_losses({"object": student}, {"object": student.half()}, {"object": 1.0})
    assert out["loss_object"].dtype == torch.float32
    assert out["loss_object"].item() == pytest.approx(0.0, abs=1e-5)


# -- with a model -------------------------------------------------------------


def _tiny_batch(num_actions=4, num_objects=6, batch=3):
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(batch, 3, 8, 32, 32, generator=g)
    maps = (torch.rand(batch, 2, 8, 2, 2, generator=g) > 0.7).float() * 0.9
    targets = {"action": torch.randint(0, num_actions, (batch,), generator=g),
               "ego": torch.randn(batch, 2, generator=g) * 2,
               "object": torch.randn(batch, num_objects, generator=g) * 2,
               "interaction_map": maps,
               "interaction_map_valid": torch.tensor([True] * (batch - 1) + [False])}
    return clip, targets


def _tiny_model(num_actions=4, num_objects=6):
    torch.manual_seed(0)
    return EgoExoStudent(create_backbone("slow_tiny", width=8), num_actions, num_objects, dropout=0.0)


def test_gradients_reach_every_head_and_the_stem():
    model = _tiny_model()
    clip, targets = _tiny_batch()
    losses = egoexo_losses(model(clip), targets, PAPER_WEIGHTS)
    assert set(losses) == {"loss_action", "loss_ego", "loss_object", "loss_hand_map", "loss_object_map"}
    sum(losses.values()).backward()
    for name in ("head.projection", "ego_head", "object_head", "map_head.score", "backbone.s1.pathway0_stem.conv"):
        grad = model.get_submodule(name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_each_term_only_trains_its_own_head():
    model = _tiny_model()
    clip, targets = _tiny_batch()
    egoexo_losses(model(clip), targets, {"ego": 1.0})["loss_ego"].backward()
    assert model.ego_head.weight.grad.abs().sum() > 0
    assert model.head.projection.weight.grad is None and model.map_head.score.weight.grad is None


def test_sgd_steps_reduce_the_total_loss():
    model = _tiny_model()
    clip, targets = _tiny_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = []
    for _ in range(8):
        loss = sum(egoexo_losses(model(clip), targets, PAPER_WEIGHTS).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.8 * history[0], history
