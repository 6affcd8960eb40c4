"""Ego-Exo training losses as pure functions returning named, weighted terms.

The training loop sums the returned dict and logs each term.
"""

from __future__ import annotations

from typing import Mapping

import torch.nn.functional as F
from torch import Tensor

from pipeline.io.signals_schema import HAND, OBJECT

# Loss weights and distillation temperature of the Ego-Exo release, Kinetics pre-training
# configs facebookresearch/Ego-Exo configs/ego-exo/k400/Ego_Exo_{SLOWFAST,SLOW}_8x8_R50.yaml:
# LOSS.CE_LOSS_WEIGHT 0.5; KD.ALPHA_LIST [0.1, 0.5] for KD.NUM_CLASSES_LIST [2, 1000]
# (ego, object); KD.T_LIST [1.0, 1.0]; HANDOBJ.HAND_LOSS_WEIGHT 1.0, OBJ_LOSS_WEIGHT 1.0,
# HANDOBJ.ALPHA 1.0; KD.BALANCE_LOSS / HANDOBJ.BALANCE_LOSS False (CE not down-weighted further).
PAPER_WEIGHTS = dict(action=0.5, ego=0.1, object=0.5, hand_map=1.0, object_map=1.0)
PAPER_TEMPERATURE = 1.0


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), batch mean, times T^2 (Hinton et al.)."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def interaction_map_bce(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean BCE-with-logits over the cells of [B,T,H,W] maps (the release's mean over B*T*H*W),
    over the samples ``valid`` [B] or the time steps ``valid`` [B,T] marks (frames past a
    video's end have no teacher map).

    With nothing valid the result is a zero that still depends on ``logits``, so every
    rank in a distributed step has the same graph.
    """
    per_cell = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    per_step = per_cell.flatten(2).mean(dim=2)  # [B, T]
    if valid is None:
        return per_step.mean()
    valid = valid.to(per_step.dtype)
    if valid.dim() == 1:
        valid = valid[:, None].expand_as(per_step)
    return (per_step * valid).sum() / valid.sum().clamp(min=1.0)


def _action_loss(logits: Tensor, target: Tensor, multilabel: bool) -> Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return F.cross_entropy(logits.float(), target.long())


def egoexo_losses(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor], weights: Mapping[str, float],
                  temperature: float = PAPER_TEMPERATURE, multilabel: bool = False) -> dict[str, Tensor]:
    """Weighted Ego-Exo loss terms.

    Args:
        outputs: the student's dict (``action``, ``ego``, ``object``, ``interaction_map``).
        targets: ``action`` (class indices [B], or multi-hot [B,A] when ``multilabel``),
            ``ego`` teacher logits [B,2], ``object`` teacher logits [B,C],
            ``interaction_map`` soft targets in [0,1] [B,2,T,H,W] (channels ``HAND``, ``OBJECT``),
            optional ``interaction_map_valid`` [B] or [B,T] (samples or time steps without a
            teacher map are left out), ``noun`` class indices [B] (EPIC-100).
        weights: per term (``action``, ``noun``, ``ego``, ``object``, ``hand_map``, ``object_map``);
            see :data:`PAPER_WEIGHTS`.
        temperature: distillation temperature for the ego and object terms.
        multilabel: BCE-with-logits for the action term instead of cross-entropy.

    Returns:
        ``loss_action``, ``loss_noun``, ``loss_ego``, ``loss_object``, ``loss_hand_map``, ``loss_object_map``,
        each already multiplied by its weight. A term whose weight is 0 (or not given) or
        whose target is missing is left out, not computed.
    """

    def wanted(term: str, target_key: str) -> bool:
        if not weights.get(term, 0.0) or targets.get(target_key) is None:
            return False
        if target_key not in outputs:
            raise KeyError(f"loss term {term!r} has a target and weight but the model gives no {target_key!r} output")
        return True

    losses: dict[str, Tensor] = {}
    if wanted("action", "action"):
        losses["loss_action"] = weights["action"] * _action_loss(outputs["action"], targets["action"], multilabel)
    if wanted("noun", "noun"):  # EPIC-100: verb (action) and noun cross-entropies are summed
        losses["loss_noun"] = weights["noun"] * F.cross_entropy(outputs["noun"].float(), targets["noun"].long())
    for term in ("ego", "object"):
        if wanted(term, term):
            losses[f"loss_{term}"] = weights[term] * distillation_kl(outputs[term], targets[term], temperature)

    map_terms = [(term, channel) for term, channel in (("hand_map", HAND), ("object_map", OBJECT))
                 if wanted(term, "interaction_map")]
    if map_terms:
        logits, target = outputs["interaction_map"], targets["interaction_map"]
        if logits.shape != target.shape:
            raise ValueError(f"interaction map target shape {tuple(target.shape)} != output {tuple(logits.shape)}")
        valid = targets.get("interaction_map_valid")
        for term, channel in map_terms:
            losses[f"loss_{term}"] = weights[term] * interaction_map_bce(logits[:, channel], target[:, channel], valid)
    return losses
