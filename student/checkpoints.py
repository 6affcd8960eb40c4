"""Student checkpoints in and out: ours, PySlowFast / Ego-Exo ``.pyth`` and PySlowFast's Caffe2 ``.pkl``.

Our parameter names are PySlowFast's with the backbone under ``backbone.``; each head has
one name of ours and, per head layout, the name the Ego-Exo release gives it
(:data:`HEAD_LAYOUTS`, :data:`MAP_HEAD_NAMES`). Caffe2 blob names are first turned into
PySlowFast's by :data:`CAFFE2_RULES`.

Reading is strict: a name that maps to nothing of ours, and any backbone tensor that is
missing, left over or of another shape, is an error naming it (BatchNorm's
``num_batches_tracked`` counters may be absent). Head tensors of another shape (a new label
space) are skipped and listed, which is how fine-tuning starts from a Kinetics checkpoint.
Files are read without running code: ``torch.load(weights_only=True)`` for ``.pyth`` /
``.pt``, :mod:`pipeline.io.safe_pickle` for ``.pkl``.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from data_manifests.table import file_sha256
from pipeline.errors import PipelineError
from pipeline.io import safe_pickle
from student.backbones import create_backbone, list_backbones
from student.heads import EgoExoStudent

_COUNTER = "num_batches_tracked"

# Our head module -> its name in the Ego-Exo release, per layout. The head module is
# "head<TASK>" in the release, so fine-tuning heads carry their dataset's name.
HEAD_LAYOUTS: dict[str, dict[str, str]] = {
    # PySlowFast ResNetBasicHead (Slow / SlowFast K400 baselines): the action classifier only.
    "baseline": {"head.projection": "head.projection"},
    # Ego-Exo K400 pre-training, MultiTaskHead: action 400 / ego 2 / object 1000.
    "multitask": {"head.projection": "head.projections.0", "ego_head": "head.projections.1",
                  "object_head": "head.projections.2"},
    "charades-ego": {"head.projection": "headcharades-ego.projection"},  # 157 classes
    "epic100": {"head.projection": "headepic100.projections.0", "noun_head": "headepic100.projections.1"},  # 97 / 300
    "epic55": {"head.projection": "headepic.projections.0", "noun_head": "headepic.projections.1"},  # 125 / 352
}
# The interaction-map head (HandObjHeadSingle on the slow pathway) has one name in every layout.
MAP_HEAD_NAMES = {"map_head.hidden": "handobjhead.pathway0_conv_fcn0", "map_head.score": "handobjhead.score_projection"}
_OUR_HEADS = ("head.projection", "noun_head", "ego_head", "object_head", *MAP_HEAD_NAMES)
_FROM_RELEASE = {theirs: ours for layout in (*HEAD_LAYOUTS.values(), MAP_HEAD_NAMES) for ours, theirs in layout.items()}
_PYSLOWFAST_BACKBONE = re.compile(r"^s\d+(_fuse)?\.")

# PySlowFast's Caffe2 blob names -> its PyTorch names, after slowfast/utils/c2_model_loading.py:
# the rules that concern Slow / SlowFast ResNets without non-local blocks, each applied in turn
# to the running name. Lateral convs hang off the Fast pathway's pool1 / last res block of a stage.
CAFFE2_RULES = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"^t_pool1_subsample_bn_(.*)", r"s1_fuse.bn.\1"),
    (r"^t_pool1_subsample_(.*)", r"s1_fuse.conv_f2s.\1"),
    (r"^t_res(\d+)_\d+_branch2c_bn_subsample_bn_(.*)", r"s\1_fuse.bn.\2"),
    (r"^t_res(\d+)_\d+_branch2c_bn_subsample_(.*)", r"s\1_fuse.conv_f2s.\2"),
    (r"^res(\d+)_(\d+)_branch(\d+)([a-z])_(.*)", r"s\1.pathway0_res\2.branch\3.\4_\5"),
    (r"^res_conv1_bn_(.*)", r"s1.pathway0_stem.bn.\1"),
    (r"^conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"^res(\d+)_(\d+)_branch(\d+)_(.*)", r"s\1.pathway0_res\2.branch\3_\4"),
    (r"^res_conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"^t_res(\d+)_(\d+)_branch(\d+)([a-z])_(.*)", r"s\1.pathway1_res\2.branch\3.\4_\5"),
    (r"^t_res_conv1_bn_(.*)", r"s1.pathway1_stem.bn.\1"),
    (r"^t_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    (r"^t_res(\d+)_(\d+)_branch(\d+)_(.*)", r"s\1.pathway1_res\2.branch\3_\4"),
    (r"^t_res_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    (r"^pred_(.*)", r"head.projection.\1"),
    # Suffixes last: BN scale, shift, running mean, running variance; then weight and bias.
    (r"bn[._]s$", "bn.weight"),
    (r"bn[._]b$", "bn.bias"),
    (r"bn[._]rm$", "bn.running_mean"),
    (r"bn[._]riv$", "bn.running_var"),
    (r"[._]w$", ".weight"),
    (r"[._]b$", ".bias"),
]]


def _is_solver_blob(name: str) -> bool:
    # Caffe2 checkpoints also hold the iteration, the learning rate and SGD momentum buffers.
    return name in ("model_iter", "lr") or name.endswith("_momentum")


class CheckpointError(PipelineError, ValueError):
    """A checkpoint that cannot be read, or whose tensors do not fit the student."""


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint file as a dict, read without running code.

    ``.pyth`` / ``.pt`` (ours, PySlowFast's, the Ego-Exo release's) go through
    ``torch.load(weights_only=True)``; Caffe2 ``.pkl`` through :func:`safe_pickle.load`.
    A file that asks for anything but tensors, arrays, numbers, strings and containers
    (a class, a function such as ``os.system``) is refused with the name it asked for.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        if p.suffix == ".pkl" and not zipfile.is_zipfile(p):
            ckpt = safe_pickle.load_restricted(p)
        else:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except safe_pickle.UnsafePickleError as e:
        raise CheckpointError(f"{p}: {e}") from None
    except pickle.UnpicklingError as e:  # torch's weights_only refusal names the global in its text
        raise CheckpointError(f"refusing to load {p}: {safe_pickle.torch_load_refusal(e)}; a checkpoint holds only "
                              "tensors, numbers, strings and containers") from None
    except Exception as e:  # a truncated or foreign file raises one of many unrelated types
        raise CheckpointError(f"cannot read checkpoint {p}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p} is not a checkpoint (a {type(ckpt).__name__}, not a dict of tensors)")
    return ckpt


def caffe2_to_pyslowfast_name(blob: str) -> str:
    """PySlowFast's name for a Caffe2 blob (``res2_0_branch2a_bn_s`` -> ``s2.pathway0_res0.branch2.a_bn.weight``)."""
    for pattern, replacement in CAFFE2_RULES:
        blob = pattern.sub(replacement, blob)
    return blob


