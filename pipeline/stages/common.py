"""Pieces every stage shares: the output folder, the manifest and its rows, the device, progress bars,
building a student from its checkpoint's model args and reading checkpoints safely."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pipeline.config import dump_config, to_dict
from pipeline.errors import ConfigError, PipelineError


def prepare_out_dir(out: str | Path, cfg: Any, stage: str) -> Path:
    """Create ``out`` and write ``config.yaml`` there; refuse a folder that holds another config's outputs.

    Stage outputs are written once: rerunning with the same resolved config resumes
    or repeats in place; a different config must go to a different folder.
    """
    import yaml

    d = Path(out)
    if d.exists() and not d.is_dir():
        raise PipelineError(f"output folder {d} is a file; choose another --out")
    cfg_path = d / f"{stage}.config.yaml"
    if cfg_path.exists():
        old = yaml.safe_load(cfg_path.read_text())
        new = to_dict(cfg)
        old.pop("out", None), new.pop("out", None)  # a run folder moved elsewhere resumes
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise PipelineError(
                f"{d} already holds outputs of '{stage}' made with a different config "
                f"(differs in: {', '.join(changed)}); choose another --out or delete that folder"
            )
    d.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, cfg_path)
    return d


def require(cfg: Any, *keys: str) -> None:
    """Config validation: each key must be set (in the YAML or by its CLI flag)."""
    for key in keys:
        if not getattr(cfg, key):
            raise ValueError(f"'{key}' is required (set it in the config or with --{key.replace('_', '-')})")


def progress(iterable=None, **kwargs):
    """tqdm on stderr; quiet when PIPELINE_NO_PROGRESS is set (tests, logs)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", bool(os.environ.get("PIPELINE_NO_PROGRESS")))
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def load_table(manifest: str, manifest_format: str = "auto", classes: str | list[str] | None = None):
    """The manifest's clip table; ``classes`` is a class list file (or list) fixing the label ids,
    None for the dataset's shipped list. Bad input raises ``PipelineError``."""
    from data_manifests.classes import read_class_list
    from data_manifests.formats import load_manifest
    from data_manifests.table import ManifestError

    try:
        if isinstance(classes, (str, Path)):
            classes = read_class_list(classes)
        return load_manifest(manifest, manifest_format, classes)
    except ManifestError as e:
        raise PipelineError(str(e)) from None


def clip_refs(table, rows: list[int], video_root: str | Path):
    """The dataset's :class:`~student.dataset.ClipRef` of each row whose video is on disk, and
    the ids of the rows whose video is missing."""
    from data_manifests.formats import clip_frame_rate, resolve_videos
    from student.dataset import ClipRef

    clips, missing = [], []
    paths = resolve_videos(table, [table[i] for i in rows], video_root)
    for i, path in zip(rows, paths):
        c = table[i]
        if path is None:
            missing.append(c.clip_id)
            continue
        actions = c.extras.get("actions")
        clips.append(ClipRef(
            str(path), c.start, c.end, c.labels, i, clip_frame_rate(table, c, path),
            actions=None if actions is None else tuple((int(k), float(s), float(e)) for k, s, e in actions),
            noun=c.extras.get("noun_class") if table.noun_classes else None,
        ))
    return clips, missing


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"device '{device}' requested but no CUDA GPU is visible")
    return device


def check_manifest_format(name: str) -> None:
    """Config validation of ``manifest_format``."""
    from data_manifests.formats import FORMATS

    if name not in FORMATS:
        raise ValueError(f"'manifest_format' must be one of {list(FORMATS)}, got {name!r}")


def select_rows(table, split: str | None, view: str) -> list[int]:
    """Rows of ``table`` in ``split`` (None: all) and view (Charades-Ego ``ego``/``exo``; ``all``)."""
    rows = []
    for i, c in enumerate(table):
        if split is not None and c.split != split:
            continue
        if view != "all" and "ego" in c.extras and bool(c.extras["ego"]) != (view == "ego"):
            continue
        rows.append(i)
    return rows


def build_model(model_args: dict):
    """The student described by a checkpoint's ``model_args`` (backbone, heads, dropout)."""
    from student.checkpoints import build_student

    return build_student(model_args)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint file as a dict, read without running code.

    Ours, PySlowFast's and the Ego-Exo release's ``.pyth`` files hold tensors, numbers,
    strings and containers (``torch.load(weights_only=True)``); PySlowFast's Caffe2 ``.pkl``
    numpy arrays (a restricted unpickler). A file whose pickle asks for anything else (a
    class, a function such as ``os.system``) is refused with the name it asked for.
    """
    from student.checkpoints import read_checkpoint

    return read_checkpoint(path)


def resolve_sampling(data, backbone):
    """The dataset's :class:`~student.dataset.Sampling`: each of ``data``'s sampling keys that is
    set (a stage's ``DataConfig``; None for none), else the backbone's ``data_config``."""
    from student.dataset import Sampling

    spec = dict(getattr(backbone, "data_config", {}))
    pick = lambda key, spec_key: getattr(data, key, None) if getattr(data, key, None) is not None else spec.get(spec_key)
    values = dict(num_frames=pick("num_frames", "num_frames"), sampling_rate=pick("sampling_rate", "sampling_rate"),
                  target_fps=pick("target_fps", "target_fps"),
                  train_jitter_scales=pick("train_jitter_scales", "train_jitter_scales"),
                  crop=pick("crop", "crop_size"), test_short_side=pick("test_crop", "test_crop_size"),
                  spacing=pick("frame_spacing", "frame_spacing") or "linspace")
    unset = [k for k, v in values.items() if v is None]
    if unset:
        raise ConfigError(f"config: data.{unset[0]} must be set (backbone has no default for it)")
    if getattr(backbone, "slowfast", False) and values["num_frames"] % backbone.alpha:
        raise ConfigError(f"config key 'data.num_frames': SlowFast needs a multiple of alpha={backbone.alpha}, "
                          f"got {values['num_frames']}")
    return Sampling.from_config(**values, alpha=getattr(backbone, "alpha", 1))
