"""Each teacher's fit learns a tiny synthetic problem to clearly-above-chance held-out scores (seeded)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from teachers import ego, ego_train, handobj, handobj_train, objects, objects_train

SKIN = (224, 172, 140)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(30, 170, 3)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def ego_clips(n: int, seed: int, size: int = 80, t: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Ego (1): a large hand rising from the bottom edge. Exo (0): a small distant person,
    whose head is skin-coloured too, so colour alone does not decide."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    clips = np.empty((n, t, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        bg = _background(rng, size, size)
        x0, dx, top = int(rng.integers(10, size - 10)), int(rng.integers(-3, 4)), int(rng.integers(10, size // 2))
        for k in range(t):
            img, cx = bg.copy(), x0 + dx * k
            if label == 1:
                cv2.ellipse(img, (cx, size), (14, 26), 0, 0, 360, SKIN, -1)
            else:
                cv2.rectangle(img, (cx - 3, top), (cx + 3, top + 16), (60, 60, 150), -1)
                cv2.circle(img, (cx, top - 3), 3, SKIN, -1)
            clips[i, k] = img
    return clips, labels


def object_frames(n: int, seed: int, size: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a red disc; class 1: a blue square; random place and size."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    frames = np.empty((n, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        img = _background(rng, size, size)
        r = int(rng.integers(6, 14))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        if label == 0:
            cv2.circle(img, (cx, cy), r, (220, 30, 30), -1)
        else:
            cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), (30, 30, 220), -1)
        frames[i] = img
    return frames, labels


def handobj_frames(n: int, seed: int, size: int = 128) -> tuple[np.ndarray, list[dict]]:
    """A blue rectangle (object) and a skin rectangle (hand); half the hands overlap the
    object's edge (contact 3, portable object), the rest are well apart (contact 0)."""
    rng = np.random.default_rng(seed)
    frames = np.empty((n, size, size, 3), np.uint8)
    targets = []
    for i in range(n):
        img = _background(rng, size, size)
        (ow, oh), (ox, oy) = rng.integers(16, 36, 2), rng.integers(0, size - 40, 2)
        (hw, hh), touching = rng.integers(14, 30, 2), rng.random() < 0.5
        if touching:
            hx = int(np.clip(ox + ow - hw // 2, 0, size - hw))
            hy = int(np.clip(oy + rng.integers(-5, 6), 0, size - hh))
        else:
            while True:
                hx, hy = rng.integers(0, size - max(hw, hh), 2)
                if hx > ox + ow + 10 or hx + hw < ox - 10 or hy > oy + oh + 10 or hy + hh < oy - 10:
                    break
        cv2.rectangle(img, (int(ox), int(oy)), (int(ox + ow), int(oy + oh)), (40, 60, 210), -1)
        cv2.rectangle(img, (int(hx), int(hy)), (int(hx + hw), int(hy + hh)), SKIN, -1)
        frames[i] = img
        boxes = np.array([[hx, hy, hx + hw, hy + hh], [ox, oy, ox + ow, oy + oh]], np.float32) / size
        targets.append({"boxes": boxes, "kinds": np.array([0, 1]), "contact": np.array([3 if touching else 0, 0])})
    return frames, targets


def test_ego_fit_learns_ego_vs_exo():
    train, test = ego_clips(96, seed=0), ego_clips(64, seed=1)
    torch.manual_seed(0)
    model = ego.build()
    steps = []
    history = ego_train.fit(model, *train, epochs=4, seed=0, progress=lambda done, total, loss: steps.append((done, total)))
    assert steps[-1] == (len(steps), 4 * 6)
    assert history[-1] < history[0]
    result = ego_train.evaluate(model, *test)
    assert result["chance"] < 0.65
    assert result["accuracy"] >= result["chance"] + 0.2, result


def test_object_fit_learns_disc_vs_square():
    train, test = object_frames(192, seed=0), object_frames(96, seed=1)
    torch.manual_seed(0)
    model = objects.build(num_classes=2)
    history = objects_train.fit(model, *train, epochs=3, seed=0)
    assert history[-1] < history[0]
    result = objects_train.evaluate(model, *test)
    assert result["accuracy"] >= result["chance"] + 0.3, result  # seeds 0-2 gave 0.94-0.95


def test_handobj_fit_finds_hands_objects_and_contact(tmp_path):
    train, test = handobj_frames(120, seed=0), handobj_frames(40, seed=1)
    torch.manual_seed(0)
    model = handobj.build()
    history = handobj_train.fit(model, *train, epochs=7, seed=0)
    assert history[-1] < 0.5 * history[0]
    result = handobj_train.evaluate(model, *test)
    assert result["hand_ap50"] > 0.5, result
    assert result["object_ap50"] > 0.5, result
    assert result["contact_accuracy"] > 0.7, result  # half the hands touch: chance is 0.5

    # the teacher's rows agree with the ground truth of the frame
    teacher = handobj.HandObjectTeacher(model, handobj.make_meta())
    frames, targets = test
    rows = teacher.predict(frames[None, :8], np.zeros((1, 8), np.float32))["handobj/boxes"][0]
    hits = 0
    for row, target in zip(rows, targets[:8]):
        best_hand = row[row[:, 5] == 0][0]  # rows are score-sorted
        iou = box_iou(torch.from_numpy(best_hand[None, :4]), torch.from_numpy(target["boxes"][:1]))
        hits += float(iou) >= 0.5 and best_hand[6] == target["contact"][0]
    assert hits >= 5, rows[:, :2]


def test_average_precision_all_point_interpolation():
    # ranked: TP, FP, TP with 3 ground truths -> precision envelope 1, 2/3, 2/3 over recall steps 1/3, 0, 1/3
    ap = handobj_train.average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 3)
    assert ap == pytest.approx(1 / 3 + 2 / 9)
    assert handobj_train.average_precision(np.array([0.2, 0.9]), np.array([True, True]), 2) == pytest.approx(1.0)
    assert handobj_train.average_precision(np.array([]), np.array([], bool), 4) == 0.0
    assert np.isnan(handobj_train.average_precision(np.array([0.5]), np.array([False]), 0))


def test_match_takes_each_ground_truth_once():
    gt = np.array([[0.0, 0.0, 0.5, 0.5]], np.float32)
    pred = np.array([[0.0, 0.0, 0.5, 0.5], [0.01, 0.0, 0.5, 0.5], [0.5, 0.5, 1, 1]], np.float32)
    assert handobj_train._match(pred, gt, 0.5).tolist() == [0, -1, -1]


def test_evaluate_of_perfect_detections_is_one(monkeypatch):
    frames, targets = handobj_frames(4, seed=2)
    perfect = [
        {"boxes": t["boxes"], "scores": np.array([0.9, 0.8], np.float32), "kinds": t["kinds"], "contact": t["contact"]}
        for t in targets
    ]
    monkeypatch.setattr(handobj_train, "detect", lambda *a, **k: perfect)
    assert handobj_train.evaluate(None, frames, targets) == {"hand_ap50": 1.0, "object_ap50": 1.0, "contact_accuracy": 1.0}
