"""``pipeline inspect`` on a hand-written store: Ego-Scores, the class ranking and the clip picture."""
import numpy as np
import pytest

from pipeline.inspect import classes_by_ego_score, clip_ego_scores, draw_clip, inspect_store, signal_stats
from pipeline.io.store import open_store


def test_padding_windows_do_not_count_toward_the_ego_score():
    # Clip 0: two windows, P(ego) 0.75 and 0.25. Clip 1: one second, so its second window is padding
    # (logits 0, P 0.5) and its score is its first window's. Clip 2: no frame at all.
    logit = np.log(3.0)
    ego = np.array([[[0, logit], [0, -logit]], [[0, logit], [0, 0]], [[0, 0], [0, 0]]], np.float32)
    ft = np.full((3, 8), np.nan)
    ft[0], ft[1, :4] = np.arange(8) / 4, np.arange(4) / 4
    scores = clip_ego_scores(ego, ft, 4)
    np.testing.assert_allclose(scores[:2], [0.5, 0.75])
    assert np.isnan(scores[2])
    np.testing.assert_allclose(clip_ego_scores(ego, ft, None)[1], 0.625)  # what counting the padding gives


def test_stats_rank_the_classes_by_mean_ego_score(fabricated_store):
    stats = signal_stats(fabricated_store["store"])
    assert (stats["ok"], stats["failed"]) == (6, 1)
    # ok clips score 0.75, 0.75, 0.75, 0.25, 0.25, 0.25: mean 0.5, half of them over 0.5
    assert stats["ego_prob_mean"] == pytest.approx(0.5, abs=1e-3)
    assert stats["ego_prob_frac_over_half"] == pytest.approx(0.5)
    ranking = stats["classes_by_ego_score"]
    # wash hands (0.75, 0.75), cut bread (0.75, 0.25), walk dog (0.25, 0.25; the failed 0.99 clip left out)
    assert [r["class"] for r in ranking] == ["wash hands", "cut bread", "walk dog"]
    assert [r["ego_score"] for r in ranking] == pytest.approx([0.75, 0.5, 0.25], abs=1e-3)
    assert [r["clips"] for r in ranking] == [2, 2, 2]
    assert ranking[0]["example_clip"] in ("clip0", "clip1")


def test_a_moved_manifest_costs_only_the_ranking(fabricated_store):
    fabricated_store["manifest"].unlink()
    stats = signal_stats(fabricated_store["store"])
    assert stats["ok"] == 6 and stats["classes_by_ego_score"].startswith("not ranked")


def test_multilabel_clips_count_for_each_class(fabricated_store):
    store = open_store(fabricated_store["store"])
    ranking = classes_by_ego_score(store, np.array([0, 2, 4]), np.array([0.9, 0.3, np.nan]))
    assert [(r["class"], r["clips"]) for r in ranking] == [("wash hands", 1), ("cut bread", 1)]  # NaN: no score


def test_inspect_prints_the_ranking(fabricated_store, capsys):
    assert inspect_store(str(fabricated_store["store"]), verify=True) == 0
    out = capsys.readouterr().out
    assert "classes by mean Ego-Score" in out
    lines = [line for line in out.splitlines() if line.strip().startswith(("1.", "2.", "3."))]
    assert ["wash hands" in lines[0], "cut bread" in lines[1], "walk dog" in lines[2]] == [True] * 3


def test_clip_picture_shows_boxes_and_the_students_interaction_map(fabricated_store, tmp_path):
    import cv2

    store = open_store(fabricated_store["store"])
    shown = draw_clip(store, "clip0", tmp_path / "c.png")
    assert shown["label"] == "wash hands" and shown["ego_score"] == pytest.approx(0.75, abs=1e-3)
    assert shown["top_objects"][0][0] == "knife"
    img = cv2.imread(str(tmp_path / "c.png"))
    # 8 frames of 213 x 160 (short side 160) over their 160 px centre crops, and a 20 px footer
    assert img.shape == (160 + 160 + 20, 8 * 213, 3)
    # The crop is x 26..186 of 213: the hand (x 0.25..0.5 = 53..106 px, y 0.5..0.75) falls in crop
    # columns floor(27/160 * 7) = 1 .. floor(80/160 * 7) = 3 and rows 3 .. 5 of the 7 x 7 map.
    cell = 160 / 7
    left = (213 - 160) // 2

    def pixel(row, col):  # BGR at a cell centre of frame 0's map tile
        return img[160 + int((row + 0.5) * cell), left + int((col + 0.5) * cell)].astype(int)

    hand = pixel(4, 2)
    assert hand[1] > 120 and hand[1] > hand[0] + 60  # green: hand score 0.9
    assert pixel(4, 0)[1] < 60 and pixel(0, 6)[1] < 60  # outside the box: the dimmed frame
    obj = pixel(3, 4)  # the object (x 0.5..0.7 -> crop columns 3..5, y rows 3..4), right of the hand
    assert obj[0] > 120 and obj[0] > obj[1] + 60
