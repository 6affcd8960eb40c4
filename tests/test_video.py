import os
import struct
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from pipeline.io import video
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
    assert info.rotation == 0


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


# --------------------------------------------------------------------------- fixtures


def _index_frame(i: int, w: int, h: int) -> np.ndarray:
    """Frame i: red = 8 * i (the index, read back at the centre), fixed green and blue."""
    frame = np.empty((h, w, 3), np.uint8)
    frame[...] = (8 * i, 128, 64)
    return frame


def _encode(path, codec, frames, pts=None, rate=15, time_base=None, options=None, gop=None, rotation=None,
            hflip=False):
    """Encode RGB frames [N,H,W,3] with PyAV; frame i gets pts ``pts[i]`` (default i) in ``time_base``
    (default 1/rate)."""
    n, h, w, _ = frames.shape
    pts = list(range(n)) if pts is None else list(pts)
    time_base = time_base or Fraction(1, 1) / Fraction(rate)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.codec_context.time_base = time_base
        if gop:
            stream.codec_context.gop_size = gop
        if options:
            stream.options = options
        if rotation is not None:
            stream.set_display_rotation(rotation, hflip=hflip)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


CODECS = {  # name -> (codec, container extension, encoder options)
    "h264-mp4": ("libx264", "mp4", {"crf": "12", "preset": "veryfast"}),
    "vp9-webm": ("libvpx-vp9", "webm", {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}),
    "mpeg4-avi": ("mpeg4", "avi", {"qmin": "1", "qmax": "3"}),
    "mjpeg-mkv": ("mjpeg", "mkv", {"qmin": "1", "qmax": "3"}),
    "mjpeg-avi": ("mjpeg", "avi", {"qmin": "1", "qmax": "3"}),
}


@pytest.fixture(scope="module", params=sorted(CODECS))
def codec_video(request, tmp_path_factory):
    """30 index-coded 64x48 frames at 15 fps, a keyframe every 5 frames (so seeks land mid-file)."""
    codec, ext, options = CODECS[request.param]
    frames = np.stack([_index_frame(i, 64, 48) for i in range(30)])
    path = tmp_path_factory.mktemp("codecs") / f"{request.param}.{ext}"
    return _encode(path, codec, frames, options=options, gop=5)


def _red(got) -> np.ndarray:
    return got.frames[:, 16:32, 24:40, 0].mean(axis=(1, 2))


# --------------------------------------------------------------------------- codecs, rates, shapes


def test_codecs_and_containers(codec_video):
    # i/15 lands exactly on frame i even where timestamps are rounded to 1 ms (MKV, WebM)
    times = [0.0, 1 / 15, 7 / 15 + 0.03, 0.5, 1.0, 1.9, 29 / 15, 2.1]
    idx = np.array([0, 1, 7, 7, 15, 28, 29, 29])
    got = read_frames(codec_video, times)
    np.testing.assert_allclose(got.frame_time, idx / 15, atol=1e-3)
    np.testing.assert_allclose(_red(got), idx * 8, atol=6)
    np.testing.assert_array_equal(got.valid, [True] * 7 + [False])
    assert got.frames.shape == (8, 48, 64, 3) and got.frames.dtype == np.uint8


def test_seek_matches_decoding_from_start(codec_video):
    """A request past 1 s seeks to a keyframe and skips what lies before the request."""
    late = [1.25, 1.3, 1.6, 1.95]
    sought = read_frames(codec_video, late, short_side=24)
    from_start = read_frames(codec_video, [0.0, *late], short_side=24)
    np.testing.assert_array_equal(sought.frame_time, from_start.frame_time[1:])
    np.testing.assert_array_equal(sought.frames, from_start.frames[1:])
    np.testing.assert_allclose(_red(sought), [18 * 8, 19 * 8, 24 * 8, 29 * 8], atol=6)


def test_seek_landing_after_request_falls_back_to_start(codec_video, monkeypatch):
    """Some containers' seek lands past the target; the reader notices and reads from the start."""
    calls = []

    def seek_too_far(container, stream, pts):
        calls.append(pts)
        container.seek(pts + int(0.5 / stream.time_base), stream=stream, backward=False)

    monkeypatch.setattr(video, "_seek", seek_too_far)
    got = read_frames(codec_video, [1.2, 1.5])
    assert calls, "the reader should have tried to seek"
    np.testing.assert_allclose(got.frame_time, [18 / 15, 22 / 15], atol=1e-3)
    np.testing.assert_allclose(_red(got), [18 * 8, 22 * 8], atol=6)


