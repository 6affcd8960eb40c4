"""A hand is a hand everywhere: a box each hand-object source writes as a hand (or object) lands in
the student's hand (or object) map term, built through the real functions of each side.

One box (0, 0, 0.3, 0.3) of score 0.9 on a 4x4 map covers cells x, y in {0, 1}: 4 of 16 cells at
target 0.9. Against student logits of -20 everywhere, BCE-with-logits per such cell is
0.9 * 20 + 0.1 * log(1 + e^-20) ~= 18.0 and ~2e-9 per empty cell, so the map term of the box's kind
is 4 / 16 * 18 = 4.5 and the other term ~0.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.stages.egoexo_release import store_boxes
from pipeline.stages.train_teachers import _Decoded, handobj_frames
from student.losses import egoexo_losses
from student.targets import interaction_map_targets
from teachers import handobj, hoi100doh
from teachers.handobj_train import _detector_targets

BOX, SCORE, CONTACT = [0.0, 0.0, 0.3, 0.3], 0.9, 3  # contact 3: portable object
EXPECTED = 4 / 16 * (0.9 * 20 + 0.1 * np.log1p(np.exp(-20.0)))


def map_terms(rows: np.ndarray) -> dict[str, float]:
    """The student's two map loss terms for one frame of store rows [K, 7], against logits of -20."""
    maps = interaction_map_targets(rows[None], np.zeros(1, np.float32), np.zeros(1), (0, 0, 1, 1), False, (4, 4))
    losses = egoexo_losses({"interaction_map": torch.full((1, 2, 1, 4, 4), -20.0)},
                           {"interaction_map": torch.from_numpy(maps)[None]}, {"hand_map": 1.0, "object_map": 1.0})
    return {"hand": losses["loss_hand_map"].item(), "object": losses["loss_object_map"].item()}


def check_lands_in(rows: np.ndarray, kind: str) -> None:
    terms = map_terms(rows)
    other = "object" if kind == "hand" else "hand"
    assert terms[kind] == pytest.approx(EXPECTED, rel=1e-4)
    assert terms[other] < 1e-6


class EchoDetector(nn.Module):
    """Stands in for a trained demo detector: returns, for every image, the detections it was given
    (torchvision's output layout: px boxes, scores, detector labels, contact states)."""

    def __init__(self, detections: dict[str, torch.Tensor]):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # detect() reads the device from the parameters
        self.detections = detections

    def forward(self, images):
        return [dict(self.detections) for _ in images]


@pytest.mark.parametrize("kind", ["hand", "object"])
def test_demo_detector_box_from_ground_truth_lands_in_its_student_map(kind):
    """Ground truth -> train-teachers annotations -> detector labels -> teacher's store rows -> student map."""
    size = handobj.DEFAULT_SPEC.size
    frame = {"hands": [{"box": BOX, "contact": CONTACT}] if kind == "hand" else [],
             "objects": [{"box": BOX, "category": "cup"}] if kind == "object" else []}
    data = _Decoded(np.zeros((1, 1, size, size, 3), np.uint8), np.zeros((1, 1)), np.zeros(1), [{"fps": 4, "frames": [frame]}])
    frames, annotations = handobj_frames(data)
    target = _detector_targets(annotations, size)[0]
    detector = EchoDetector({**target, "scores": torch.full((len(target["labels"]),), SCORE)})
    teacher = handobj.HandObjectTeacher(detector, handobj.make_meta())
    rows = teacher.predict(frames[None], np.zeros((1, 1), np.float32))["handobj/boxes"][0, 0]
    np.testing.assert_allclose(rows[0, :5], [*BOX, SCORE], atol=1e-6)
    assert rows[0, 6] == (CONTACT if kind == "hand" else 0)
    check_lands_in(rows, kind)


@pytest.mark.parametrize("kind", ["hand", "object"])
def test_100doh_detection_lands_in_its_student_map(kind):
    """The 100DOH teacher's per-class selection (their class order) -> store rows -> student map."""
    label = hoi100doh.CLASSES.index("hand" if kind == "hand" else "targetobject")
    probs = torch.full((1, len(hoi100doh.CLASSES)), 0.05)
    probs[0, label] = SCORE
    boxes = torch.zeros(1, 4 * len(hoi100doh.CLASSES))
    boxes[0, 4 * label : 4 * label + 4] = torch.tensor(BOX) * 100  # px of a 100 x 100 frame
    contact = torch.zeros(1, 5)
    contact[0, CONTACT] = 1.0
    out = {"probs": probs, "boxes": boxes, "contact": contact, "side": torch.zeros(1), "offset": torch.zeros(1, 3)}
    found = hoi100doh.select_detections(out, scale=1.0)
    found["boxes"] = found["boxes"] / 100
    rows = handobj.pack_boxes([found])[0]
    assert rows[0, 6] == (CONTACT if kind == "hand" else 0)
    check_lands_in(rows, kind)


@pytest.mark.parametrize("kind", ["hand", "object"])
def test_release_detection_imported_lands_in_its_student_map(kind):
    """A 100DOH release detection (box px, score, contact state, offset, side) imported into the store."""
    dets = np.array([[*(np.array(BOX) * [200, 100, 200, 100]), SCORE, CONTACT, 0, 0, 0, 1]], np.float32)
    rows, dropped = store_boxes(dets if kind == "object" else None, dets if kind == "hand" else None, 200, 100, 4)
    assert dropped == 0 and rows[0, 6] == (CONTACT if kind == "hand" else 0)
    check_lands_in(rows, kind)
