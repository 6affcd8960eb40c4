"""One video reader (PyAV) for every stage: frames at requested timestamps, resized on the fly.

Decoding seeks once to the keyframe before the first requested time and then decodes
forward, converting (and resizing, in libswscale) only the frames that are returned.
A request past the last decodable frame repeats the last frame and is marked invalid
(``valid`` False), never silently replaced by other data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipeline.errors import PipelineError


class VideoReadError(PipelineError):
    """A video that cannot be decoded: missing, empty, truncated, or without a video stream."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {path}: {reason}")


@dataclass
class Frames:
    """Decoded frames. ``frame_time`` are the true presentation times (s) of the frames returned;
    ``valid`` is False where the request lay past the video's end and the last frame was repeated."""

    frames: np.ndarray  # [N, H, W, 3] uint8 RGB
    frame_time: np.ndarray  # [N] float64
    requested: np.ndarray  # [N] float64
    valid: np.ndarray  # [N] bool


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    duration: float | None
    num_frames: int | None
    codec: str


def sample_times(start: float, end: float, fps: float) -> np.ndarray:
    """Times start, start + 1/fps, ... strictly before ``end`` (at least one)."""
    n = max(1, int(math.ceil((end - start) * fps - 1e-6)))
    return start + np.arange(n, dtype=np.float64) / fps


def _open(path: str | Path):
    p = Path(path)
    if not p.exists():
        raise VideoReadError(p, "file not found")
    if p.stat().st_size == 0:
        raise VideoReadError(p, "file is empty (0 bytes)")
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoReadError(p, f"not a readable media file ({e.__class__.__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(p, "no video stream (audio-only or not a video)")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate, duration and frame count as the container states them (may be wrong)."""
    with _open(path) as container:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate or 0
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        return VideoInfo(
            width=s.codec_context.width,
            height=s.codec_context.height,
            fps=float(rate) if rate else 0.0,
            duration=duration,
            num_frames=s.frames or None,
            codec=s.codec_context.name,
        )


def _output_size(w: int, h: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return w, h
    if w <= h:
        return short_side, max(1, int(round(h * short_side / w)))
    return max(1, int(round(w * short_side / h))), short_side


def read_frames(
    path: str | Path,
    times: np.ndarray | list[float],
    short_side: int | None = None,
    size: tuple[int, int] | None = None,
) -> Frames:
    """Frames shown at each requested time (the last frame whose timestamp <= t).

    ``times`` must be non-decreasing seconds from the start of the file. Frames are
    resized so their short side is ``short_side`` (aspect kept), or to exactly
    ``size`` = (width, height), when given.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ValueError("times must be a non-empty 1-D array")
    if np.any(np.diff(times) < 0):
        raise ValueError("times must be non-decreasing")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        if size is not None:
            out_w, out_h = int(size[0]), int(size[1])
        else:
            out_w, out_h = _output_size(stream.codec_context.width, stream.codec_context.height, short_side)
        frames = np.zeros((len(times), out_h, out_w, 3), dtype=np.uint8)
        frame_time = np.full(len(times), np.nan)
        valid = np.zeros(len(times), dtype=bool)
        eps = 1e-4
        if times[0] > 0.5:
            # Seek to the keyframe at or before the first request instead of decoding from the start.
            container.seek(int(times[0] / tb), stream=stream, backward=True, any_frame=False)
        k = 0  # next request to fill
        prev = None  # (time, av.VideoFrame) most recent decoded frame at or before times[k]
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb)
                # Every request earlier than this frame is shown by the previous frame.
                while k < len(times) and t > times[k] + eps:
                    if prev is None:  # request before the first frame: first frame shows it
                        prev = (t, frame)
                    _fill(frames, frame_time, valid, k, prev, out_w, out_h)
                    k += 1
                if k >= len(times):
                    break
                prev = (t, frame)
        except (av.error.FFmpegError, EOFError) as e:
            if prev is None:
                raise VideoReadError(path, f"decoding failed before the first frame ({e})") from None
            # A truncated file: keep what decoded, pad the rest below.
        if prev is None:
            raise VideoReadError(path, "no decodable video frames")
        while k < len(times):
            # Past the last frame: the last frame is the one on screen; a request beyond
            # its display interval is padding.
            _fill(frames, frame_time, valid, k, prev, out_w, out_h)
            valid[k] = times[k] < prev[0] + _frame_interval(stream) + eps
            k += 1
        return Frames(frames, frame_time, times, valid)
    finally:
        container.close()


def _frame_interval(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.0


def _fill(frames, frame_time, valid, k, prev, out_w, out_h) -> None:
    t, frame = prev
    frames[k] = frame.to_ndarray(format="rgb24", width=out_w, height=out_h)
    frame_time[k] = t
    valid[k] = True


def write_video(path: str | Path, frames: np.ndarray, fps: int, codec: str = "libx264", crf: int = 18) -> Path:
    """Write uint8 RGB frames [N,H,W,3] with frame i at time i/fps (test fixtures, small outputs)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    with av.open(str(p), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return p
