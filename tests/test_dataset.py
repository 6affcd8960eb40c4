import numpy as np
import pytest
import torch

from pipeline.io.store import OK, create_store
from pipeline.io.video import write_video
from student.dataset import ClipDataset, ClipRef, window_times


def test_window_times_ignores_padding():
    ft = np.array([0.0, 0.25, 0.5, 0.75, 1.0, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_allclose(window_times(ft, 3), [0.25, 0.875, np.nan])


@pytest.fixture
def clip_and_store(tmp_path):
    frames = np.zeros((30, 120, 160, 3), np.uint8)
    frames[:, :, :80] = 200  # left half bright: a flip must move it right
    video = write_video(tmp_path / "v.mp4", frames, fps=15)
    F = 8
    store = create_store(tmp_path / "s.zarr", ["v"], F, {
        "ego/logits": ((2, 2), "float16"), "object/logits": ((F, 3), "float16"), "handobj/boxes": ((F, 2, 7), "float16"),
    }, {}, shard_rows=1)
    ft = (np.arange(F) / 4).astype(np.float32)
    obj = np.zeros((1, F, 3), np.float32)
    obj[0, :4, 0] = 4.0  # first second: class 0
    obj[0, 4:, 2] = 4.0  # second second: class 2
    boxes = np.zeros((1, F, 2, 7), np.float32)
    boxes[0, :, 0] = [0.0, 0.0, 0.5, 0.5, 0.9, 0, 3]  # a hand in the top-left quarter, every frame
    ego = np.array([[[0.0, 3.0], [3.0, 0.0]]], np.float32)  # window 1 ego, window 2 exo
    store.write_shard(0, 1, {"frame_time": ft[None], "ego/logits": ego, "object/logits": obj, "handobj/boxes": boxes},
                      np.array([OK]), [""])
    return ClipRef(str(video), 0.0, 2.0, (1,), 0), str(tmp_path / "s.zarr")


def test_targets_follow_the_sampled_window(clip_and_store):
    clip, store = clip_and_store
    ds = ClipDataset([clip], 3, num_frames=4, fps=4.0, short_side=120, crop=120, train=False,
                     store_path=store, map_grid=(4, 4, 4))
    item = ds[0]  # centre window: t = 0.5 .. 1.25 (frames at 0.5, 0.75, 1.0, 1.25)
    assert item["video"].shape == (3, 4, 120, 120)
    # object: mean logits of teacher frames at 0.5, 0.75 (class 0) and 1.0, 1.25 (class 2)
    np.testing.assert_allclose(item["object"].numpy(), [2.0, 0.0, 2.0], atol=1e-3)
    # ego windows (4 teacher frames each) centred at 0.375 s and 1.375 s: only the second lies in [0.5, 1.5)
    np.testing.assert_allclose(item["ego"].numpy(), [3.0, 0.0], atol=1e-3)
    m = item["interaction_map"].numpy()
    assert m.shape == (2, 4, 4, 4)
    # centre crop of a 160x120 frame scaled to 120 short side: 160 wide -> crop x from 20/160
    assert m[0, 0, 0, 0] == pytest.approx(0.9, abs=1e-3) and m[0, 0, 3, 3] == 0
    assert m[1].max() == 0  # no object boxes


def test_flip_moves_frames_and_maps_together(clip_and_store):
    clip, store = clip_and_store
    ds = ClipDataset([clip], 3, num_frames=4, fps=4.0, short_side=120, crop=120, train=True,
                     store_path=store, map_grid=(4, 4, 4), seed=0)
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        left_bright = item["video"][0, 0, 60, :20].mean() > item["video"][0, 0, 60, -20:].mean()
        hand_left = item["interaction_map"][0, 0, 0, 0] > item["interaction_map"][0, 0, 0, 3]
        assert left_bright == hand_left  # pixels and boxes flipped together
        seen.add(bool(left_bright))
    assert seen == {True, False}  # both flips happened