def our_name(key: str) -> str | None:
    """Our parameter name for a name from ours, PySlowFast or the Ego-Exo release; None if none."""
    while key.startswith("module."):  # DistributedDataParallel
        key = key[len("module."):]
    if key.startswith("headobjhead."):  # legacy spelling the release's loader renames
        key = "handobjhead." + key[len("headobjhead."):]
    if key.startswith("backbone."):
        return key
    if _PYSLOWFAST_BACKBONE.match(key):
        return "backbone." + key
    module, _, param = key.rpartition(".")
    if param not in ("weight", "bias"):
        return None
    if module in _OUR_HEADS:
        return key
    if module in _FROM_RELEASE:
        return f"{_FROM_RELEASE[module]}.{param}"
    return None


@dataclass
class Weights:
    """A checkpoint's tensors by our names, where each came from, and the checkpoint's other entries."""

    tensors: dict[str, Tensor]
    source_names: dict[str, str]  # ours -> as named in the file
    format: str  # "ours", "pyslowfast" or "caffe2"
    extra: dict = field(default_factory=dict)  # epoch, cfg, model_args, classes, ...


def read_weights(ckpt: str | os.PathLike | Mapping) -> Weights:
    """The tensors of a checkpoint (path or dict) under our names.

    Takes ``{"model": ...}`` (ours), ``{"model_state": ...}`` (PySlowFast / Ego-Exo, with
    ``epoch``, ``optimizer_state``, ``cfg``), ``{"blobs": ...}`` (Caffe2) or a raw state dict.
    A name that maps to none of ours is an error naming it.
    """
    if isinstance(ckpt, (str, os.PathLike)):
        ckpt = read_checkpoint(ckpt)
    if isinstance(ckpt.get("blobs"), Mapping):
        fmt, container = "caffe2", "blobs"
        raw = [(caffe2_to_pyslowfast_name(k), k, _blob_tensor(k, v))
               for k, v in ckpt["blobs"].items() if not _is_solver_blob(k)]
    else:
        if isinstance(ckpt.get("model_state"), Mapping):
            fmt, container = "pyslowfast", "model_state"
        elif isinstance(ckpt.get("model"), Mapping):
            fmt, container = "ours", "model"
        else:  # a bare state dict
            fmt, container = ("ours" if any(str(k).startswith("backbone.") for k in ckpt) else "pyslowfast"), None
        state = ckpt[container] if container else ckpt
        if not state or not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError("no weights found: expected 'model_state', 'model', 'blobs' or a dict of tensors, "
                                  f"got keys {sorted(map(str, ckpt))[:8]}")
        raw = [(k, k, v) for k, v in state.items()]
    weights = Weights({}, {}, fmt, {k: v for k, v in ckpt.items() if k not in (container, "optimizer_state", "optimizer")})
    unknown = []
    for name, source, value in raw:
        ours = our_name(name)
        if ours is None:
            unknown.append(source)
        elif ours in weights.tensors:
            raise CheckpointError(f"{source} and {weights.source_names[ours]} both name our {ours}")
        else:
            weights.tensors[ours], weights.source_names[ours] = value, source
    if unknown:
        raise CheckpointError(f"{len(unknown)} {fmt} names map to no tensor of the student: {_shorten(unknown)}")
    return weights


