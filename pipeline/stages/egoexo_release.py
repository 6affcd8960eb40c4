"""``pipeline signals import-egoexo`` / ``export-egoexo``: the Ego-Exo release's precomputed
teacher outputs to and from a signals store.

What the release holds, as facebookresearch/Ego-Exo reads it (``slowfast/datasets/kinetics_aux.py``):

- ``k400_ego_predicts.pkl`` and ``k400_IN_predicts.pkl`` (``KD.TRAIN_TEACHER_PATH_LIST`` of
  ``configs/ego-exo/k400/*.yaml``): each a pickled dict read by ``get_predicts`` with plain
  ``pickle.load``; ``Kineticshandobjkd._construct_loader`` looks each clip up as
  ``teacher_preds[path]``, ``path`` being the first field of the train list line
  (``path label``, before ``DATA.PATH_PREFIX`` is joined on), extension included. The values
  are one vector per video, 2-way (exo, ego) and 1000-way (ImageNet) (``KD.NUM_CLASSES_LIST:
  [2, 1000]``), used as logits: ``loss_fn_kd`` (``slowfast/models/losses.py``) takes
  ``KLDivLoss(log_softmax(student / T), softmax(teacher / T)) * alpha * T^2`` with T = 1,
  alpha 0.1 (ego) and 0.5 (object). Our store keeps logits and our loss applies the same
  softmax, so a vector is stored as it is.
- ``k400_handobj_predicts/<video>.npy`` (``HANDOBJ.DETS_FOLDER``): ``_load`` reads
  ``np.load(f"{folder}/{videoname}.npy", allow_pickle=True)``, ``videoname`` being the video
  file's name without its extension; entry ``i`` is ``(obj_dets, hand_dets)`` of the
  video's native frame ``i`` (``parse_handobj`` indexes it with the decoder's frame indices),
  each ``None`` or a float array ``[M, 10]`` as 100DOH's ``demo.py`` builds it (ddshan/
  hand_object_detector): ``x1, y1, x2, y2`` (pixels of the frame), score, contact state
  (argmax of 5: no contact, self, other person, portable, stationary), offset magnitude,
  offset dx, dy, hand side (0 left, 1 right). The loader keeps columns 0-5; the map targets
  (``gen_targets``) use box and score only.

A store made here has one teacher frame per ``frame_rate`` step of the clip, as
``extract-teachers`` samples it; each takes the native frame on screen at that time
(``floor(t * native_fps + 1e-6)``, the release's decoder counting frames from 0 at the
video's own rate) and that frame's detections. The video-level ego vector fills one ego
window that spans the clip; the object vector fills every teacher frame.
"""
from __future__ import annotations

import math
import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

EGO_FILE, OBJECT_FILE, HANDOBJ_DIR = "k400_ego_predicts.pkl", "k400_IN_predicts.pkl", "k400_handobj_predicts"
SOURCE = "imported from the Ego-Exo release"
NOT_IN_RELEASE = "not in the release files"  # the store's error text, followed by what lacks the clip
DET_COLUMNS = 10  # 100DOH demo.py: box (4), score, contact, offset magnitude, dx, dy, hand side
EGO_CLASSES = ("exo", "ego")  # index 1 is ego, as loss_fn_kd's "ego" mode weighs by softmax(...)[:, 1]


class ReleaseFormatError(PipelineError):
    """A release file that does not have the layout the Ego-Exo code reads."""


# ---------------------------------------------------------------- reading the release's files


def _unpickle(source, path: Path) -> Any:
    """The restricted unpickler on ``source`` (a path, or a file positioned at a pickle); errors name ``path``."""
    from pipeline.io.safe_pickle import UnsafePickleError, load_restricted

    try:
        return load_restricted(source)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}; nothing from it was run") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ReleaseFormatError(f"{path} does not hold a readable pickle ({type(e).__name__}: {e})") from None


def load_release_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """``{train-list path: float32 vector}`` from a release ``.pkl``, through the restricted unpickler."""
    p = Path(path)
    if not p.is_file():
        raise PipelineError(f"release file not found: {p}")
    data = _unpickle(p, p)
    if not isinstance(data, dict):
        raise ReleaseFormatError(f"{p} holds a {type(data).__name__}; the release's predictions are a dict "
                                 "{train-list path: vector}")
    out, width = {}, None
    for key, value in data.items():
        vec = np.asarray(value, dtype=np.float32).reshape(-1) if _numeric(value) else None
        if not isinstance(key, str) or vec is None or vec.size == 0:
            raise ReleaseFormatError(f"{p}: entry {key!r} is not a train-list path with a numeric vector")
        if width is not None and vec.size != width:
            raise ReleaseFormatError(f"{p}: entry {key!r} has {vec.size} values, earlier entries {width}")
        width = vec.size
        out[key] = vec
    return out


