"""One video reader (PyAV) for every stage: frames at requested timestamps, resized on the fly.

``read_frames(path, times)`` returns the frame on screen at each requested time, upright
(the container's display matrix applied, as players do), resized so its short side is
``short_side`` (or to exactly ``size``), with the frame's true presentation time.

How it decodes, and why:

* Times come from each decoded frame's pts, never from frame counts or the stated frame
  rate, so variable and non-integer frame rates need no special case; the container's
  stated duration and frame count are never trusted either (the decode loop runs until
  the requests are served or the stream ends).
* One seek, to the keyframe at or before the first request, when that request is well
  past the start; frames before a request are decoded but not converted. A seek that
  lands after the request (some containers' indexes are coarse or wrong) is detected and
  the file is read again from the start.
* Only returned frames are converted to RGB (and resized, in libswscale), through one
  reformatter per call so the scaler is set up once, not once per frame.
* A request past the last frame repeats the last frame and is marked ``valid`` False,
  never silently replaced by other data. A file that cannot be decoded raises
  :class:`VideoReadError` (path and reason) - missing, empty, truncated, audio-only, not
  a video - and a decoding error before the requests are served raises it too.
* The container is closed and the decode generator finalised in ``finally``, and no frame
  object outlives the call, so memory stays flat over long runs.

A folder of extracted JPEG frames (EPIC-Kitchens' ``rgb_frames/<video_id>/frame_%010d.jpg``,
1-based, at the video's native rate) is read the same way: pass the folder as ``path`` with
``frame_rate=``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import VideoReformatter

from pipeline.errors import PipelineError

# Seek only when the first request is this far past the start; below it, decoding from
# the first keyframe costs about as much as the seek itself.
SEEK_MIN_S = 1.0
# PyAV interrupts a blocked open / read after these many seconds (e.g. a stalled network
# mount) instead of hanging the worker.
OPEN_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 60.0
# Slice threads (PyAV's default, set explicitly): frame threads ("AUTO") measured 15-35% slower
# on the 2-core machines, add a thread start-up to every short read, and oversubscribe the
# CPUs when one decode task already runs per core (Ray tasks, DataLoader workers).
DECODE_THREAD_TYPE = "SLICE"
EPIC_FRAME_TEMPLATE = "frame_{:010d}.jpg"


class VideoReadError(PipelineError):
    """A video that cannot be decoded: missing, empty, truncated, or without a video stream."""

    def __init__(self, path: str | Path, reason: str | None = None):
        if reason is None:
            # Rebuilt from a message alone: torch's DataLoader re-raises a worker's exception
            # as ``type(e)(formatted_traceback)``; keep the line that names the video.
            message = str(path)
            line = next((ln for ln in message.splitlines() if "cannot read video" in ln), message)
            line = line.split("VideoReadError: ", 1)[-1].strip()
            path, _, reason = line.removeprefix("cannot read video ").partition(": ")
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {path}: {reason}")

    def __reduce__(self):  # picklable across processes (Ray actors, DataLoader workers)
        return (type(self), (self.path, self.reason))


@dataclass
class Frames:
    """Decoded frames. ``frame_time`` are the true presentation times (s) of the frames returned;
    ``valid`` is False where the request lay past the video's end and the last frame was repeated."""

    frames: np.ndarray  # [N, H, W, 3] uint8 RGB
    frame_time: np.ndarray  # [N] float64
    requested: np.ndarray  # [N] float64
    valid: np.ndarray  # [N] bool
    # How near a request must be to a frame's time to reach it (the container's time base), and,
    # when a request lay past the last frame, when that frame stops being shown.
    eps: float = 1e-4
    shown_until: float | None = None


@dataclass
class VideoInfo:
    """What the container states (duration and frame count may be wrong; the reader never relies
    on them). ``width``/``height`` are as displayed, i.e. after ``rotation``: the display
    matrix's counter-clockwise angle in degrees (ffprobe's convention; a phone video held
    upright is typically stored landscape with rotation -90)."""

    width: int
    height: int
    fps: float
    duration: float | None
    num_frames: int | None
    codec: str
    rotation: int = 0


def sample_times(start: float, end: float, fps: float) -> np.ndarray:
    """Times start, start + 1/fps, ... strictly before ``end`` (at least one)."""
    n = max(1, int(math.ceil((end - start) * fps - 1e-6)))
    return start + np.arange(n, dtype=np.float64) / fps


# --------------------------------------------------------------------------- opening


