"""The optimisation recipe as PySlowFast runs it: schedule, optimizer groups, precise BN, ensembles, metrics."""
import math

import numpy as np
import pytest
import torch

from student.backbones import create_backbone
from student.heads import EgoExoStudent
from student.losses import egoexo_losses, interaction_map_bce
from student.metrics import topk_hits
from student.train import OptimConfig, evaluate_scores, lr_at, param_groups, precise_bn, predict


def test_cosine_warmup_ends_at_the_cosine_value_not_the_base_lr():
    # The release's K400 recipe: base lr 0.8, 200 epochs, 34 warm-up epochs from 0.08.
    cfg = OptimConfig(lr=0.8, epochs=200, warmup_epochs=34.0, warmup_start_lr=0.08)
    end = 0.8 * 0.5 * (math.cos(math.pi * 34 / 200) + 1)
    assert end == pytest.approx(0.7443, abs=1e-4)
    assert lr_at(0.0, cfg) == pytest.approx(0.08)
    assert lr_at(17.0, cfg) == pytest.approx(0.08 + (end - 0.08) / 2)
    assert lr_at(34.0, cfg) == pytest.approx(end)
    assert lr_at(100.0, cfg) == pytest.approx(0.4)
    assert lr_at(200.0, cfg) == pytest.approx(0.0, abs=1e-12)


def test_steps_with_relative_lrs():
    # The EPIC-100 recipe: lr 0.02, steps [0, 20, 25] x [1, 0.1, 0.01] over 30 epochs.
    cfg = OptimConfig(lr=0.02, epochs=30, lr_policy="steps", steps=[0, 20, 25], lrs=[1, 0.1, 0.01])
    assert [lr_at(e, cfg) for e in (0, 19.99, 20, 24.5, 25, 29.9)] == pytest.approx(
        [0.02, 0.02, 0.002, 0.002, 0.0002, 0.0002])


def test_lr_scales_linearly_with_the_batch():
    cfg = OptimConfig(lr=0.8, base_batch_size=512, batch_size=64, epochs=200, warmup_epochs=34, warmup_start_lr=0.08)
    assert lr_at(0.0, cfg) == pytest.approx(0.01)
    assert lr_at(100.0, cfg) == pytest.approx(0.05)


def test_bad_step_schedules_are_refused():
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.steps"):
        load_config(OptimConfig, None, ["lr_policy=steps", "steps=[5, 10]", "lrs=[1, 0.1]"])
    with pytest.raises(ConfigError, match="optim.steps"):
        load_config(OptimConfig, None, ["lr_policy=steps", "steps=[0, 10]", "lrs=[1]"])


def _tiny(**kwargs):
    torch.manual_seed(0)
    return EgoExoStudent(create_backbone("slow_tiny", width=8), num_actions=3, num_objects=4, **kwargs)


def test_batchnorm_parameters_get_no_weight_decay_and_sgd_is_nesterov():
    model = _tiny()
    decayed, bn = param_groups(model, OptimConfig(weight_decay=1e-4))
    names = {id(p): n for n, p in model.named_parameters()}
    bn_names = sorted(names[id(p)] for p in bn["params"])
    assert bn["weight_decay"] == 0.0 and decayed["weight_decay"] == 1e-4
    assert bn_names and all("bn" in n for n in bn_names)  # the release splits on "bn" in the name
    assert not any("bn" in names[id(p)] for p in decayed["params"])
    assert len(bn["params"]) + len(decayed["params"]) == len(list(model.parameters()))
    assert "backbone.s1.pathway0_stem.bn.weight" in bn_names and "head.projection.weight" not in bn_names


def test_precise_bn_sets_the_exact_mean_of_the_batches():
    model = torch.nn.Sequential(torch.nn.BatchNorm3d(2))
    model[0].running_mean.fill_(5.0)
    batches = [{"video": torch.full((2, 2, 1, 1, 1), v)} for v in (1.0, 3.0, 8.0)]
    precise_bn(model, batches, num_batches=2, device="cpu")
    torch.testing.assert_close(model[0].running_mean, torch.tensor([2.0, 2.0]))  # (1 + 3) / 2, batch 3 unused
    assert model[0].momentum == 0.1  # restored