def _numeric(value: Any) -> bool:
    try:
        return np.asarray(value).dtype.kind in "fiub"
    except (ValueError, TypeError):
        return False


def load_release_npy(path: str | Path) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
    """One ``(obj_dets, hand_dets)`` per native frame from a release ``.npy``; each ``None`` or
    float32 ``[M, >=6]``. Object arrays are unpickled by the restricted unpickler."""
    p = Path(path)
    fmt = np.lib.format
    with open(p, "rb") as f:
        try:
            version = fmt.read_magic(f)
            header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if header is None:
                raise ValueError(f"npy format version {version}")
            _, _, dtype = header(f)
        except ValueError as e:
            raise ReleaseFormatError(f"{p} is not a readable .npy file ({e})") from None
        if dtype.hasobject:  # numpy pickles the whole array after the header
            data = _unpickle(f, p)
        else:
            f.seek(0)
            data = fmt.read_array(f, allow_pickle=False)
    if not isinstance(data, np.ndarray) or data.ndim not in (1, 2) or (data.ndim == 2 and data.shape[1] != 2):
        raise ReleaseFormatError(f"{p}: expected one (obj_dets, hand_dets) pair per frame, found "
                                 f"{type(data).__name__} of shape {getattr(data, 'shape', '?')}")
    frames = []
    for i, entry in enumerate(data):
        if len(entry) != 2:
            raise ReleaseFormatError(f"{p}: frame {i} is not an (obj_dets, hand_dets) pair")
        frames.append(tuple(_detections(d, p, i) for d in entry))
    return frames


def _detections(d: Any, path: Path, frame: int) -> np.ndarray | None:
    if d is None:
        return None
    a = np.asarray(d)
    if a.dtype.kind not in "fiu" or a.ndim != 2 or a.shape[1] < 6:
        raise ReleaseFormatError(f"{path}: frame {frame} holds {a.dtype} {a.shape}; 100DOH detections are "
                                 f"float [M, {DET_COLUMNS}] (box, score, contact, offset, side) or None")
    return a.astype(np.float32)


def video_stem(path: str) -> str:
    """The release's name of a video: its file name without the extension (``_load``)."""
    name = PurePosixPath(path.replace("\\", "/")).name
    return name[: name.rfind(".")] if "." in name else name


def match_keys(table, keys, source: str) -> list[str | None]:
    """The release key of each manifest row: its path as written (a PySlowFast train list gives
    the release's keys exactly), else the one key naming the same video file (same stem)."""
    keys = set(keys)
    by_stem: dict[str, list[str]] = {}
    for k in keys:
        by_stem.setdefault(video_stem(k), []).append(k)
    found = []
    for clip in table:
        if clip.path in keys:
            found.append(clip.path)
            continue
        same = by_stem.get(video_stem(clip.path), [])
        if len(same) > 1:
            raise ReleaseFormatError(f"{source}: keys {sorted(same)[:3]} all name video {video_stem(clip.path)!r} "
                                     f"(manifest row {clip.clip_id}); use a manifest whose paths are the keys")
        found.append(same[0] if same else None)
    return found


# ---------------------------------------------------------------- frames and boxes