def _blob_tensor(name: str, value: Any) -> Tensor:
    try:
        return torch.tensor(value)  # a copy: unpickled arrays may be read-only
    except (TypeError, ValueError, RuntimeError):
        raise CheckpointError(f"Caffe2 blob {name} is a {type(value).__name__}, not an array") from None


def _shorten(names: list[str], most: int = 6) -> str:
    return ", ".join(names[:most]) + (f" (+{len(names) - most} more)" if len(names) > most else "")


# ---------------------------------------------------------------------------
# Loading into a student
# ---------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What :func:`load_weights` did, by our parameter names."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # heads absent from the file (kept as initialised)
    mismatched: list[str] = field(default_factory=list)  # heads of another shape (a new label space), skipped
    unexpected: list[str] = field(default_factory=list)  # heads in the file that this student lacks

    def summary(self) -> str:
        return (f"matched {len(self.loaded)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                f"shape-mismatched {len(self.mismatched)}")


def load_weights(model: EgoExoStudent, ckpt: Weights | str | os.PathLike | Mapping) -> LoadReport:
    """Load a checkpoint (ours, PySlowFast / Ego-Exo ``.pyth``, Caffe2 ``.pkl``; a path, dict
    or :class:`Weights`) into ``model`` by name.

    Every backbone tensor must be there with the model's shape, and none may be left over
    (missing ``num_batches_tracked`` counters stay as they are); otherwise ``CheckpointError``
    names the offending tensors. Head tensors of another shape are skipped and listed.
    """
    weights = ckpt if isinstance(ckpt, Weights) else read_weights(ckpt)
    target = model.state_dict()
    report, to_load, bad = LoadReport(), {}, []
    for ours, value in weights.tensors.items():
        source = weights.source_names[ours]
        backbone = ours.startswith("backbone.")
        if ours not in target:
            if backbone:
                bad.append(f"{source} (not in the model)")
            else:
                report.unexpected.append(ours)
        elif target[ours].shape != value.shape:
            if backbone:
                bad.append(f"{source} (shape {tuple(value.shape)}, model {tuple(target[ours].shape)})")
            else:
                report.mismatched.append(ours)
        else:
            to_load[ours] = value
    absent = [k for k in target if k not in weights.tensors and not k.endswith(_COUNTER)]
    bad += [f"{k} (missing)" for k in absent if k.startswith("backbone.")]
    if bad:
        raise CheckpointError(f"checkpoint does not fit the backbone: {len(bad)} tensors: {_shorten(bad)}")
    model.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    report.missing = absent
    return report


@lru_cache(maxsize=None)
def _backbone_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        backbone = create_backbone(name)
    return {f"backbone.{k}": tuple(v.shape) for k, v in backbone.state_dict().items() if not k.endswith(_COUNTER)}


def infer_backbone(weights: Weights) -> str:
    """The registered backbone whose tensor names and shapes are exactly those of ``weights``;
    without one, the error names what differs from the closest."""
    have = {k: tuple(v.shape) for k, v in weights.tensors.items()
            if k.startswith("backbone.") and not k.endswith(_COUNTER)}
    matches = [name for name in list_backbones() if _backbone_shapes(name) == have]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CheckpointError(f"its backbone tensors match several registered backbones ({', '.join(matches)}); "
                              "name the architecture (--arch)")

    def differences(name: str) -> list[str]:
        want = _backbone_shapes(name)
        diff = [f"{weights.source_names.get(k, k)} (not in {name})" for k in have if k not in want]
        diff += [f"{k.removeprefix('backbone.')} (missing)" for k in want if k not in have]
        diff += [f"{weights.source_names.get(k, k)} (shape {have[k]}, {name} {want[k]})"
                 for k in have if k in want and want[k] != have[k]]
        return diff

    closest = min(list_backbones(), key=lambda name: len(differences(name)))
    diff = differences(closest)
    raise CheckpointError(f"its backbone tensors match none of the registered backbones; the closest, {closest}, "
                          f"differs in {len(diff)}: {_shorten(diff)}")


def _release_dropout(cfg: Any, default: float = 0.5) -> float:
    # PySlowFast saves cfg.dump(), a YAML string; MODEL.DROPOUT_RATE defaults to 0.5 there.
    import yaml

    try:
        return float(yaml.safe_load(cfg)["MODEL"]["DROPOUT_RATE"])
    except Exception:  # no cfg, not YAML, or no such key: the release default
        return default


def infer_model_args(weights: Weights, backbone: str) -> dict:
    """``model_args`` for :func:`build_student` read off the heads' tensor shapes.

    ``dropout`` comes from the checkpoint's PySlowFast config when it has one.
    """
    def rows(module: str) -> int:
        w = weights.tensors.get(f"{module}.weight")
        return 0 if w is None else int(w.shape[0])

    if not rows("head.projection"):
        raise CheckpointError("the checkpoint has no action head (head.projection or a release name for it)")
    maps = any(k.startswith("map_head.") for k in weights.tensors)
    return {"backbone": backbone, "num_actions": rows("head.projection"), "num_objects": rows("object_head"),
            "num_nouns": rows("noun_head"), "ego_head": rows("ego_head") > 0,
            "dropout": _release_dropout(weights.extra.get("cfg")),
            "interaction_maps": maps, "map_hidden_channels": rows("map_head.hidden") if maps else None}


def build_student(model_args: Mapping) -> EgoExoStudent:
    """The student described by a checkpoint's ``model_args`` (backbone, heads, dropout)."""
    return EgoExoStudent(
        create_backbone(model_args["backbone"]),
        num_actions=model_args["num_actions"],
        num_objects=model_args["num_objects"],
        dropout=model_args["dropout"],
        interaction_maps=model_args["interaction_maps"],
        map_hidden_channels=model_args.get("map_hidden_channels"),
        num_nouns=model_args.get("num_nouns", 0),
        ego_head=model_args.get("ego_head", True),
    )


def load_student(ckpt: str | os.PathLike | Mapping, arch: str | None = None) -> tuple[EgoExoStudent, dict]:
    """A ready student from any checkpoint we read (ours, PySlowFast / Ego-Exo ``.pyth``, Caffe2 ``.pkl``).

    Ours carries its ``model_args``; for the others they are read off the tensors, with the
    backbone ``arch`` or, without it, the registered backbone whose shapes match. Heads the
    file lacks (the ego head of a baseline) start from a fixed-seed initialisation.
    Returns ``(model, meta)``: meta holds ``model_args``, ``format``, ``report``
    (:class:`LoadReport`) and the checkpoint's other entries (ours: ``classes``,
    ``multilabel``, ``config``; PySlowFast: ``epoch``, ``cfg``).
    """
    weights = read_weights(ckpt)
    if arch is not None and arch not in list_backbones():
        raise CheckpointError(f"unknown backbone {arch!r}; known: {', '.join(list_backbones())}")
    if "model_args" in weights.extra:
        model_args = dict(weights.extra["model_args"])
        if arch is not None and arch != model_args["backbone"]:
            raise CheckpointError(f"the checkpoint holds a {model_args['backbone']} student, not {arch}")
    else:
        model_args = infer_model_args(weights, arch or infer_backbone(weights))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_student(model_args)
    report = load_weights(model, weights)
    return model, {**weights.extra, "model_args": model_args, "format": weights.format, "report": report}


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def auto_layout(keys) -> str:
    """The release layout that has a place for every head in ``keys`` (our names)."""
    modules = {k.rpartition(".")[0] for k in keys}
    if "noun_head" in modules:
        return "epic100"
    return "multitask" if modules & {"ego_head", "object_head"} else "baseline"


def pyslowfast_names(keys, layout: str) -> dict[str, str]:
    """Our key -> its PySlowFast / Ego-Exo name in ``layout``; keys the layout has no place for are left out."""
    if layout not in HEAD_LAYOUTS:
        raise CheckpointError(f"unknown head layout {layout!r}; known: {', '.join(HEAD_LAYOUTS)}")
    heads = {**HEAD_LAYOUTS[layout], **MAP_HEAD_NAMES}
    names = {}
    for key in keys:
        module, _, param = key.rpartition(".")
        if key.startswith("backbone."):
            names[key] = key[len("backbone."):]
        elif module in heads:
            names[key] = f"{heads[module]}.{param}"
    return names


def to_pyslowfast(model: nn.Module | Mapping[str, Tensor], layout: str = "auto", epoch: int = -1) -> dict:
    """Our weights as a PySlowFast / Ego-Exo checkpoint dict, ``{"model_state": ..., "epoch": ...}``.

    ``layout`` names the heads as one of :data:`HEAD_LAYOUTS`: ``baseline``
    (``head.projection``), ``multitask`` (``head.projections.0/1/2``), ``charades-ego``,
    ``epic100`` / ``epic55`` (``head<task>.projections.0/1``); ``auto`` picks the first of
    epic100, multitask, baseline that has a place for every head. The interaction-map head
    is ``handobjhead.*`` in all. ``epoch`` -1: PySlowFast resumes such a file at epoch 0.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    names = pyslowfast_names(state, auto_layout(state) if layout == "auto" else layout)
    return {"model_state": {theirs: state[ours] for ours, theirs in names.items()}, "epoch": epoch}


def convert_checkpoint(src: str | os.PathLike, out: str | os.PathLike, arch: str | None = None,
                       to: str = "ours", layout: str = "auto") -> dict:
    """Read ``src`` (ours, ``.pyth``, ``.pkl``), check it fits the student, and write ``out``.

    ``to="ours"``: ``{"model", "model_args", "source"}``, readable by
    ``pipeline.stages.common.load_checkpoint`` and ``build_model`` (heads the file lacks are
    written as initialised). ``to="pyslowfast"``: the file's tensors in PySlowFast / Ego-Exo
    names (:func:`to_pyslowfast`). Returns what was done: ``report``, ``model_args``,
    ``layout`` and ``left_out`` (tensors the layout has no place for).
    """
    from student.train import save_checkpoint

    if to not in ("ours", "pyslowfast"):
        raise CheckpointError(f"unknown output format {to!r}; known: ours, pyslowfast")
    src = Path(src)
    model, meta = load_student(src, arch)
    report: LoadReport = meta["report"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {"out": str(out), "report": report, "model_args": meta["model_args"], "layout": None, "left_out": []}
    if to == "ours":
        source = {"path": str(src), "format": meta["format"], "sha256": file_sha256(src)}
        save_checkpoint(out, {"model": model.state_dict(), "model_args": meta["model_args"], "source": source})
        return done
    # Only what the file held: heads it lacked would be exported as random weights.
    loaded = set(report.loaded)
    state = {k: v for k, v in model.state_dict().items() if k in loaded}
    done["layout"] = auto_layout(state) if layout == "auto" else layout
    exported = to_pyslowfast(state, done["layout"], epoch=int(meta.get("epoch", -1)))
    done["left_out"] = [k for k in state if k not in pyslowfast_names(state, done["layout"])]
    save_checkpoint(out, exported)
    return done