def _open(path: str | Path):
    p = Path(path)
    if not p.exists():
        raise VideoReadError(p, "file not found")
    if p.stat().st_size == 0:
        raise VideoReadError(p, "file is empty (0 bytes)")
    try:
        container = av.open(
            str(p), metadata_errors="ignore", timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S)
        )
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoReadError(p, f"not a readable media file ({e.__class__.__name__}: {e})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if kinds:
            raise VideoReadError(p, f"no video stream (only {', '.join(kinds)})")
        raise VideoReadError(p, "no streams found (truncated, or not a media file)")
    return container


def _seek(container, stream, pts: int) -> None:
    """Seek to the keyframe at or before ``pts`` (a module function so tests can stand in a
    container whose seek lands late)."""
    container.seek(pts, stream=stream, backward=True, any_frame=False)


# --------------------------------------------------------------------------- orientation


@dataclass(frozen=True)
class _Orientation:
    """How to turn a decoded (coded) frame upright: transpose, then flip rows / columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0  # display matrix angle, degrees counter-clockwise (ffprobe's "rotation")

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        if self.transpose:
            rgb = rgb.transpose(1, 0, 2)
        if self.flip_rows:
            rgb = rgb[::-1]
        if self.flip_cols:
            rgb = rgb[:, ::-1]
        return rgb

    def displayed(self, w: int, h: int) -> tuple[int, int]:
        return (h, w) if self.transpose else (w, h)


def _orientation(frame) -> _Orientation:
    """The display matrix (ISO 14496-12 / libavutil display.h) snapped to the nearest quarter
    turn, with mirroring. The matrix maps a source pixel (x, y) to (a*x + c*y, b*x + d*y)
    (plus a translation), so a=d=0 swaps the axes and a negative entry mirrors one."""
    try:
        side = frame.side_data[SideDataType.DISPLAYMATRIX]
    except (KeyError, IndexError):
        return _Orientation()
    m = np.frombuffer(bytes(side), dtype=np.int32).astype(np.float64)
    if m.size < 9:
        return _Orientation()
    a, b, c, d = m[0], m[1], m[3], m[4]
    rotation = int(round(frame.rotation))
    if abs(a) + abs(d) >= abs(b) + abs(c):  # no axis swap
        return _Orientation(False, d < 0, a < 0, rotation)
    return _Orientation(True, b < 0, c < 0, rotation)


def _output_size(w: int, h: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return w, h
    if w <= h:
        return short_side, max(1, int(round(h * short_side / w)))
    return max(1, int(round(w * short_side / h))), short_side


# --------------------------------------------------------------------------- probe


def probe(
    path: str | Path, *, frame_rate: float | None = None, frame_template: str = EPIC_FRAME_TEMPLATE
) -> VideoInfo:
    """Displayed size, rotation, frame rate, duration and frame count as the container states them
    (duration and frame count may be wrong). Decodes the first frame, which carries the rotation.
    A folder of extracted frames needs ``frame_rate``; its frames are counted."""
    p = Path(path)
    if _is_frames_folder(p, frame_rate):
        return _probe_folder(p, frame_rate, frame_template)
    container = _open(p)
    decoded = None
    try:
        s = container.streams.video[0]
        decoded = container.decode(s)
        try:
            first = next(decoded, None)
        except (av.error.FFmpegError, EOFError) as e:
            raise VideoReadError(p, f"decoding failed before the first frame ({e})") from None
        if first is None:
            raise VideoReadError(p, "no decodable video frames")
        orient = _orientation(first)
        width, height = orient.displayed(first.width, first.height)
        del first
        rate = s.average_rate or s.guessed_rate or 0
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        return VideoInfo(
            width=width,
            height=height,
            fps=float(rate) if rate else 0.0,
            duration=duration,
            num_frames=s.frames or None,
            codec=s.codec_context.name,
            rotation=orient.rotation,
        )
    finally:
        if decoded is not None:
            decoded.close()
        container.close()


# --------------------------------------------------------------------------- read_frames


def read_frames(
    path: str | Path,
    times: np.ndarray | list[float],
    short_side: int | None = None,
    size: tuple[int, int] | None = None,
    *,
    frame_rate: float | None = None,
    frame_template: str = EPIC_FRAME_TEMPLATE,
) -> Frames:
    """Frames shown at each requested time (the last frame whose timestamp <= t), upright.

    ``times`` must be non-decreasing seconds from the start of the video. Frames are resized
    so their short side is ``short_side`` (aspect kept), or to exactly ``size`` = (width,
    height) as displayed, when given. A request before the first frame gets the first frame;
    one past the last frame's display interval repeats the last frame with ``valid`` False.

    ``path`` may be a folder of extracted frames (EPIC-Kitchens ``rgb_frames``): then
    ``frame_rate`` (the video's native rate) is required, the frame on screen at t is file
    number ``floor(t * frame_rate + 1e-6) + 1`` of ``frame_template``. ``frame_rate`` is
    ignored for video files, whose timestamps come from the file.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ValueError("times must be a non-empty 1-D array")
    if not np.all(np.isfinite(times)):
        raise ValueError("times must be finite")
    if np.any(np.diff(times) < 0):
        raise ValueError("times must be non-decreasing")
    p = Path(path)
    if _is_frames_folder(p, frame_rate):
        return _read_folder(p, times, short_side, size, frame_rate, frame_template)
    want_seek = times[0] > SEEK_MIN_S
    try:
        return _read_video(p, times, short_side, size, seek=want_seek)
    except _SeekOvershoot:
        # The container's index put us past the request: read again from the start.
        return _read_video(p, times, short_side, size, seek=False)


class _SeekOvershoot(Exception):
    pass


def _read_video(path: Path, times: np.ndarray, short_side, size, seek: bool) -> Frames:
    container = _open(path)
    decoded = None
    try:
        stream = container.streams.video[0]
        stream.thread_type = DECODE_THREAD_TYPE
        tb = stream.time_base
        tb_s = float(tb)
        # Times are relative to the stream's first timestamp (MPEG-TS and some MKVs start late).
        origin = stream.start_time if stream.start_time and stream.start_time > 0 else 0
        # Timestamps are quantised to the time base (1 ms in MKV/WebM): a request within half a
        # tick of a frame counts as reaching it, so i/fps finds frame i.
        eps = 1e-4 + min(0.5 * tb_s, 1e-3)
        if seek:
            try:
                _seek(container, stream, origin + int(times[0] / tb))
            except av.error.FFmpegError:
                raise _SeekOvershoot from None  # unseekable: read from the start instead
        out = _Output(times, short_side, size)
        prev = None  # (time, frame): the latest decoded frame at or before times[k]
        prev_dt = None  # spacing of the last two frames, for the last frame's display interval
        k = 0
        decoded = container.decode(stream)
        try:
            for frame in decoded:
                if frame.pts is None:
                    continue
                t = (frame.pts - origin) * tb_s
                if prev is None:
                    if seek and t > times[0] + eps:
                        raise _SeekOvershoot
                    out.start(frame)
                elif t <= prev[0]:
                    continue  # a duplicate or out-of-order timestamp: keep the earlier frame
                else:
                    prev_dt = t - prev[0]
                # Every request earlier than this frame is shown by the previous frame
                # (or, before the first frame, by the first).
                while k < len(times) and t > times[k] + eps:
                    out.fill(k, *(prev or (t, frame)))
                    k += 1
                if k >= len(times):
                    break
                prev = (t, frame)
        except (av.error.FFmpegError, EOFError) as e:
            # Truncated or corrupt data before every request was served: refuse rather than
            # pad with frames from before the damage.
            where = f"after t={prev[0]:.3f}s" if prev else "before the first frame"
            raise VideoReadError(path, f"decoding failed {where} ({e})") from None
        if prev is None:
            raise VideoReadError(path, "no decodable video frames (none with a timestamp)")
        if k < len(times):
            # Past the last frame: it stays on screen for its own duration; beyond that is padding.
            last_t, last = prev
            shown_for = (last.duration or 0) * tb_s or prev_dt or _nominal_interval(stream)
            while k < len(times):
                out.fill(k, last_t, last)
                out.valid[k] = times[k] <= last_t + eps or times[k] + eps < last_t + shown_for
                k += 1
            return out.result(eps, last_t + shown_for)
        return out.result(eps)
    finally:
        if decoded is not None:
            decoded.close()  # finalise the generator so it drops its packet/frame references
        container.close()


def _nominal_interval(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.0


class _Output:
    """Output arrays for one call; converts each returned frame once (RGB, resized, upright)."""

    def __init__(self, times: np.ndarray, short_side: int | None, size: tuple[int, int] | None):
        self.times, self.short_side, self.size = times, short_side, size
        n = len(times)
        self.frame_time = np.full(n, np.nan)
        self.valid = np.zeros(n, dtype=bool)
        self.frames = None
        self._reformatter = VideoReformatter()
        self._last = None  # (frame, rgb) of the last conversion, for repeated requests

    def start(self, first) -> None:
        """Fix orientation and output size from the first decoded frame."""
        self.orient = _orientation(first)
        disp_w, disp_h = self.orient.displayed(first.width, first.height)
        if self.size is not None:
            self.out_w, self.out_h = int(self.size[0]), int(self.size[1])
        else:
            self.out_w, self.out_h = _output_size(disp_w, disp_h, self.short_side)
        # libswscale scales in coded orientation; the rotation is a free numpy view after.
        self.scale_w, self.scale_h = self.orient.displayed(self.out_w, self.out_h)
        self.frames = np.empty((len(self.times), self.out_h, self.out_w, 3), dtype=np.uint8)

    def fill(self, k: int, t: float, frame) -> None:
        if self._last is None or self._last[0] is not frame:
            rgb = self._reformatter.reformat(
                frame, width=self.scale_w, height=self.scale_h, format="rgb24"
            ).to_ndarray()
            self._last = (frame, self.orient.apply(rgb))
        self.frames[k] = self._last[1]
        self.frame_time[k] = t
        self.valid[k] = True

    def result(self, eps: float = 1e-4, shown_until: float | None = None) -> Frames:
        self._last = None
        return Frames(self.frames, self.frame_time, self.times, self.valid, eps, shown_until)


# --------------------------------------------------------------------------- frame folders


def _is_frames_folder(path: Path, frame_rate) -> bool:
    """A folder, or a missing path given with ``frame_rate`` (so the error names a folder).
    ``frame_rate`` is ignored for video files: their timestamps come from the file."""
    return path.is_dir() or (frame_rate is not None and not path.exists())


def _frame_file(folder: Path, template: str, index: int) -> Path:
    return folder / template.format(index)


def _last_frame_index(folder: Path, template: str, upto: int) -> int:
    """Number of frames, assuming files 1..N exist without gaps; only looked for up to ``upto``
    (binary search on file existence: a listing of a 90k-frame folder costs more)."""
    if _frame_file(folder, template, upto).exists():
        return upto
    if not _frame_file(folder, template, 1).exists():
        raise VideoReadError(folder, f"no frames named like {template.format(1)!r} in the folder")
    lo, hi = 1, upto  # frame lo exists, frame hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _frame_file(folder, template, mid).exists():
            lo = mid
        else:
            hi = mid
    return lo


def _read_folder(folder: Path, times, short_side, size, frame_rate, template) -> Frames:
    if frame_rate is None:
        raise ValueError(f"{folder} is a folder of frames: pass frame_rate= (the video's native fps)")
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    if not folder.is_dir():
        raise VideoReadError(folder, "frames folder not found")
    wanted = np.maximum(np.floor(times * frame_rate + 1e-6).astype(np.int64) + 1, 1)
    last = _last_frame_index(folder, template, int(wanted[-1]))
    shown = np.minimum(wanted, last)
    frame_time = (shown - 1) / frame_rate
    frames = None
    rgb, rgb_index = None, None  # requests are sorted, so repeats of a frame are adjacent
    for k, index in enumerate(shown.tolist()):
        if index != rgb_index:
            rgb, rgb_index = _read_jpeg(folder, template, index, short_side, size), index
        if frames is None:
            frames = np.empty((len(times), *rgb.shape), dtype=np.uint8)
        frames[k] = rgb
    return Frames(frames, frame_time, times, wanted <= last)


def _read_jpeg(folder: Path, template: str, index: int, short_side, size) -> np.ndarray:
    f = _frame_file(folder, template, index)
    bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
    if bgr is None:
        reason = "missing" if not f.exists() else "unreadable"
        raise VideoReadError(folder, f"{reason} frame file {f.name}")
    h, w = bgr.shape[:2]
    out_w, out_h = (int(size[0]), int(size[1])) if size is not None else _output_size(w, h, short_side)
    if (out_w, out_h) != (w, h):
        shrink = out_w * out_h < w * h
        bgr = cv2.resize(bgr, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _probe_folder(folder: Path, frame_rate, template) -> VideoInfo:
    if frame_rate is None:
        raise ValueError(f"{folder} is a folder of frames: pass frame_rate= (the video's native fps)")
    if not folder.is_dir():
        raise VideoReadError(folder, "frames folder not found")
    upto = 1
    while _frame_file(folder, template, upto).exists():  # exponential search, then bisect
        upto *= 2
    n = _last_frame_index(folder, template, upto)
    h, w = _read_jpeg(folder, template, 1, None, None).shape[:2]
    return VideoInfo(w, h, float(frame_rate), n / frame_rate, n, "jpeg")


# --------------------------------------------------------------------------- writing


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