def test_portrait_video(tmp_path):
    frames = np.stack([_index_frame(i, 90, 160) for i in range(10)])
    path = _encode(tmp_path / "portrait.mp4", "libx264", frames, rate=10)
    info = probe(path)
    assert (info.width, info.height) == (90, 160)
    got = read_frames(path, [0.0, 0.55], short_side=45)
    assert got.frames.shape == (2, 80, 45, 3)
    np.testing.assert_allclose(got.frames[:, 40, 22, 0], [0, 40], atol=6)


def test_non_integer_frame_rate(tmp_path):
    rate = Fraction(30000, 1001)
    frames = np.stack([_index_frame(i, 64, 48) for i in range(30)])
    path = _encode(tmp_path / "ntsc.mp4", "libx264", frames, rate=rate)
    assert probe(path).fps == pytest.approx(29.97, abs=1e-3)
    times = sample_times(0, 1.0, 8)  # a teacher rate that does not divide 29.97
    got = read_frames(path, times)
    idx = np.floor(times * 30000 / 1001 + 1e-6).astype(int)
    np.testing.assert_allclose(got.frame_time, idx * 1001 / 30000, atol=1e-6)
    np.testing.assert_allclose(_red(got), idx * 8, atol=6)


VFR_PTS_MS = [0, 40, 70, 150, 160, 300, 310, 500, 520, 700]


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_frame_rate(tmp_path, ext):
    """Frames at irregular times: the reader reports pts times, never index / fps."""
    frames = np.stack([_index_frame(i, 64, 48) for i in range(len(VFR_PTS_MS))])
    path = _encode(tmp_path / f"vfr.{ext}", "libx264", frames, pts=VFR_PTS_MS, rate=25,
                   time_base=Fraction(1, 1000))
    times = np.array([0.0, 0.05, 0.149, 0.15, 0.2, 0.499, 0.51, 0.69, 0.71])
    got = read_frames(path, times)
    pts_s = np.asarray(VFR_PTS_MS) / 1000
    idx = np.searchsorted(pts_s, times + 1e-6, side="right") - 1
    np.testing.assert_allclose(got.frame_time, pts_s[idx], atol=1e-3)
    np.testing.assert_allclose(_red(got), idx * 8, atol=6)
    assert got.valid.all()  # 0.71 is within the last frame's display interval
    past = read_frames(path, [0.69, 2.0])
    np.testing.assert_array_equal(past.valid, [True, False])


# --------------------------------------------------------------------------- rotation


def _marker_frame(w=64, h=48) -> np.ndarray:
    """Dark frame, white block at the stored top-left, red block at the stored top-right."""
    frame = np.full((h, w, 3), 30, np.uint8)
    frame[:12, :12] = 255
    frame[:12, -12:] = (255, 0, 0)
    return frame


def _tkhd_matrix(path) -> tuple[float, float, float, float]:
    """(a, b, c, d) of the MP4 track header's display matrix, 16.16 fixed point."""
    data = path.read_bytes()
    i = data.find(b"tkhd")
    version = data[i + 4]
    # version/flags, times + track id + reserved + duration, reserved, layer, group, volume, reserved
    off = i + 8 + (32 if version == 1 else 20) + 8 + 2 + 2 + 2 + 2
    m = struct.unpack(">9i", data[off: off + 36])
    return m[0] / 65536, m[1] / 65536, m[3] / 65536, m[4] / 65536


def test_phone_video_stored_landscape_comes_out_portrait(tmp_path):
    """A phone held upright stores landscape frames with rotation -90 (clockwise quarter turn):
    this is the matrix iPhones write, a = d = 0, b = 1, c = -1."""
    src = _marker_frame()
    path = _encode(tmp_path / "phone.mp4", "libx264", np.stack([src] * 5), rate=10, rotation=-90)
    assert _tkhd_matrix(path) == (0.0, 1.0, -1.0, 0.0)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (48, 64, -90)
    got = read_frames(path, [0.0, 0.3])
    assert got.frames.shape == (2, 64, 48, 3)  # portrait, as a player shows it
    upright = got.frames[0].astype(int)
    assert upright[:12, -12:].mean() > 220  # white: stored top-left -> displayed top-right
    assert np.abs(upright[-12:, -12:] - [255, 0, 0]).mean() < 30  # red: top-right -> bottom-right
    assert upright[:12, :12].mean() < 60
    assert read_frames(path, [0.0], short_side=24).frames.shape == (1, 32, 24, 3)
    assert read_frames(path, [0.0], size=(20, 30)).frames.shape == (1, 30, 20, 3)


