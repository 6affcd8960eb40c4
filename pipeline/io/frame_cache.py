"""Decoded frames cached in one HDF5 file, so training reads pixels instead of decoding video.

Decoding is the likeliest limit of a small student: on the 2-core development machine a demo
clip (30 frames of 160 x 120 H.264) took about 10 ms to decode, as long as the slow_tiny
training step itself. ``pipeline data cache-frames`` decodes each clip once, at a fixed short
side, and the dataset reads the cache where the config names one (``data.frame_cache``).

Layout (h5py): root attrs ``format`` = ``egoexo-frame-cache``, ``version``, ``short_side`` and
``encoding`` (``raw``: uint8 [n, H, W, 3] RGB, one chunk per frame; ``jpeg``: one JPEG per
frame, for caches of full-size datasets); ``keys`` (one string per entry: video path, start,
end) and per entry ``i`` the group ``clips/<i>`` with ``frames`` and ``frame_time`` (seconds,
the decoder's presentation times) and attrs ``eps`` and ``shown_until`` (the reader's rules for
reaching a frame and for the video's end), ``size`` (displayed width, height) and the video
file's ``size_bytes`` and ``mtime_ns`` (an entry of a video that changed since is not used). An entry
is written whole before its key is added, so a cache cut short by a crash holds only complete
entries and a rerun adds the rest.

A read returns what :func:`pipeline.io.video.read_frames` would: the last frame whose time is
at or before each requested time, ``valid`` False past the last frame's interval. Frames are
resized from the cached short side to the requested one (``cv2.INTER_AREA``), which differs by
a few grey levels from decoding at that size directly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.video import Frames, _output_size, probe, read_frames

FORMAT, VERSION = "egoexo-frame-cache", 2  # 2: per-entry eps, shown_until, file stamp
ENCODINGS = ("raw", "jpeg")
JPEG_QUALITY = 95


class FrameCacheError(PipelineError):
    """A file that is not a frame cache of this version, or one made at other settings."""


def cache_key(path: str | Path, start: float, end: float | None) -> str:
    """An entry's name: the video (absolute path) and the part of it cached."""
    return f"{os.path.abspath(path)}|{float(start):.6f}|{'' if end is None else f'{float(end):.6f}'}"


def decode_all(path: str | Path, start: float, end: float | None, short_side: int,
               frame_rate: float | None = None) -> tuple[Frames, tuple[int, int]]:
    """Every frame of ``path`` shown in [start, end] (to the video's end when None), each once,
    and the video's displayed (width, height). ``frames.eps`` and ``frames.shown_until`` carry
    the reader's rules for reaching a frame and for the end of the video.

    Requests go twice per nominal frame interval; the stated duration is not trusted: while the
    last request still lands on a frame the range is extended."""
    info = probe(path, frame_rate=frame_rate)
    fps = info.fps if info.fps > 0 else 30.0
    stop = end if end is not None else (info.duration or 0.0) + 1.0
    while True:
        times = np.arange(max(start, 0.0), max(stop, start) + 1e-9, 0.5 / fps)
        got = read_frames(path, times, short_side=short_side, frame_rate=frame_rate)
        if end is not None or not got.valid[-1]:
            break
        stop = 2 * stop + 1.0  # the container understated its length
    keep = got.valid & np.concatenate([[True], np.diff(got.frame_time) > 0])
    frame_time = got.frame_time[keep]
    shown_until = got.shown_until
    if shown_until is None:  # the range ended inside the video, or a frames folder
        shown_until = float(frame_time[-1]) + (1.0 / frame_rate if frame_rate else 1.0 / fps)
    frames = Frames(got.frames[keep], frame_time, frame_time.copy(), np.ones(len(frame_time), bool), got.eps,
                    shown_until)
    return frames, (info.width, info.height)


