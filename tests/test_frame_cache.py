"""The HDF5 frame cache: what it reads equals what decoding the video gives, through the loader users run."""
import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.io.frame_cache import FrameCache, FrameCacheError, write_frame_cache
from pipeline.io.video import read_frames, write_video
from student.dataset import ClipDataset, ClipRef, Sampling
from student.train import OptimConfig, train_loader


def moving_video(path, n=30, fps=15):
    """A bright square that moves 4 px per frame over a gradient, so every frame differs."""
    frames = np.tile(np.linspace(0, 120, 160, dtype=np.uint8)[None, None, :, None], (n, 120, 1, 3))
    for i in range(n):
        frames[i, 40:70, 4 * i : 4 * i + 30] = 230
    return write_video(path, frames, fps=fps)


@pytest.fixture
def videos(tmp_path):
    return [str(moving_video(tmp_path / f"v{i}.mp4", n=30 + 6 * i)) for i in range(3)]


TIMES = np.array([0.0, 0.07, 0.5, 1.0, 1.93, 1.99, 2.1, 3.0])  # the last ones past the 2 s video's end


def test_cached_frames_are_the_decoded_frames(tmp_path, videos):
    cache = tmp_path / "c.h5"
    done = write_frame_cache(cache, [(v, 0.0, None) for v in videos], short_side=90)
    assert done == {"added": 3, "already_cached": 0, "entries": 3, "failed": []}
    c = FrameCache(cache)
    assert len(c) == 3 and c.short_side == 90
    want = read_frames(videos[0], TIMES, short_side=90)
    got = c.read(videos[0], 0.0, None, TIMES, 90)
    assert got.frames.shape == want.frames.shape == (8, 90, 120, 3)
    np.testing.assert_array_equal(got.frames, want.frames)  # the same decode, at the cached size
    np.testing.assert_array_equal(got.frame_time, want.frame_time)
    np.testing.assert_array_equal(got.valid, want.valid)
    assert got.valid.tolist() == [True] * 6 + [False] * 2
    # Another size: resized from the cache, read_frames' output size, a few grey levels apart
    for side in (72, 120):
        want = read_frames(videos[1], TIMES, short_side=side)
        got = c.read(videos[1], 0.0, None, TIMES, side)
        assert got.frames.shape == want.frames.shape
        assert np.abs(got.frames.astype(int) - want.frames).mean() < 3
        np.testing.assert_array_equal(got.frame_time, want.frame_time)
    assert c.read(videos[0], 0.5, 1.0, TIMES, 90) is None  # another part of the video: not cached


def test_jpeg_cache_is_close_to_raw(tmp_path, videos):
    write_frame_cache(tmp_path / "j.h5", [(videos[2], 0.0, None)], short_side=90, encoding="jpeg")
    got = FrameCache(tmp_path / "j.h5").read(videos[2], 0.0, None, TIMES, 90)
    want = read_frames(videos[2], TIMES, short_side=90)
    assert np.abs(got.frames.astype(int) - want.frames).mean() < 3
    np.testing.assert_array_equal(got.valid, want.valid)


def test_rerun_adds_only_missing_clips_and_other_settings_are_refused(tmp_path, videos):
    cache = tmp_path / "c.h5"
    write_frame_cache(cache, [(videos[0], 0.0, None)], short_side=90)
    done = write_frame_cache(cache, [(v, 0.0, None) for v in videos], short_side=90)
    assert (done["added"], done["already_cached"], done["entries"]) == (2, 1, 3)
    with pytest.raises(FrameCacheError, match="short_side 90, not 60"):
        write_frame_cache(cache, [(videos[0], 0.0, None)], short_side=60)
    with pytest.raises(FrameCacheError, match="encoding raw, not jpeg"):
        write_frame_cache(cache, [(videos[0], 0.0, None)], short_side=90, encoding="jpeg")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FrameCacheError, match="not an HDF5 file"):
        FrameCache(tmp_path / "junk.h5")
    with pytest.raises(FrameCacheError, match="is a folder"):
        write_frame_cache(tmp_path, [(videos[0], 0.0, None)], short_side=90)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    done = write_frame_cache(cache, [(str(bad), 0.0, None)], short_side=90)
    assert done["added"] == 0 and len(done["failed"]) == 1 and "broken.mp4" in done["failed"][0]


SAMPLING = Sampling(num_frames=4, sampling_rate=1, target_fps=4.0, train_jitter_scales=(80, 100), crop=64,
                    test_short_side=90, slow_indices=(0, 1, 2, 3), spacing="stride")