class _FixedViews(torch.utils.data.Dataset):
    """Two clips, two views each, with given logits per view (through a model that returns them)."""

    multilabel = False

    def __init__(self, logits):
        self.logits = torch.tensor(logits, dtype=torch.float32)
        self.clips = [None, None]

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"video": self.logits[i], "index": i // 2}


class _Passthrough(torch.nn.Module):
    def forward_test(self, x, window, multilabel):
        return {"action": torch.softmax(x, dim=1)}


@pytest.mark.parametrize("ensemble", ["sum", "mean", "max"])
def test_view_ensembles_combine_softmax_scores(ensemble):
    logits = [[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [0.0, 3.0]]
    probs = torch.softmax(torch.tensor(logits), dim=1).numpy()
    scores = predict(_Passthrough(), _FixedViews(logits), batch_size=3, num_workers=0, ensemble=ensemble)["action"]
    combine = {"sum": lambda a, b: a + b, "mean": lambda a, b: (a + b) / 2, "max": np.maximum}[ensemble]
    np.testing.assert_allclose(scores, [combine(probs[0], probs[1]), combine(probs[2], probs[3])], rtol=1e-6)


def test_epic_action_accuracy_needs_verb_and_noun_in_their_top_k():
    class Clip:
        def __init__(self, verb, noun):
            self.labels, self.noun = (verb,), noun

    class Data:
        multilabel = False
        clips = [Clip(0, 1), Clip(1, 1), Clip(2, 0), Clip(0, 2)]

    verbs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.15, 0.8, 0.05]])
    nouns = np.array([[0.1, 0.8, 0.1], [0.9, 0.04, 0.06], [0.6, 0.3, 0.1], [0.3, 0.2, 0.5]])
    m = evaluate_scores({"action": verbs, "noun": nouns}, Data())
    # verb top-1 right: clips 0, 1; noun top-1 right: clips 0, 2, 3; both: clip 0.
    assert (m["top1"], m["noun_top1"], m["action_top1"]) == (0.5, 0.75, 0.25)
    assert (m["top5"], m["noun_top5"], m["action_top5"]) == (1.0, 1.0, 1.0)  # 3 classes: top-5 is all
    # top-2: verbs right for clips 0, 1, 3 (clip 2's verb 2 ranks last); nouns for 0, 2, 3
    # (clip 1's noun 1 ranks last): an action counts at k=2 for clips 0 and 3.
    verb2, noun2 = topk_hits(verbs, np.array([0, 1, 2, 0]), 2), topk_hits(nouns, np.array([1, 1, 0, 2]), 2)
    assert verb2.tolist() == [True, True, False, True] and noun2.tolist() == [True, False, True, True]
    assert (verb2 & noun2).tolist() == [True, False, False, True]


def test_noun_cross_entropy_is_summed_with_the_verbs():
    verb, noun = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    out = egoexo_losses({"action": verb, "noun": noun}, {"action": torch.tensor([0]), "noun": torch.tensor([2])},
                        {"action": 1.0, "noun": 1.0})
    assert out["loss_action"].item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-6)
    assert out["loss_noun"].item() == pytest.approx(math.log(3.0), rel=1e-6)


def test_map_loss_masks_time_steps_past_the_video_end():
    logits = torch.zeros(2, 3, 2, 2)  # [B, T, H, W] logits 0: BCE ln 2 against 0 or 1
    target = torch.zeros(2, 3, 2, 2)
    logits[1, 2] = 50.0  # a confident "hand" on a padded step of sample 1: would cost 50 per cell
    valid = torch.tensor([[True, True, True], [True, True, False]])
    assert interaction_map_bce(logits, target, valid).item() == pytest.approx(math.log(2.0), rel=1e-6)
    unmasked = interaction_map_bce(logits, target).item()
    assert unmasked == pytest.approx((5 * math.log(2.0) + 50.0) / 6, rel=1e-4)
