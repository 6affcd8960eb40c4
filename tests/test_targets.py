import numpy as np
import pytest

from student.targets import interaction_map_targets, nearest_frames, soft_logits_for_window

FULL = (0.0, 0.0, 1.0, 1.0)


def box(x1, y1, x2, y2, score=0.9, kind=0, contact=0):
    return [x1, y1, x2, y2, score, kind, contact]


def one_frame(*rows):
    """boxes [1, K, 7], frame_time [1], sample_times [1]."""
    return np.array([rows], dtype=np.float16), np.array([0.0], dtype=np.float32), np.array([0.0])


def cells(channel_map):
    return sorted(zip(*np.nonzero(channel_map)))


def test_single_box_covers_the_cells_whose_centres_it_contains():
    # 4x4 grid: centres at 0.125, 0.375, 0.625, 0.875. Box x in [0.3, 0.7], y in [0, 0.5].
    boxes, ft, st = one_frame(box(0.3, 0.0, 0.7, 0.5, score=0.5))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (4, 4))
    assert out.shape == (2, 1, 4, 4) and out.dtype == np.float32
    assert cells(out[0, 0]) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert out[0, 0, 0, 1] == pytest.approx(0.5, abs=1e-3)  # score (float16 in the store)
    assert not out[1].any()


def test_object_boxes_go_to_channel_1_and_overlaps_take_the_max():
    boxes, ft, st = one_frame(box(0.0, 0.0, 0.5, 0.5, 0.6, kind=1), box(0.25, 0.25, 1.0, 1.0, 0.8, kind=1))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (4, 4))
    assert not out[0].any()
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[:2, :2] = 0.6
    expected[1:, 1:] = 0.8  # the overlapping cell (1, 1) takes the higher score
    np.testing.assert_allclose(out[1, 0], expected, atol=1e-3)


def test_flip_mirrors_columns():
    boxes, ft, st = one_frame(box(0.0, 0.0, 0.3, 0.5))
    plain = interaction_map_targets(boxes, ft, st, FULL, False, (4, 4))
    flipped = interaction_map_targets(boxes, ft, st, FULL, True, (4, 4))
    assert cells(plain[0, 0]) == [(0, 0), (1, 0)]
    assert cells(flipped[0, 0]) == [(0, 3), (1, 3)]
    np.testing.assert_array_equal(flipped, plain[..., ::-1])


def test_crop_shifts_and_scales_boxes():
    # Crop the top-right quarter (x 0.5-1, y 0-0.5): the box becomes x 0.2-0.8, y 0.2-0.4
    # in crop coordinates, covering centres x 0.375, 0.625 and y 0.375.
    boxes, ft, st = one_frame(box(0.6, 0.1, 0.9, 0.2))
    out = interaction_map_targets(boxes, ft, st, (0.5, 0.0, 1.0, 0.5), False, (4, 4))
    assert cells(out[0, 0]) == [(1, 1), (1, 2)]
    # Crop then flip: mirrored within the crop.
    out = interaction_map_targets(boxes, ft, st, (0.5, 0.0, 1.0, 0.5), True, (4, 4))
    assert cells(out[0, 0]) == [(1, 1), (1, 2)]  # symmetric about the crop centre
    # A box outside the crop leaves the map empty.
    boxes, ft, st = one_frame(box(0.0, 0.6, 0.4, 0.9))
    assert not interaction_map_targets(boxes, ft, st, (0.5, 0.0, 1.0, 0.5), False, (4, 4)).any()


def test_non_square_grid():
    boxes, ft, st = one_frame(box(0.0, 0.0, 0.5, 1.0))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (2, 4))
    assert out.shape == (2, 1, 2, 4)
    assert cells(out[0, 0]) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_score_zero_rows_are_padding():
    boxes, ft, st = one_frame(box(0.0, 0.0, 0.3, 0.5), box(0.0, 0.0, 1.0, 1.0, score=0.0), box(0, 0, 0, 0, 0, 0, 0))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (4, 4))
    assert cells(out[0, 0]) == [(0, 0), (1, 0)]


def test_each_time_step_takes_the_nearest_valid_frame():
    # Frame f has a box over column f; frame 3 is padding (NaN time) with a box everywhere.
    boxes = np.zeros((4, 2, 7), dtype=np.float16)
    for f in range(3):
        boxes[f, 0] = box(f / 4 + 0.05, 0.0, f / 4 + 0.2, 1.0)
    boxes[3, 0] = box(0.0, 0.0, 1.0, 1.0, 1.0)
    frame_time = np.array([0.0, 0.5, 1.0, np.nan], dtype=np.float32)
    sample_times = np.array([0.1, 0.4, 0.9, 5.0])
    assert nearest_frames(frame_time, sample_times).tolist() == [0, 1, 2, 2]
    out = interaction_map_targets(boxes, frame_time, sample_times, FULL, False, (4, 4))
    assert out.shape == (2, 4, 4, 4)
    assert [sorted({c for _, c in cells(out[0, t])}) for t in range(4)] == [[0], [1], [2], [2]]


def test_no_valid_frame_gives_empty_maps():
    boxes = np.array([[box(0.0, 0.0, 1.0, 1.0)]], dtype=np.float16)
    out = interaction_map_targets(boxes, np.array([np.nan]), np.array([0.0, 1.0]), FULL, False, (2, 2))
    assert out.shape == (2, 2, 2, 2) and not out.any()


def test_window_mean_of_logits():
    logits = np.array([[1, 0], [3, 0], [5, 2], [np.nan, np.nan]], dtype=np.float16)
    times = np.array([0.0, 1.0, 2.0, 3.0])
    out = soft_logits_for_window(logits, times, 0.5, 2.5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [4.0, 1.0])
    np.testing.assert_allclose(soft_logits_for_window(logits, times, 1.0, 2.0), [3.0, 0.0])  # [t0, t1): row at 2.0 out
    np.testing.assert_allclose(soft_logits_for_window(logits, times, 0.0, 10.0), [3.0, 2 / 3], rtol=1e-6)


def test_window_ignores_nan_times():
    logits = np.array([[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]])
    np.testing.assert_allclose(soft_logits_for_window(logits, np.array([0.0, 1.0, np.nan]), 0.0, 10.0), [2.0, 0.0])


def test_window_without_rows_falls_back_to_the_nearest():
    logits = np.array([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0], [np.nan, np.nan]])
    times = np.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(soft_logits_for_window(logits, times, 10.0, 11.0), [5.0, 2.0])  # row 3 is NaN
    np.testing.assert_allclose(soft_logits_for_window(logits, times, 0.3, 0.45), [1.0, 0.0])
    with pytest.raises(ValueError):
        soft_logits_for_window(logits[3:], times[3:], 0.0, 1.0)