def write_frame_cache(
    out: str | Path,
    clips: Iterable[tuple],
    short_side: int,
    encoding: str = "raw",
    progress=None,
) -> dict:
    """Add every ``(video path, start, end[, frame rate of a frames folder])`` not yet in the cache
    at ``out``; returns counts.

    A clip whose video cannot be decoded is skipped and reported; the dataset decodes it
    (and fails it) as it would without a cache."""
    import h5py

    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
    out = Path(out)
    if out.is_dir():
        raise FrameCacheError(f"{out} is a folder; give the cache's file name, e.g. {out / 'frames.h5'}")
    rates = {}
    for clip in clips:
        p, s, e = str(clip[0]), float(clip[1]), None if clip[2] is None else float(clip[2])
        rates[(p, s, e)] = clip[3] if len(clip) > 3 else None
    todo = list(rates)
    added, failed = 0, []
    with h5py.File(out, "a") as f:
        if "keys" not in f:
            f.attrs.update({"format": FORMAT, "version": VERSION, "short_side": int(short_side), "encoding": encoding})
            f.create_dataset("keys", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
            f.create_group("clips")
        _check(f, out, short_side=short_side, encoding=encoding)
        done = {k.decode() if isinstance(k, bytes) else k for k in f["keys"][:]}
        todo = [c for c in todo if cache_key(*c) not in done]
        for path, start, end in (progress(todo, desc="cache frames", unit="clip") if progress else todo):
            try:
                got, size = decode_all(path, start, end, short_side, rates[(path, start, end)])
            except (PipelineError, ValueError) as e:
                failed.append(f"{path}: {e}")
                continue
            i = len(f["keys"])
            g = f["clips"].create_group(str(i))
            if encoding == "raw":
                g.create_dataset("frames", data=got.frames, chunks=(1, *got.frames.shape[1:]))
            else:
                data = g.create_dataset("frames", shape=(len(got.frames),), dtype=h5py.vlen_dtype(np.uint8))
                for k, rgb in enumerate(got.frames):
                    data[k] = _encode_jpeg(rgb)
            g.create_dataset("frame_time", data=got.frame_time)
            g.attrs.update({"eps": got.eps, "shown_until": got.shown_until, "size": size,
                            **_file_stamp(path)})
            f["keys"].resize((i + 1,))
            f["keys"][i] = cache_key(path, start, end)  # last: the entry counts once it is whole
            f.flush()
            added += 1
        total = len(f["keys"])
    return {"added": added, "already_cached": len(done), "entries": total, "failed": failed}


def cache_manifest(manifest: str | Path, video_root: str | Path, out: str | Path, short_side: int,
                   encoding: str = "raw", manifest_format: str = "auto", classes: str | None = None,
                   split: str | None = None) -> dict:
    """``write_frame_cache`` for the clips of a manifest (one split, or all) whose videos are on
    disk; returns its counts plus ``missing``, the ids of clips whose video is absent."""
    from pipeline.stages.common import clip_refs, load_table, progress, select_rows

    table = load_table(str(manifest), manifest_format, classes)
    clips, missing = clip_refs(table, select_rows(table, split, "all"), video_root)
    done = write_frame_cache(out, [(c.path, c.start, c.end, c.frame_rate) for c in clips], short_side, encoding,
                             progress=progress)
    return {**done, "missing": missing}


def _file_stamp(path: str | Path) -> dict[str, int]:
    """Size and modification time: a re-downloaded or re-encoded video is not served from the cache."""
    st = os.stat(path)
    return {"size_bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _encode_jpeg(rgb: np.ndarray) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise FrameCacheError("JPEG encoding failed")
    return buf.reshape(-1)


def _check(f, path: Path, **expected) -> None:
    if f.attrs.get("format") != FORMAT or "keys" not in f:
        raise FrameCacheError(f"{path} is not a frame cache (made by 'pipeline data cache-frames')")
    if int(f.attrs["version"]) != VERSION:
        raise FrameCacheError(f"{path} is frame-cache version {f.attrs['version']}; this version reads {VERSION}: "
                              "delete it and run 'pipeline data cache-frames' again")
    for key, want in expected.items():
        have = f.attrs[key]
        if (int(have) if key == "short_side" else str(have)) != want:
            raise FrameCacheError(f"{path} was made with {key} {have}, not {want}; use another --out")


class FrameCache:
    """Reads a cache; opened lazily in each process that reads (DataLoader workers)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FrameCacheError(f"frame cache not found: {self.path}")
        self._file = None
        self._index: dict[str, int] | None = None
        self._open()  # fail now, not in a worker, on a file that is not a cache...
        self.close()  # ...and hold no HDF5 handle when DataLoader workers fork

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._index = None, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_index": None}

    def _open(self):
        import h5py

        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise FrameCacheError(f"{self.path} is not an HDF5 file ({e})") from None
            _check(self._file, self.path)
            self._raw = self._file.attrs["encoding"] == "raw"
            keys = self._file["keys"][:]
            self._index = {(k.decode() if isinstance(k, bytes) else k): i for i, k in enumerate(keys)}
        return self._file

    @property
    def short_side(self) -> int:
        return int(self._open().attrs["short_side"])

    def __len__(self) -> int:
        self._open()
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        self._open()
        return key in self._index

    def read(self, path: str | Path, start: float, end: float | None, times, short_side: int | None = None) -> Frames | None:
        """The frames at ``times`` as ``read_frames(path, times, short_side)`` returns them, or None
        when the cache does not hold this clip."""
        f = self._open()
        i = self._index.get(cache_key(path, start, end))
        if i is None:
            return None
        g = f["clips"][str(i)]
        if _file_stamp(path) != {k: int(g.attrs[k]) for k in ("size_bytes", "mtime_ns")}:
            return None  # the video changed since it was cached: decode it
        frame_time = g["frame_time"][:]
        times = np.asarray(times, dtype=np.float64)
        eps = float(g.attrs["eps"])  # as read_frames: a request within half a tick of a frame reaches it
        pick = np.clip(np.searchsorted(frame_time, times + eps, side="right") - 1, 0, len(frame_time) - 1)
        last = frame_time[-1]
        valid = (times <= last + eps) | (times + eps < float(g.attrs["shown_until"]))
        unique, inverse = np.unique(pick, return_inverse=True)
        data = g["frames"]
        if self._raw:
            # one read per frame: h5py's list indexing took 26 ms for 8 frames, this 0.1 ms
            stored = np.stack([data[int(k)] for k in unique])
        else:
            stored = np.stack([_decode_jpeg(data[int(k)]) for k in unique])
        frames = _resize(stored, _output_size(*(int(v) for v in g.attrs["size"]), short_side))[inverse]
        return Frames(frames, frame_time[pick], times, valid)


def _decode_jpeg(buf: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """To ``size`` = (width, height), the size read_frames gives from the video's own."""
    import cv2

    h, w = frames.shape[1:3]
    if (w, h) == tuple(size):
        return np.ascontiguousarray(frames)
    interp = cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR
    return np.stack([cv2.resize(fr, size, interpolation=interp) for fr in frames])