def teacher_frames(start: float, end: float, frame_rate: float, native_fps: float, num_native: int | None,
                   num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(frame_time [F] float32, native index [F] int64)`` of a clip's teacher frames.

    Teacher frame k is asked for at ``start + k / frame_rate`` (``extract-teachers``'
    ``sample_times``) and is the native frame on screen then, ``floor(t * native_fps + 1e-6)``;
    its time is that frame's, ``index / native_fps``. Past the clip's ``num_frames`` or the
    video's ``num_native`` frames: time NaN, index -1.
    """
    from pipeline.io.video import sample_times

    times = sample_times(start, end, frame_rate)[:num_frames]
    index = np.full(num_frames, -1, np.int64)
    index[: len(times)] = np.floor(times * native_fps + 1e-6).astype(np.int64)
    if num_native is not None:
        index[index >= num_native] = -1
    frame_time = np.where(index >= 0, index / native_fps, np.nan).astype(np.float32)
    return frame_time, index


def store_boxes(obj_dets: np.ndarray | None, hand_dets: np.ndarray | None, width: int, height: int,
                max_boxes: int) -> tuple[np.ndarray, int]:
    """One frame's release detections -> the store's rows ``[max_boxes, 7]`` float32
    (x1, y1, x2, y2 normalised 0-1 of the frame, score, kind 0 hand / 1 object, contact state;
    objects get contact 0), best score first, zero-padded; also how many were dropped."""
    from pipeline.io.signals_schema import HAND, OBJECT

    parts = []
    for dets, kind in ((hand_dets, HAND), (obj_dets, OBJECT)):
        if dets is None or len(dets) == 0:
            continue
        rows = np.zeros((len(dets), 7), np.float32)
        rows[:, :4] = dets[:, :4] / np.array([width, height, width, height], np.float32)
        rows[:, 4], rows[:, 5] = dets[:, 4], kind
        rows[:, 6] = dets[:, 5] if kind == HAND else 0
        parts.append(rows)
    out = np.zeros((max_boxes, 7), np.float32)
    if not parts:
        return out, 0
    rows = np.concatenate(parts)
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    k = min(max_boxes, len(rows))
    out[:k] = rows[:k]
    return out, len(rows) - k


def _box_problem(rows: np.ndarray) -> str | None:
    real = rows[:, 4] > 0
    xy = rows[real, :4]
    # 100DOH clips boxes to the image; more than a pixel or so outside means another frame size.
    if np.any(xy < -0.01) or np.any(xy > 1.01):
        return "detections lie outside the video's frame (made at another resolution?)"
    if np.any(xy[:, 2] < xy[:, 0]) or np.any(xy[:, 3] < xy[:, 1]):
        return "detections with x2 < x1 or y2 < y1"
    contact = rows[real, 6]
    if np.any((contact != np.round(contact)) | (contact < 0) | (contact > 4)):
        return "contact state outside 0-4"
    return None


# ---------------------------------------------------------------- per-video facts


@dataclass(frozen=True)
class VideoFacts:
    """What the release's frame indices and pixel boxes need of a video."""

    fps: float
    width: int
    height: int
    duration: float | None = None
    num_frames: int | None = None


def parse_frame_size(text: str | None) -> tuple[int, int] | None:
    """``"320x240"`` -> (320, 240)."""
    if text is None:
        return None
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise PipelineError(f"--frame-size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 320x240")
    return int(w), int(h)


def video_facts(table, video_root: str | None, native_fps: float | None,
                frame_size: tuple[int, int] | None) -> list[VideoFacts | str]:
    """Each row's :class:`VideoFacts`, or why there are none (the row's error). With a video
    root, read from each video; otherwise the same ``native_fps`` and ``frame_size`` for all."""
    if video_root is None:
        if native_fps is None or frame_size is None:
            raise PipelineError("give --video-root (each video's frame rate and size are read from it) or "
                                "--native-fps and --frame-size (the same for every video)")
        if native_fps <= 0:
            raise PipelineError("--native-fps must be > 0")
        return [VideoFacts(float(native_fps), *frame_size)] * len(table)
    from data_manifests.formats import clip_frame_rate, resolve_videos
    from pipeline.io.video import VideoReadError, probe
    from pipeline.stages.common import progress
    from pipeline.stages.extract import MISSING

    if not Path(video_root).is_dir():
        raise PipelineError(f"video root not found: {video_root}")
    out: list[VideoFacts | str] = []
    for clip, path in progress(zip(table, resolve_videos(table, list(table), video_root)), total=len(table),
                               desc="probe videos", unit="video"):
        if path is None:
            out.append(MISSING)
            continue
        try:
            info = probe(path, frame_rate=clip_frame_rate(table, clip, path))
        except VideoReadError as e:
            out.append(e.reason)
            continue
        out.append(VideoFacts(float(info.fps), info.width, info.height, info.duration, info.num_frames))
    return out


# ---------------------------------------------------------------- import


@dataclass
class ImportResult:
    store: Path
    rows: int
    ok: int
    failed: int
    failure_reasons: dict[str, int]
    boxes_dropped: int  # detections beyond max_boxes per frame (lowest scores)


def import_egoexo(
    manifest: str,
    out: str,
    *,
    ego_file: str | None = None,
    object_file: str | None = None,
    handobj_dir: str | None = None,
    video_root: str | None = None,
    native_fps: float | None = None,
    frame_size: tuple[int, int] | None = None,
    manifest_format: str = "auto",
    classes: str | None = None,
    frame_rate: float = 4.0,
    max_frames: int = 40,
    max_boxes: int = 8,
    shard_rows: int = 32,
) -> ImportResult:
    """Write a signals store for ``manifest`` from the release's files (any of the three:
    ``ego_file`` k400_ego_predicts.pkl, ``object_file`` k400_IN_predicts.pkl, ``handobj_dir`` the
    folder of per-video .npy). Rows the release lacks are marked failed with the reason, as
    extraction marks them."""
    from data_manifests.table import file_sha256
    from pipeline.io.store import FAILED, OK, create_store
    from pipeline.stages.common import load_table, progress
    from pipeline.stages.extract import NON_FINITE, _frames_per_clip

    files = {"ego": ego_file, "object": object_file}
    handobj = handobj_dir
    if not (ego_file or object_file or handobj):
        raise PipelineError("nothing to import: give at least one of --ego, --object, --handobj")
    if handobj and not Path(handobj).is_dir():
        raise PipelineError(f"--handobj folder not found: {handobj}")
    if frame_rate <= 0 or max_frames < 1 or max_boxes < 1:
        raise PipelineError("--frame-rate must be > 0, --max-frames and --max-boxes at least 1")
    if Path(out).exists():
        raise PipelineError(f"{out} already exists; refusing to overwrite it (choose another --out)")
    table = load_table(manifest, manifest_format, classes)
    if len(table) == 0:
        raise PipelineError(f"manifest {manifest} has no rows")
    vectors = {kind: load_release_pickle(p) for kind, p in files.items() if p}
    if "ego" in vectors and any(v.size != 2 for v in vectors["ego"].values()):
        raise ReleaseFormatError(f"{ego_file}: ego vectors must have 2 values (exo, ego logits)")
    keys = {kind: match_keys(table, v, files[kind]) for kind, v in vectors.items()}
    facts = video_facts(table, video_root, native_fps, frame_size)
    F = _frames_per_clip(table, frame_rate, max_frames)
    num_classes = next(iter(vectors["object"].values())).size if vectors.get("object") else 0

    sources: dict[str, Any] = {}
    teachers: dict[str, Any] = {}
    outputs: dict[str, tuple[tuple[int, ...], str]] = {}
    spec = {"frame_rate": frame_rate, "size": 0, "mean": [0.0] * 3, "std": [1.0] * 3, "num_frames": None}
    for kind, v in vectors.items():
        sources[kind] = {"path": str(Path(files[kind]).resolve()), "sha256": file_sha256(files[kind]), "entries": len(v)}
    if "ego" in vectors:
        # one window spans the clip: the release has one vector per video
        teachers["ego"] = {"name": "ego", "arch": "egoexo-release", "classes": list(EGO_CLASSES),
                           "spec": {**spec, "num_frames": F}, "source": sources["ego"]["path"],
                           "weights_sha256": sources["ego"]["sha256"], "imported": SOURCE}
        outputs["ego/logits"] = ((1, 2), "float16")
    if "object" in vectors:
        teachers["object"] = {"name": "object", "arch": "egoexo-release (ImageNet ResNet-152 per the paper)",
                              "classes": _object_classes(num_classes), "spec": spec, "source": sources["object"]["path"],
                              "weights_sha256": sources["object"]["sha256"], "imported": SOURCE}
        outputs["object/logits"] = ((F, num_classes), "float16")
    if handobj:
        from pipeline.io.signals_schema import CONTACT_STATES, HANDOBJ_KINDS

        sources["handobj"] = {"path": str(Path(handobj).resolve())}
        teachers["handobj"] = {"name": "handobj", "arch": "100DOH (Shan et al. 2020), per native frame",
                               "classes": list(HANDOBJ_KINDS), "contact_states": list(CONTACT_STATES),
                               "max_boxes": max_boxes, "spec": spec, "source": sources["handobj"]["path"],
                               "imported": SOURCE}
        outputs["handobj/boxes"] = ((F, max_boxes, 7), "float16")
    provenance = {
        "manifest": {"path": str(Path(manifest).resolve()), "sha256": table.source_sha256, "rows": table.fingerprint,
                     "format": table.format},
        "manifest_rows": table.fingerprint,
        "classes": table.classes,
        "frame_rate": frame_rate,
        "num_frames": F,
        "teachers": teachers,
        "video_root": str(Path(video_root).resolve()) if video_root else None,
        "imported": {"from": SOURCE, "files": sources, "native_fps": native_fps,
                     "frame_size": list(frame_size) if frame_size else None},
    }
    store = create_store(out, [c.clip_id for c in table], F, outputs, provenance, shard_rows=shard_rows)

    dropped = 0
    with progress(total=len(table), desc="import-egoexo", unit="clip") as bar:
        for a, b in store.shards():
            arrays = {"frame_time": np.full((b - a, F), np.nan, np.float32)}
            arrays.update({name: np.zeros((b - a, *tail), np.float32) for name, (tail, _) in outputs.items()})
            status, errors = np.full(b - a, FAILED, np.uint8), [""] * (b - a)
            for j, i in enumerate(range(a, b)):
                clip = table[i]
                lacking = [Path(files[kind]).name for kind in vectors if keys[kind][i] is None]
                npy = Path(handobj) / f"{video_stem(clip.path)}.npy" if handobj else None
                if npy is not None and not npy.is_file():
                    lacking.append(f"{Path(handobj).name}/{npy.name}")
                if lacking:
                    errors[j] = f"{NOT_IN_RELEASE}: {', '.join(lacking)}"
                    continue
                if isinstance(facts[i], str):
                    errors[j] = facts[i]
                    continue
                video: VideoFacts = facts[i]
                try:  # one damaged or refused file fails its row, not the import of 240k videos
                    dets = load_release_npy(npy) if npy is not None else None
                except PipelineError as e:
                    errors[j] = str(e).splitlines()[0][:500]
                    continue
                num_native = len(dets) if dets is not None else video.num_frames
                end = clip.end if clip.end is not None else (
                    num_native / video.fps if num_native else video.duration)
                if end is None:
                    errors[j] = "clip length unknown (no end in the manifest, no detections file, no video duration)"
                    continue
                ft, index = teacher_frames(clip.start, end, frame_rate, video.fps, num_native, F)
                valid = index >= 0
                if not valid.any():
                    errors[j] = "the clip starts after the video's last frame"
                    continue
                arrays["frame_time"][j] = ft
                if "ego" in vectors:
                    arrays["ego/logits"][j, 0] = vectors["ego"][keys["ego"][i]]
                if "object" in vectors:
                    arrays["object/logits"][j, valid] = vectors["object"][keys["object"][i]]
                problem = None
                if dets is not None:
                    for k in np.flatnonzero(valid):
                        rows, n = store_boxes(*dets[index[k]], video.width, video.height, max_boxes)
                        arrays["handobj/boxes"][j, k], dropped = rows, dropped + n
                    problem = _box_problem(arrays["handobj/boxes"][j].reshape(-1, 7))
                for name in outputs:
                    with np.errstate(over="ignore"):  # beyond float16 (65504) becomes inf, caught here
                        finite = np.isfinite(arrays[name][j].astype(np.float16)).all()
                    if problem is None and not finite:
                        problem = f"{NON_FINITE} ({name})"
                if problem:
                    errors[j] = problem
                    arrays["frame_time"][j] = np.nan
                    for name in outputs:
                        arrays[name][j] = 0
                    continue
                status[j] = OK
            with np.errstate(over="ignore"):
                cast = {n: v.astype(outputs[n][1]) if n in outputs else v for n, v in arrays.items()}
            store.write_shard(a, b, cast, status, errors)
            bar.update(b - a)
    st = store.status()
    reasons = Counter(e for e, s in zip(store.errors(), st) if s == FAILED)
    result = ImportResult(Path(out), len(st), int((st == OK).sum()), int((st == FAILED).sum()), dict(reasons), dropped)
    if result.ok == 0:
        example = next(iter(next(iter(vectors.values())))) if vectors else None
        raise PipelineError(
            f"none of the {result.rows} manifest rows could be imported ({'; '.join(reasons)}); "
            + (f"the release's keys look like {example!r}, the manifest's paths like {table[0].path!r}. " if example else "")
            + f"The store {out} records why per row; delete it before rerunning."
        )
    return result


def _object_classes(num_classes: int) -> list[str]:
    if num_classes == 1000:
        from teachers.objects import imagenet_classes

        return imagenet_classes()
    return [f"class_{i}" for i in range(num_classes)]


# ---------------------------------------------------------------- export


def export_egoexo(store_path: str, manifest: str, out: str, *, video_root: str | None = None,
                  native_fps: float | None = None, frame_size: tuple[int, int] | None = None,
                  manifest_format: str = "auto", classes: str | None = None) -> dict[str, Any]:
    """Write the release's layout from a store's completed rows: ``out/k400_ego_predicts.pkl``,
    ``out/k400_IN_predicts.pkl`` (keys: the manifest's paths as written) and
    ``out/k400_handobj_predicts/<video>.npy``.

    Per video the ego vector is the mean ego logits of the windows holding a frame, the object
    vector the mean object logits of its frames. Each native frame of the clip gets the
    detections of the store's nearest teacher frame (ties earlier), in pixels; columns the
    store does not keep (offset, hand side) are NaN.
    """
    from pipeline.inspect import ego_frames_per_window
    from pipeline.io.store import OK, open_store
    from pipeline.stages.common import load_table
    from student.dataset import window_times
    from pipeline.io.signals_schema import HAND
    from student.targets import nearest_frames

    store = open_store(store_path)
    table = load_table(manifest, manifest_format, classes)
    if [c.clip_id for c in table] != store.clip_ids().tolist():
        raise PipelineError(f"signals store {store_path} was not written for manifest {manifest} (clip ids differ)")
    outdir = Path(out)
    if outdir.exists() and any(outdir.iterdir()):
        raise PipelineError(f"{out} is not empty; choose an empty or new folder")
    names = store.output_names
    ok = np.flatnonzero(store.status() == OK)
    # The release holds one vector per train-list path and one .npy per video file.
    shared = [n for n, c in Counter(video_stem(table[int(i)].path) for i in ok).items() if c > 1]
    if shared:
        raise PipelineError(f"several completed rows of {manifest} are clips of one video ({shared[:3]}); the "
                            "release's layout holds one entry per video, so only a one-clip-per-video manifest exports")
    facts = video_facts(table, video_root, native_fps, frame_size) if "handobj/boxes" in names else None
    read = store.row_reader()
    ego, obj, written, skipped = {}, {}, 0, []
    det_dir = outdir / HANDOBJ_DIR
    per_window = ego_frames_per_window(store.attrs) or store.num_frames
    for i in ok:
        clip, sig = table[int(i)], read(int(i))
        ft = sig["frame_time"]
        valid = np.isfinite(ft)
        if "ego/logits" in sig:
            wt = window_times(ft, per_window)[: len(sig["ego/logits"])]
            ego[clip.path] = sig["ego/logits"][np.isfinite(wt)].mean(axis=0).astype(np.float32)
        if "object/logits" in sig:
            obj[clip.path] = sig["object/logits"][valid].mean(axis=0).astype(np.float32)
        if facts is not None:
            if isinstance(facts[i], str):
                skipped.append(f"{clip.clip_id}: {facts[i]}")
                continue
            video: VideoFacts = facts[i]
            end = clip.end if clip.end is not None else (video.duration if video.duration else
                                                         float(np.nanmax(ft)) + 1.0 / store.attrs["frame_rate"])
            count = video.num_frames or int(math.ceil(end * video.fps - 1e-6))
            native = np.arange(count)
            inside = native / video.fps >= clip.start - 1e-6
            source = np.full(count, -1)
            source[inside] = nearest_frames(ft, native[inside] / video.fps)
            scale = np.array([video.width, video.height, video.width, video.height], np.float32)
            entries = np.empty((count, 2), dtype=object)
            entries[:] = None
            for n in np.flatnonzero(source >= 0):
                rows = sig["handobj/boxes"][source[n]]
                rows = rows[rows[:, 4] > 0]
                for col, is_hand in ((0, False), (1, True)):
                    mine = rows[(rows[:, 5] == HAND) == is_hand]
                    if len(mine):
                        d = np.full((len(mine), DET_COLUMNS), np.nan, np.float32)
                        d[:, :4], d[:, 4], d[:, 5] = mine[:, :4] * scale, mine[:, 4], mine[:, 6]
                        entries[n, col] = d
            det_dir.mkdir(parents=True, exist_ok=True)
            np.save(det_dir / f"{video_stem(clip.path)}.npy", entries, allow_pickle=True)
            written += 1
    outdir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, vectors in ((EGO_FILE, ego), (OBJECT_FILE, obj)):
        if vectors:
            with open(outdir / name, "wb") as f:
                pickle.dump(vectors, f, protocol=4)
            files[name] = len(vectors)
    return {"out": str(outdir), "rows_exported": int(len(ok)), "files": files, "npy_written": written,
            "skipped": skipped, "not_exported": int(store.num_rows - len(ok))}