@pytest.mark.parametrize("rotation,hflip", [(90, False), (180, False), (0, True)])
def test_rotation_and_mirroring(tmp_path, rotation, hflip):
    src = _marker_frame()
    path = _encode(tmp_path / "rot.mp4", "libx264", np.stack([src] * 3), rate=10, rotation=rotation,
                   hflip=hflip)
    # rotation is counter-clockwise (display.h); the mirror is applied to the stored picture first
    expect = np.rot90(src[:, ::-1] if hflip else src, k=rotation // 90)
    got = read_frames(path, [0.0]).frames[0]
    assert got.shape == expect.shape
    assert np.abs(got.astype(int) - expect).mean() < 4


# --------------------------------------------------------------------------- containers that lie, bad files


def _patch_avi_frame_count(src, dst, count):
    data = bytearray(src.read_bytes())
    i = data.find(b"avih")
    struct.pack_into("<I", data, i + 8 + 16, count)  # MainAVIHeader.dwTotalFrames
    i = data.find(b"strh")
    struct.pack_into("<I", data, i + 8 + 32, count)  # AVIStreamHeader.dwLength
    dst.write_bytes(bytes(data))
    return dst


def _patch_mp4_duration(src, dst, factor):
    data = bytearray(src.read_bytes())
    for box in (b"mvhd", b"mdhd"):
        i = data.find(box)
        version = data[i + 4]
        off = i + 8 + (20 if version == 1 else 12)
        fmt = ">Q" if version == 1 else ">I"
        struct.pack_into(fmt, data, off, int(struct.unpack_from(fmt, data, off)[0] * factor))
    dst.write_bytes(bytes(data))
    return dst


def test_containers_lying_about_length(tmp_path):
    frames = np.stack([_index_frame(i, 64, 48) for i in range(30)])
    avi = _encode(tmp_path / "v.avi", "mpeg4", frames, options={"qmin": "1", "qmax": "3"})
    mp4 = _encode(tmp_path / "v.mp4", "libx264", frames, options={"crf": "12"})
    liars = [_patch_avi_frame_count(avi, tmp_path / "long.avi", 1000),
             _patch_avi_frame_count(avi, tmp_path / "short.avi", 5),
             _patch_mp4_duration(mp4, tmp_path / "short.mp4", 0.5)]
    assert probe(liars[0]).num_frames == 1000
    assert probe(liars[1]).num_frames == 5
    assert probe(liars[2]).duration == pytest.approx(1.0)
    for path in liars:
        got = read_frames(path, [0.0, 1.5, 1.95, 2.5, 30.0])
        np.testing.assert_allclose(got.frame_time, np.array([0, 22, 29, 29, 29]) / 15, atol=1e-6)
        np.testing.assert_allclose(_red(got), np.array([0, 22, 29, 29, 29]) * 8, atol=6)
        np.testing.assert_array_equal(got.valid, [True, True, True, False, False])


def test_every_bad_file_raises_with_path_and_reason(tmp_path, ramp_video):
    audio = tmp_path / "speech.m4a"
    with av.open(str(audio), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    text = tmp_path / "notes.mp4"
    text.write_text("a text file, not a video\n" * 50)
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(ramp_video.read_bytes()[:2000])
    cases = {audio: "no video stream", text: "not a readable", empty: "empty",
             truncated: "truncated|not a readable", tmp_path / "missing.mkv": "not found"}
    for path, reason in cases.items():
        for call in (lambda: read_frames(path, [0.0, 1.0]), lambda: probe(path)):
            with pytest.raises(VideoReadError, match=reason) as e:
                call()
            assert e.value.path == str(path) and str(path) in str(e.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    """Opening a FIFO with no writer blocks forever; the reader refuses it before opening."""
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    with pytest.raises(VideoReadError, match="empty"):
        read_frames(fifo, [0.0])


def test_file_cut_mid_stream_never_returns_wrong_frames(tmp_path):
    """A streamable container (MKV) cut mid-way: either a VideoReadError, or frames that match
    their timestamps with the part after the cut marked invalid - never other frames."""
    frames = np.stack([_index_frame(i, 64, 48) for i in range(30)])
    full = _encode(tmp_path / "full.mkv", "libx264", frames, options={"crf": "12"}, gop=5)
    data = full.read_bytes()
    for fraction in (0.4, 0.7):
        cut = tmp_path / f"cut{fraction}.mkv"
        cut.write_bytes(data[: int(len(data) * fraction)])
        try:
            got = read_frames(cut, [0.0, 0.5, 1.0, 1.5, 1.9])
        except VideoReadError:
            continue
        idx = np.rint(got.frame_time * 15).astype(int)
        np.testing.assert_allclose(_red(got), idx * 8, atol=6)
        assert not got.valid[-1]


# --------------------------------------------------------------------------- EPIC-Kitchens frame folders


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory):
    """P01/rgb_frames/P01_01 with 10 JPEGs at 50 fps, 1-based, red = 20 * (number - 1)."""
    folder = tmp_path_factory.mktemp("epic") / "P01" / "rgb_frames" / "P01_01"
    folder.mkdir(parents=True)
    for number in range(1, 11):
        rgb = np.empty((48, 64, 3), np.uint8)
        rgb[...] = (20 * (number - 1), 128, 64)
        cv2.imwrite(str(folder / f"frame_{number:010d}.jpg"), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return folder


def test_frames_folder(frames_folder):
    times = [0.0, 0.019, 0.02, 0.1, 0.199, 0.2, 0.5]
    got = read_frames(frames_folder, times, frame_rate=50)
    number = np.array([1, 1, 2, 6, 10, 10, 10])  # floor(t * 50 + 1e-6) + 1, the last one repeated
    np.testing.assert_allclose(got.frame_time, (number - 1) / 50)
    np.testing.assert_array_equal(got.valid, [True] * 5 + [False, False])
    np.testing.assert_allclose(_red(got), (number - 1) * 20, atol=4)
    assert np.abs(got.frames[..., 1].astype(int) - 128).max() < 6  # RGB order, not BGR
    assert got.frames.shape == (7, 48, 64, 3)
    assert read_frames(frames_folder, [0.0], short_side=24, frame_rate=50).frames.shape == (1, 24, 32, 3)
    assert read_frames(frames_folder, [0.0], size=(16, 16), frame_rate=50).frames.shape == (1, 16, 16, 3)
    info = probe(frames_folder, frame_rate=50)
    assert (info.width, info.height, info.num_frames, info.duration) == (64, 48, 10, pytest.approx(0.2))


def test_frames_folder_with_own_template(tmp_path):
    for number in range(1, 4):
        cv2.imwrite(str(tmp_path / f"img_{number:05d}.jpg"), np.full((8, 8, 3), 50 * number, np.uint8))
    got = read_frames(tmp_path, [0.0, 0.04, 0.5], frame_rate=25, frame_template="img_{:05d}.jpg")
    np.testing.assert_allclose(got.frame_time, [0.0, 0.04, 0.08])
    np.testing.assert_array_equal(got.valid, [True, True, False])
    np.testing.assert_allclose(got.frames[:, 4, 4, 0], [50, 100, 150], atol=3)


def test_frames_folder_errors(frames_folder, tmp_path):
    with pytest.raises(ValueError, match="frame_rate"):
        read_frames(frames_folder, [0.0])
    with pytest.raises(VideoReadError, match="folder not found"):
        read_frames(tmp_path / "P02" / "rgb_frames" / "P02_09", [0.0], frame_rate=60)
    with pytest.raises(VideoReadError, match="no frames"):
        read_frames(tmp_path, [0.0], frame_rate=60)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "frame_0000000001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(VideoReadError, match="unreadable frame file frame_0000000001.jpg") as e:
        read_frames(broken, [0.0], frame_rate=60)
    assert e.value.path == str(broken)


# --------------------------------------------------------------------------- resources


def test_memory_stays_flat_over_many_reads(tmp_path):
    psutil = pytest.importorskip("psutil")
    frames = np.stack([np.full((240, 320, 3), i * 4, np.uint8) for i in range(45)])
    path = write_video(tmp_path / "long.mp4", frames, fps=15)
    proc = psutil.Process()

    def read(i):
        start = 1.2 if i % 2 else 0.0  # alternate decoding from the start and seeking
        read_frames(path, [start, start + 0.1, start + 0.2, 5.0], short_side=120 if i % 3 else None)

    for i in range(20):
        read(i)
    before = proc.memory_info().rss
    for i in range(300):
        read(i)
    grown_mb = (proc.memory_info().rss - before) / 2**20
    assert grown_mb < 30, f"RSS grew {grown_mb:.1f} MB over 300 reads"


def test_video_read_error_survives_a_dataloader_worker(tmp_path):
    """A worker's VideoReadError reaches the main process as the same one-line error."""
    import torch

    from pipeline.io.video import VideoReadError, read_frames

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)

    class Reads(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return torch.from_numpy(read_frames(bad, [0.0]).frames)

    with pytest.raises(VideoReadError) as e:
        next(iter(torch.utils.data.DataLoader(Reads(), num_workers=1)))
    assert e.value.path == str(bad)
    assert str(e.value).startswith(f"cannot read video {bad}: ") and "\n" not in str(e.value)