def test_dataset_reads_the_cache_in_loader_workers(tmp_path, videos):
    clips = [ClipRef(v, 0.0, None, (i,), i) for i, v in enumerate(videos)]
    write_frame_cache(tmp_path / "c.h5", [(c.path, c.start, c.end) for c in clips[:2]], short_side=90)
    # Testing at the cached size: identical items; the third clip is not cached and is decoded.
    plain = ClipDataset(clips, 3, SAMPLING, train=False, spatial_crops=3)
    cached = ClipDataset(clips, 3, SAMPLING, train=False, spatial_crops=3, frame_cache=str(tmp_path / "c.h5"))
    for i in range(len(plain)):
        torch.testing.assert_close(cached[i]["video"], plain[i]["video"], rtol=0, atol=0)
    # Training through the loader with 2 worker processes: the same augmentation draws, pixels
    # resized from the cache within a few grey levels of decoding at the drawn size.
    cfg = OptimConfig(batch_size=3, num_workers=2)
    a = next(iter(train_loader(ClipDataset(clips, 3, SAMPLING, seed=1), cfg)))
    b = next(iter(train_loader(ClipDataset(clips, 3, SAMPLING, seed=1, frame_cache=str(tmp_path / "c.h5")), cfg)))
    torch.testing.assert_close(a["sample"], b["sample"], rtol=0, atol=0)
    assert (a["video"] - b["video"]).abs().mean() * 0.225 * 255 < 3
    assert not torch.equal(a["video"], b["video"])  # resized, not decoded: it did read the cache


def test_cli_caches_a_manifest(tmp_path, videos, capsys):
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,label\n" + "".join(f"v{i}.mp4,{'ab'[i % 2]}\n" for i in range(3)) + "gone.mp4,a\n")
    args = ["data", "cache-frames", "--manifest", str(manifest), "--video-root", str(tmp_path),
            "--short-side", "90", "--out", str(tmp_path / "c.h5")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 videos missing" in out and "3 clips added, 0 already there, 3 in all" in out
    assert main(args) == 0
    assert "0 clips added, 3 already there" in capsys.readouterr().out
    assert main(args[:-4] + ["--short-side", "60", "--out", str(tmp_path / "c.h5")]) == 1
    assert "made with short_side 90, not 60" in capsys.readouterr().err


def test_millisecond_timestamps_and_the_end_as_the_reader_has_them(tmp_path):
    """MKV/WebM store 1 ms timestamps (frame 2 of 30 fps at 0.067 s): a request on the 1/fps grid
    reaches the frame as read_frames does, and past the end is invalid where read_frames says so."""
    video = str(moving_video(tmp_path / "v.mkv", n=30, fps=30))
    write_frame_cache(tmp_path / "c.h5", [(video, 0.0, None)], short_side=90)
    times = np.concatenate([np.arange(12) / 30, [0.99, 1.0, 1.01, 1.2, 3.0]])
    want = read_frames(video, times, short_side=90)
    got = FrameCache(tmp_path / "c.h5").read(video, 0.0, None, times, 90)
    np.testing.assert_array_equal(got.frame_time, want.frame_time)
    np.testing.assert_array_equal(got.valid, want.valid)
    np.testing.assert_array_equal(got.frames, want.frames)
    assert not got.valid[-1]


def test_frames_folders_are_cached_at_their_frame_rate(tmp_path):
    """EPIC-Kitchens rgb_frames folders: cached through the CLI's path with their frame rate."""
    import cv2

    folder = tmp_path / "P01_01"
    folder.mkdir()
    for i in range(12):
        img = np.full((60, 80, 3), 20 * i, np.uint8)
        cv2.imwrite(str(folder / f"frame_{i + 1:010d}.jpg"), img)
    done = write_frame_cache(tmp_path / "c.h5", [(str(folder), 0.0, 0.4, 30.0)], short_side=60)
    assert done["added"] == 1 and done["failed"] == []
    times = np.array([0.0, 0.1, 0.2, 0.3])
    want = read_frames(folder, times, short_side=60, frame_rate=30.0)
    got = FrameCache(tmp_path / "c.h5").read(str(folder), 0.0, 0.4, times, 60)
    np.testing.assert_array_equal(got.frames, want.frames)
    np.testing.assert_array_equal(got.frame_time, want.frame_time)


def test_a_video_changed_since_caching_is_decoded(tmp_path, videos):
    import os

    write_frame_cache(tmp_path / "c.h5", [(videos[0], 0.0, None)], short_side=90)
    cache = FrameCache(tmp_path / "c.h5")
    assert cache.read(videos[0], 0.0, None, TIMES, 90) is not None
    st = os.stat(videos[0])
    os.utime(videos[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # re-downloaded, say
    assert cache.read(videos[0], 0.0, None, TIMES, 90) is None


def test_a_cache_of_another_version_is_refused_saying_what_to_do(tmp_path, videos):
    import h5py

    write_frame_cache(tmp_path / "c.h5", [(videos[0], 0.0, None)], short_side=90)
    with h5py.File(tmp_path / "c.h5", "a") as f:
        f.attrs["version"] = 1
    with pytest.raises(FrameCacheError, match="version 1; this version reads 2: delete it and run 'pipeline data cache-frames'"):
        FrameCache(tmp_path / "c.h5")
