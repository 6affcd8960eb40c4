import numpy as np
import pytest
import torch

from pipeline.io.store import OK, create_store
from pipeline.io.video import write_video
from student.dataset import ClipDataset, ClipRef, EpochSampler, Sampling, window_labels, window_times
from student.train import OptimConfig, train_loader

# 4 frames 0.25 s apart; 120 px short side in training and testing; slow = every frame.
SAMPLING = Sampling(num_frames=4, sampling_rate=1, target_fps=4.0, train_jitter_scales=(120, 120), crop=120,
                    test_short_side=120, slow_indices=(0, 1, 2, 3), spacing="stride")
EGO_WINDOW = 4  # the ego teacher's frames per window


def test_window_times_group_by_the_teachers_frames_per_window():
    # 9 teacher frames, ego teacher windows of 4: [0..3], [4..7], [8]. Grouping by
    # ceil(F / windows) = 3 (the old code) would misplace every window after the first.
    ft = np.arange(9) * 0.25
    np.testing.assert_allclose(window_times(ft, 4), [0.375, 1.375, 2.0])
    ft = np.array([0.0, 0.25, 0.5, 0.75, 1.0, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_allclose(window_times(ft, 4), [0.375, 1.0, np.nan])


def test_window_labels_are_the_actions_overlapping_the_window():
    actions = [(0, 0.0, 0.6), (2, 1.5, 2.0), (5, 0.9, 1.0)]
    assert window_labels(actions, 0.5, 1.25) == (0, 5)
    assert window_labels(actions, 1.1, 1.4) == ()
    assert window_labels(actions, 1.0, 1.5) == (2, 5)  # touching ends count (inclusive frame spans)


@pytest.fixture
def clip_and_store(tmp_path):
    frames = np.zeros((30, 120, 160, 3), np.uint8)
    frames[:, :, :80] = 200  # left half bright: a flip must move it right
    video = write_video(tmp_path / "v.mp4", frames, fps=15)  # 2 s
    F = 9  # teacher frames at 4 fps; the ego teacher groups them by 4: windows [0..3], [4..7], [8]
    store = create_store(tmp_path / "s.zarr", ["v"], F, {
        "ego/logits": ((3, 2), "float16"), "object/logits": ((F, 3), "float16"), "handobj/boxes": ((F, 2, 7), "float16"),
    }, {"teachers": {"ego": {"spec": {"num_frames": EGO_WINDOW}}}}, shard_rows=1)
    ft = (np.arange(F) / 4).astype(np.float32)
    ft[8] = np.nan  # past the video's end
    obj = np.zeros((1, F, 3), np.float32)
    obj[0, :4, 0] = 4.0  # first second: class 0
    obj[0, 4:, 2] = 4.0  # second second: class 2
    boxes = np.zeros((1, F, 2, 7), np.float32)
    boxes[0, :, 0] = [0.0, 0.0, 0.5, 0.5, 0.9, 0, 3]  # a hand in the top-left quarter, every frame
    ego = np.array([[[0.0, 3.0], [3.0, 0.0], [np.nan, np.nan]]], np.float32)  # window 1 ego, window 2 exo
    store.write_shard(0, 1, {"frame_time": ft[None], "ego/logits": ego, "object/logits": obj, "handobj/boxes": boxes},
                      np.array([OK]), [""])
    return ClipRef(str(video), 0.0, 2.0, (1,), 0), str(tmp_path / "s.zarr")


def test_targets_follow_the_sampled_window(clip_and_store):
    clip, store = clip_and_store
    ds = ClipDataset([clip], 3, SAMPLING, train=False, store_path=store, map_grid=(4, 4))
    item = ds[0]  # centre window: t = 0.5 .. 1.25 (frames at 0.5, 0.75, 1.0, 1.25)
    assert item["video"].shape == (3, 4, 120, 120)
    assert item["sample"][0].item() == pytest.approx(0.5)
    # object: mean logits of teacher frames at 0.5, 0.75 (class 0) and 1.0, 1.25 (class 2)
    np.testing.assert_allclose(item["object"].numpy(), [2.0, 0.0, 2.0], atol=1e-3)
    # ego windows of 4 teacher frames centred at 0.375 s and 1.375 s: only the second lies in [0.5, 1.5)
    np.testing.assert_allclose(item["ego"].numpy(), [3.0, 0.0], atol=1e-3)
    m = item["interaction_map"].numpy()
    assert m.shape == (2, 4, 4, 4)
    # Centre crop x 20..140 of the 160 px frame: the hand box x 0..80 -> crop 0..0.5 -> cells 0..2
    # (floor(0.5 * 4) = 2, inclusive); y 0..0.5 -> rows 0..2.
    expected = np.zeros((4, 4), np.float32)
    expected[:3, :3] = 0.9
    np.testing.assert_allclose(m[0, 0], expected, atol=1e-3)
    assert m[1].max() == 0  # no object boxes
    assert item["interaction_map_valid"].tolist() == [True] * 4


def test_frames_past_the_end_are_masked_and_pull_in_no_teacher_rows(clip_and_store):
    clip, store = clip_and_store
    # The manifest says 3 s but the video holds 2 s: a window at 1.5 .. 2.25 has frames at
    # 1.5 and 1.75 in the video and 2.0, 2.25 past its end (the last frame repeated).
    long_clip = ClipRef(clip.path, 1.5, 2.5, clip.labels, 0)
    ds = ClipDataset([long_clip], 3, SAMPLING, train=False, store_path=store, map_grid=(4, 4))
    item = ds[0]
    assert item["sample"][0].item() == pytest.approx(1.5)
    assert item["interaction_map_valid"].tolist() == [True, True, False, False]
    video = item["video"]
    torch.testing.assert_close(video[:, 2], video[:, 1])  # repeated, as PySlowFast clamps the index
    torch.testing.assert_close(video[:, 3], video[:, 1])
    # object: teacher frames at 1.5, 1.75 only (both class 2), the window ends at 1.75 + 0.25
    np.testing.assert_allclose(item["object"].numpy(), [0.0, 0.0, 4.0], atol=1e-3)


def test_charades_training_labels_are_the_actions_inside_the_window(clip_and_store):
    clip, _ = clip_and_store
    actions = ((0, 0.0, 0.6), (2, 1.6, 2.0), (4, 0.9, 1.0))
    ego = ClipRef(clip.path, 0.0, 2.0, (0, 2, 4), 0, actions=actions)
    train = ClipDataset([ego], 5, SAMPLING, multilabel=True, train=True)
    seen = set()
    for epoch in range(8):
        item = train[(epoch, 0)]
        t0 = item["sample"][0].item()
        expected = window_labels(actions, t0, t0 + 3 * 0.25)
        assert torch.nonzero(item["label"]).flatten().tolist() == list(expected)
        seen.add(expected)
    assert len(seen) > 1  # windows differ, and so do their labels
    test = ClipDataset([ego], 5, SAMPLING, multilabel=True, train=False)
    assert torch.nonzero(test[0]["label"]).flatten().tolist() == [0, 2, 4]  # testing: the video's labels
    # A clip exactly one window long has one training window, frames at 0, 0.25, 0.5, 0.75 s:
    # action 0 (0-0.6 s) is inside it, 4 (0.9-1.0 s) and 2 (1.6-2.0 s) are not.
    one = ClipRef(clip.path, 0.0, 1.0, (0, 2, 4), 0, actions=actions)
    item = ClipDataset([one], 5, SAMPLING, multilabel=True, train=True)[(3, 0)]
    assert item["sample"][0].item() == 0.0
    assert torch.nonzero(item["label"]).flatten().tolist() == [0]


def test_flip_moves_frames_and_maps_together(clip_and_store):
    clip, store = clip_and_store
    ds = ClipDataset([clip], 3, SAMPLING, train=True, store_path=store, map_grid=(4, 4), seed=0)
    seen = set()
    for epoch in range(12):
        item = ds[(epoch, 0)]
        left_bright = item["video"][0, 0, 60, :20].mean() > item["video"][0, 0, 60, -20:].mean()
        hand_left = item["interaction_map"][0, 0, 0, 0] > item["interaction_map"][0, 0, 0, 3]
        assert left_bright == hand_left  # pixels and boxes flipped together
        assert bool(item["sample"][4]) != bool(left_bright)  # the recorded flip is the one applied
        seen.add(bool(left_bright))
    assert seen == {True, False}  # both flips happened


def test_testing_views_are_temporal_by_spatial(clip_and_store):
    clip, _ = clip_and_store
    sampling = Sampling(4, 1, 4.0, (100, 100), 100, 100, (0, 1, 2, 3), "stride")
    ds = ClipDataset([clip], 3, sampling, train=False, temporal_views=3, spatial_crops=3)
    assert len(ds) == 9
    samples = np.stack([ds[i]["sample"].numpy() for i in range(9)])
    # slack 2 - 1 = 1 s: starts at 0, 0.5, 1 (the first and last views touch the clip's ends);
    # 160x120 -> short side 100 -> 133x100: crops at x 0, ceil(33 / 2) = 17, 33.
    np.testing.assert_allclose(samples[:, 0], np.repeat([0.0, 0.5, 1.0], 3))
    np.testing.assert_array_equal(samples[:, 1], 100)
    np.testing.assert_array_equal(samples[:, 3], np.tile([0, 17, 33], 3))
    np.testing.assert_array_equal(samples[:, 2], 0)
    assert ds[0]["video"].shape == (3, 4, 100, 100)


def _epoch_samples(loader, epochs):
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        rows = {}
        for batch in loader:
            for index, sample in zip(batch["index"].tolist(), batch["sample"].numpy()):
                rows[index] = sample
        out.append(np.stack([rows[i] for i in sorted(rows)]))
    return out


def test_augmentation_changes_every_epoch_with_persistent_workers(clip_and_store):
    # Through the training loop's own loader: 2 persistent workers, as the defaults run it.
    clip, _ = clip_and_store
    clips = [ClipRef(clip.path, 0.0, 2.0, (i % 3,), 0) for i in range(4)]
    sampling = Sampling(4, 1, 4.0, (100, 140), 96, 100, (0, 1, 2, 3), "stride")
    cfg = OptimConfig(batch_size=2, num_workers=2, seed=7)
    make = lambda: train_loader(ClipDataset(clips, 3, sampling, train=True, seed=7), cfg)
    loader = make()
    assert loader.persistent_workers and loader.num_workers == 2
    first = _epoch_samples(loader, 3)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not np.allclose(first[a], first[b])  # new windows, scales, crops, flips each epoch
    for e in first:
        assert set(np.unique(e[:, 1])) <= set(range(100, 141))  # jittered short sides
    replay = _epoch_samples(make(), 3)
    for a, b in zip(first, replay):
        np.testing.assert_array_equal(a, b)  # the same seed replays exactly


def test_epoch_sampler_shuffles_by_seed_and_epoch():
    s = EpochSampler(10, seed=3)
    first = list(s)
    assert sorted(i for _, i in first) == list(range(10)) and {e for e, _ in first} == {0}
    s.set_epoch(1)
    second = list(s)
    assert {e for e, _ in second} == {1} and [i for _, i in second] != [i for _, i in first]
    assert list(EpochSampler(10, seed=3)) == first


def test_short_segments_never_show_the_next_action(clip_and_store):
    # A 0.5 s EPIC-like segment (1.0 .. 1.5 s of the video) and a 1 s window: the release starts
    # up to the shortfall before the segment and clamps every frame index into it.
    clip, _ = clip_and_store
    seg = ClipRef(clip.path, 1.0, 1.5, (0,), 0)
    train = ClipDataset([seg], 3, SAMPLING, train=True)
    starts = []
    for epoch in range(20):
        times = train.window(seg, 0, np.random.default_rng(epoch))
        assert times.min() >= 1.0 and times.max() < 1.5
        assert np.all(np.diff(times) >= 0)
        starts.append(times[0])
    assert len(set(np.round(starts, 6))) > 1 or starts[0] == 1.0
    test = ClipDataset([seg], 3, SAMPLING, train=False, temporal_views=3)
    for view in range(3):
        np.testing.assert_allclose(test.window(seg, view, None), [1.0, 1.25, 1.499, 1.499])


def test_frame_spacing_follows_the_release_loaders():
    # Video decoder (Kinetics): linspace(0, 8 * 8 - 1, 8) of a 30 fps video -> frames 9 apart;
    # frame lists (Charades-Ego, EPIC): every 8th frame.
    kinetics = Sampling(8, 8, 30.0, (256, 320), 224, 256, tuple(range(8)), "linspace")
    frames = Sampling(8, 8, 30.0, (256, 320), 224, 256, tuple(range(8)), "stride")
    assert kinetics.frame_step * 30 == pytest.approx(9.0) and frames.frame_step * 30 == pytest.approx(8.0)
    assert kinetics.span == frames.span == pytest.approx(64 / 30)


def test_fit_hands_every_epoch_to_the_sampler(clip_and_store, monkeypatch):
    # The training loop itself, with the default persistent workers: each epoch's indices
    # leave the sampler (in this process) tagged with that epoch.
    from student.backbones import create_backbone
    from student.heads import EgoExoStudent
    from student.train import LossWeights, fit

    clip, _ = clip_and_store
    seen = []
    original = EpochSampler.__iter__
    monkeypatch.setattr(EpochSampler, "__iter__", lambda self: (seen.append(self.epoch), original(self))[1])
    data = ClipDataset([ClipRef(clip.path, 0.0, 2.0, (i % 3,), 0) for i in range(4)], 3,
                       Sampling(4, 1, 4.0, (64, 72), 64, 64, (0, 1, 2, 3), "stride"), train=True)
    model = EgoExoStudent(create_backbone("slow_tiny", width=4), num_actions=3, num_objects=0, ego_head=False,
                          interaction_maps=False)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as out:
        history = fit(model, data, OptimConfig(epochs=3, batch_size=2, num_workers=2), LossWeights(), Path(out),
                      multilabel=False, log=lambda *_: None)
    assert len(history) == 3 and seen == [0, 1, 2]


def test_an_undecodable_clip_stops_the_loader_naming_it_never_a_substitute(clip_and_store, tmp_path):
    """Through the training loader with 2 workers: the batch holding a corrupt video raises one
    VideoReadError that names that video; the batches before it are the clips asked for."""
    from pipeline.io.video import VideoReadError

    clip, _ = clip_and_store
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"not a video" * 100)
    clips = [ClipRef(clip.path, 0.0, 2.0, (i % 3,), 0) for i in range(4)] + [ClipRef(str(bad), 0.0, 2.0, (0,), 0)]
    ds = ClipDataset(clips, 3, SAMPLING, train=True)
    loader = train_loader(ds, OptimConfig(batch_size=1, num_workers=2, seed=0))
    order = [i for _, i in loader.sampler]
    seen = []
    with pytest.raises(VideoReadError) as e:
        for batch in loader:
            seen.extend(batch["index"].tolist())
    assert e.value.path == str(bad) and "cannot read video" in str(e.value).splitlines()[0]
    assert seen == order[: order.index(4)]  # every clip before the corrupt one, in order, none instead of it
