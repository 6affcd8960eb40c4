import numpy as np
import pytest

from pipeline.io.video import VideoReadError, probe, read_frames, sample_times, write_video


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory):
    """30 frames at 15 fps whose red channel encodes the frame index (i * 8)."""
    frames = np.zeros((30, 120, 160, 3), np.uint8)
    for i in range(30):
        frames[i, :, :, 0] = i * 8
        frames[i, :, :, 1] = 100
    return write_video(tmp_path_factory.mktemp("v") / "ramp.mp4", frames, fps=15)


def test_sample_times():
    np.testing.assert_allclose(sample_times(0, 2, 4), np.arange(8) / 4)
    np.testing.assert_allclose(sample_times(1.0, 1.1, 4), [1.0])


def test_probe(ramp_video):
    info = probe(ramp_video)
    assert (info.width, info.height, info.fps, info.num_frames) == (160, 120, 15.0, 30)
    assert info.duration == pytest.approx(2.0)


def test_frames_at_known_times(ramp_video):
    times = [0.0, 0.25, 0.5, 1.0, 1.9]
    got = read_frames(ramp_video, times)
    # the frame on screen at t is the last one with timestamp <= t: index floor(t * 15)
    expect_idx = np.floor(np.asarray(times) * 15 + 1e-6).astype(int)
    np.testing.assert_allclose(got.frame_time, expect_idx / 15, atol=1e-6)
    assert got.valid.all()
    red = got.frames[:, 60, 80, 0].astype(int)
    np.testing.assert_allclose(red, expect_idx * 8, atol=4)
    assert got.frames.shape == (5, 120, 160, 3)


def test_resize_and_padding_past_end(ramp_video):
    got = read_frames(ramp_video, [1.5, 1.99, 2.5, 3.0], short_side=60)
    assert got.frames.shape == (4, 60, 80, 3)
    np.testing.assert_array_equal(got.valid, [True, True, False, False])
    # padding repeats the last frame (index 29) and reports its true time
    assert got.frame_time[2] == pytest.approx(29 / 15)
    np.testing.assert_array_equal(got.frames[2], got.frames[1])


def test_exact_size(ramp_video):
    assert read_frames(ramp_video, [0.0], size=(64, 64)).frames.shape == (1, 64, 64, 3)


def test_bad_files_raise_one_typed_error(tmp_path):
    with pytest.raises(VideoReadError, match="not found"):
        read_frames(tmp_path / "missing.mp4", [0.0])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        read_frames(empty, [0.0])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoReadError) as e:
        read_frames(junk, [0.0])
    assert str(junk) in str(e.value)


def test_truncated_file(ramp_video, tmp_path):
    data = ramp_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoReadError):
        read_frames(cut, [0.0, 1.0])
