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


def test_single_box_marks_every_cell_it_touches():
    # 4x4 grid. Box x in [0.3, 0.7] -> cells floor(1.2)=1 .. floor(2.8)=2; y in [0, 0.5] ->
    # rows 0 .. floor(2.0)=2 (the end is inclusive, as in the release's gen_targets).
    boxes, ft, st = one_frame(box(0.3, 0.0, 0.7, 0.5, score=0.5))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (4, 4))
    assert out.shape == (2, 1, 4, 4) and out.dtype == np.float32
    assert cells(out[0, 0]) == [(r, c) for r in (0, 1, 2) for c in (1, 2)]
    assert out[0, 0, 0, 1] == pytest.approx(0.5, abs=1e-3)  # score (float16 in the store)
    assert not out[1].any()


@pytest.mark.parametrize("x1, x2, old_cells, new_cells", [
    (100, 140, 1, 4),  # a 40 px hand straddling a cell corner on a 224 crop: 2 x 2 cells (was 1)
    (99, 111, 0, 1),   # a 12 px hand between two cell centres: 1 cell (was 0: lost)
])
def test_small_hands_on_a_224_crop_are_not_lost(x1, x2, old_cells, new_cells):
    # 224 px crop, 7x7 grid (32 px cells, centres at 16 + 32k): the same box in x and y.
    boxes, ft, st = one_frame(box(x1 / 224, x1 / 224, x2 / 224, x2 / 224))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (7, 7))
    assert len(cells(out[0, 0])) == new_cells
    centres = 16 + 32 * np.arange(7)
    assert ((centres >= x1) & (centres <= x2)).sum() ** 2 == old_cells  # what centre-coverage gave


def _release_gen_targets(boxes_px, scores, crop_px, grid):
    """The release's rasterisation written from its description (pixel boxes in the crop,
    clamped to [0, crop-1], divided by the crop, floor(x * S) clamped to S-1, inclusive, max)."""
    out = np.zeros((grid, grid), np.float32)
    for (x1, y1, x2, y2), score in zip(boxes_px, scores):
        x1, y1, x2, y2 = (np.clip([x1, y1, x2, y2], 0, crop_px - 1) / crop_px * grid).astype(int).clip(0, grid - 1)
        out[y1:y2 + 1, x1:x2 + 1] = np.maximum(out[y1:y2 + 1, x1:x2 + 1], score)
    return out


def test_matches_the_release_rasterisation_on_random_boxes():
    rng = np.random.default_rng(0)
    crop_px, grid = 224, 7
    for _ in range(50):
        k = 5
        xy = rng.uniform(0, crop_px, size=(k, 2))
        wh = rng.uniform(2, 120, size=(k, 2))
        px = np.concatenate([xy, np.minimum(xy + wh, crop_px - 1)], axis=1)
        scores = rng.uniform(0.1, 1.0, size=k).astype(np.float16).astype(np.float32)
        rows = [box(*(p / crop_px), score=s) for p, s in zip(px, scores)]
        boxes = np.array([rows], dtype=np.float32)
        out = interaction_map_targets(boxes, np.array([0.0]), np.array([0.0]), FULL, False, (grid, grid))
        np.testing.assert_allclose(out[0, 0], _release_gen_targets(px, scores, crop_px, grid), atol=1e-6)


def test_matches_the_release_with_a_crop_offset_and_boxes_reaching_outside_it():
    # A 224 crop at (50, 10) of a 320x240 frame; boxes anywhere in the frame, many reaching
    # past the crop. The release shifts them by the offset and clips them to the crop.
    rng = np.random.default_rng(1)
    W, H, cx, cy, crop_px, grid = 320, 240, 50, 10, 224, 7
    crop = (cx / W, cy / H, (cx + crop_px) / W, (cy + crop_px) / H)
    checked = 0
    for _ in range(50):
        xy = rng.uniform(0, [W, H], size=(5, 2))
        wh = rng.uniform(4, 150, size=(5, 2))
        px = np.concatenate([xy, np.minimum(xy + wh, [W - 1, H - 1])], axis=1)
        in_crop = px - [cx, cy, cx, cy]
        touching = (in_crop[:, 2] > 0) & (in_crop[:, 0] < crop_px) & (in_crop[:, 3] > 0) & (in_crop[:, 1] < crop_px)
        px, in_crop = px[touching], in_crop[touching]  # a box wholly outside is where we differ on purpose
        scores = rng.uniform(0.1, 1.0, size=len(px))
        boxes = np.array([[box(x1 / W, y1 / H, x2 / W, y2 / H, score=s) for (x1, y1, x2, y2), s in zip(px, scores)]],
                         dtype=np.float64).reshape(1, -1, 7)
        out = interaction_map_targets(boxes, np.array([0.0]), np.array([0.0]), crop, False, (grid, grid))
        np.testing.assert_allclose(out[0, 0], _release_gen_targets(in_crop, scores, crop_px, grid), atol=1e-6)
        checked += len(px)
    assert checked > 100


