"""Pieces every stage shares: the output folder, the manifest and its rows, the device, progress bars,
building a student from its checkpoint's model args and reading checkpoints safely."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pipeline.config import dump_config, to_dict
from pipeline.errors import PipelineError


def prepare_out_dir(out: str | Path, cfg: Any, stage: str) -> Path:
    """Create ``out`` and write ``config.yaml`` there; refuse a folder that holds another config's outputs.

    Stage outputs are written once: rerunning with the same resolved config resumes
    or repeats in place; a different config must go to a different folder.
    """
    import yaml

    d = Path(out)
    cfg_path = d / f"{stage}.config.yaml"
    if cfg_path.exists():
        old = yaml.safe_load(cfg_path.read_text())
        new = to_dict(cfg)
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


def load_table(manifest: str, manifest_format: str = "auto", classes: list[str] | None = None):
    from data_manifests.formats import load_manifest
    from data_manifests.table import ManifestError

    try:
        return load_manifest(manifest, manifest_format, classes)
    except ManifestError as e:
        raise PipelineError(str(e)) from None


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