def test_object_boxes_go_to_channel_1_and_overlaps_take_the_max():
    boxes, ft, st = one_frame(box(0.0, 0.0, 0.5, 0.5, 0.6, kind=1), box(0.25, 0.25, 1.0, 1.0, 0.8, kind=1))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (4, 4))
    assert not out[0].any()
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[:3, :3] = 0.6  # x, y in [0, 0.5] touch cells 0..2
    expected[1:, 1:] = 0.8  # [0.25, 1.0] touches 1..3; the overlap takes the higher score
    np.testing.assert_allclose(out[1, 0], expected, atol=1e-3)


def test_flip_mirrors_columns():
    boxes, ft, st = one_frame(box(0.0, 0.0, 0.3, 0.5))
    plain = interaction_map_targets(boxes, ft, st, FULL, False, (4, 4))
    flipped = interaction_map_targets(boxes, ft, st, FULL, True, (4, 4))
    assert cells(plain[0, 0]) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert cells(flipped[0, 0]) == [(0, 2), (0, 3), (1, 2), (1, 3), (2, 2), (2, 3)]
    np.testing.assert_array_equal(flipped, plain[..., ::-1])


def test_crop_shifts_and_scales_boxes():
    # Crop the top-right quarter (x 0.5-1, y 0-0.5): the box becomes x 0.2-0.8, y 0.2-0.4
    # in crop coordinates: columns 0..3, rows 0..1.
    boxes, ft, st = one_frame(box(0.6, 0.1, 0.9, 0.2))
    out = interaction_map_targets(boxes, ft, st, (0.5, 0.0, 1.0, 0.5), False, (4, 4))
    assert cells(out[0, 0]) == [(r, c) for r in (0, 1) for c in range(4)]
    # A box reaching past the crop is clipped to it: x 0.45-0.6 -> crop x -0.1-0.2 -> column 0.
    boxes, ft, st = one_frame(box(0.45, 0.1, 0.6, 0.2))
    assert cells(interaction_map_targets(boxes, ft, st, (0.5, 0.0, 1.0, 0.5), False, (4, 4))[0, 0]) == [(0, 0), (1, 0)]
    # Crop then flip: mirrored within the crop.
    assert cells(interaction_map_targets(boxes, ft, st, (0.5, 0.0, 1.0, 0.5), True, (4, 4))[0, 0]) == [(0, 3), (1, 3)]
    # A box wholly outside the crop leaves the map empty.
    boxes, ft, st = one_frame(box(0.0, 0.6, 0.4, 0.9))
    assert not interaction_map_targets(boxes, ft, st, (0.5, 0.0, 1.0, 0.5), False, (4, 4)).any()


def test_non_square_grid():
    boxes, ft, st = one_frame(box(0.0, 0.0, 0.5, 0.9))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (2, 4))
    assert out.shape == (2, 1, 2, 4)
    assert cells(out[0, 0]) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_score_zero_rows_are_padding():
    boxes, ft, st = one_frame(box(0.0, 0.0, 0.2, 0.2), box(0.0, 0.0, 1.0, 1.0, score=0.0), box(0, 0, 0, 0, 0, 0, 0))
    out = interaction_map_targets(boxes, ft, st, FULL, False, (4, 4))
    assert cells(out[0, 0]) == [(0, 0)]


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
