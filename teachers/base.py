"""The interface every teacher answers, its weights file, and the registry of teacher kinds.

A teacher turns decoded frames of a batch of clips into one or more signal arrays:

    teacher = load_teacher("ego.pt")                  # no downloads: weights are a local file
    out = teacher.predict(frames, times)              # frames uint8 [B,F,H,W,3], times float32 [B,F]
    out["ego/logits"]                                 # float32 [B,W,2]

Frames arrive at the teacher's frame rate (``spec.frame_rate``) but at any size;
the teacher resizes them to ``spec.size`` and normalises them itself, so the
caller (the extraction stage) never needs to know a teacher's preprocessing.

Weights files (ours) are plain ``torch.save`` dicts::

    {"format": "egoexo-teacher/1", "kind": "ego", "arch": "videoresnet_tiny",
     "arch_kwargs": {...}, "state_dict": {...},
     "meta": {"classes": [...], "spec": {...}, "train": {...}, ...}}

Everything needed to rebuild the model and preprocess its input travels with
the weights (the timm idea), and ``meta`` is JSON-serialisable so the signals
store can copy it into its attributes.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import json
import os
import pickle
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError

WEIGHTS_FORMAT = "egoexo-teacher/1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TeacherWeightsError(PipelineError, ValueError):
    """A weights file that is missing, not a teacher file of ours, corrupt, or does not fit its architecture
    (a PipelineError: the CLI prints it as one line)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class InputSpec:
    """What a teacher consumes: frames per second, square side in pixels, normalisation (0-1 units)."""

    frame_rate: float
    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_frames: int | None = None  # frames per window, video teachers only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(
            frame_rate=float(d["frame_rate"]),
            size=int(d["size"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            num_frames=None if d.get("num_frames") is None else int(d["num_frames"]),
        )


# ---------------------------------------------------------------- the interface

def check_batch(frames: np.ndarray, times: np.ndarray) -> None:
    """Refuse a predict() batch whose frames and times do not describe the same clips."""
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [B,F,H,W,3] RGB, got {frames.dtype} {list(frames.shape)}")
    if times.shape != frames.shape[:2]:
        raise ValueError(f"times {list(times.shape)} do not match frames {list(frames.shape[:2])} (B, F)")


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def float32_outputs(out: Any) -> Any:
    """``out`` with every floating tensor (inside tuples, lists and dicts too) cast to float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: float32_outputs(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(float32_outputs(v) for v in out)
    return out



class Teacher(abc.ABC):
    """A loaded teacher: a model in eval mode on ``device`` plus the metadata it came with.

    Subclasses (one per module in ``teachers/``) implement ``predict`` and
    ``output_shapes`` and a ``build(arch, **arch_kwargs)`` static method that
    rebuilds the model from a weights file's description.
    """

    name: ClassVar[str]  # signal name; set by register_teacher

    def __init__(self, model: nn.Module, meta: dict[str, Any], device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.spec = InputSpec.from_dict(meta["spec"])
        self.classes: list[str] = list(meta["classes"])
        self.precision = "fp32"
        self._float32_hook = None

    def use_precision(self, precision: str) -> None:
        """Run later ``autocast()`` blocks in ``precision`` ("bf16", "fp16" or "fp32").

        Half precision applies on a GPU only; on the CPU the teacher stays in fp32. The
        model's outputs are cast back to float32, so ``predict`` hands numpy float32 on
        (numpy has no bfloat16).
        """
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {list(AUTOCAST_DTYPES)}, got {precision!r}")
        self.precision = precision if self.device.type == "cuda" else "fp32"
        if self.precision != "fp32" and self._float32_hook is None:
            self._float32_hook = self.model.register_forward_hook(lambda module, args, out: float32_outputs(out))

    def autocast(self):
        """Context for ``predict``: autocast in the chosen precision (a no-op in fp32)."""
        dtype = AUTOCAST_DTYPES[self.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    @staticmethod
    @abc.abstractmethod
    def build(arch: str, **arch_kwargs: Any) -> nn.Module:
        """Rebuild the (untrained) model a weights file describes."""

    @abc.abstractmethod
    def predict(self, frames: np.ndarray, times: np.ndarray, *, max_batch: int = 64) -> dict[str, np.ndarray]:
        """frames uint8 [B,F,H,W,3] RGB at ``spec.frame_rate``; times float32 [B,F], NaN = padding frame.

        Returns float32 arrays keyed by store array name; padding frames get zeros.
        ``max_batch`` bounds how many images/windows go through the model at once.
        """

    @abc.abstractmethod
    def output_shapes(self, num_frames: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-clip shape tail and store dtype of each output, for a clip of ``num_frames`` teacher frames."""

    @classmethod
    def claims_source(cls, source: str) -> bool:
        """Whether ``source`` (not a file) names weights this kind loads by name, e.g. ``resnet152:IMAGENET1K_V2``."""
        return False

    @classmethod
    def from_source(cls, source: str, device: str | torch.device = "cpu") -> "Teacher":
        """Load the teacher a claimed ``source`` names (see ``claims_source``)."""
        raise NotImplementedError(f"{cls.__qualname__} loads no named sources")

    @classmethod
    def describe(cls) -> dict[str, str]:
        """What ``pipeline teachers list`` prints: summary, architectures, input, weights. This default
        reads the teacher module's ``ARCHS`` (or ``DEFAULT_ARCH``) and ``DEFAULT_SPEC``."""
        module = sys.modules[cls.__module__]
        archs = list(getattr(module, "ARCHS", ())) or [getattr(module, "DEFAULT_ARCH", "?")]
        spec = getattr(module, "DEFAULT_SPEC", None)
        if spec is None:
            shown = "?"
        else:
            what = f"clips of {spec.num_frames} frames" if spec.num_frames else "single frames"
            shown = f"{what} at {spec.frame_rate:g} fps, squashed to {spec.size}x{spec.size} (demo default)"
        return {
            "summary": (cls.__doc__ or "").strip().splitlines()[0].replace("``", ""),
            "architectures": ", ".join(archs),
            "input": shown,
            "weights": f"{WEIGHTS_FORMAT} files (ours: 'pipeline run train-teachers', save_teacher)",
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(arch={self.meta.get('arch')!r}, spec={self.spec}, device={self.device})"


_TEACHERS: dict[str, type[Teacher]] = {}


def register_teacher(kind: str) -> Callable[[type[Teacher]], type[Teacher]]:
    """Class decorator: make ``load_teacher`` dispatch weights files of ``kind`` to this class."""

    def register(cls: type[Teacher]) -> type[Teacher]:
        if kind in _TEACHERS:
            raise ValueError(f"teacher kind {kind!r} is already registered by {_TEACHERS[kind].__qualname__}")
        cls.name = kind
        _TEACHERS[kind] = cls
        return cls

    return register


def list_teachers() -> list[str]:
    """Registered teacher kinds (= signal names)."""
    return sorted(_TEACHERS)


def teacher_class(kind: str) -> type[Teacher]:
    try:
        return _TEACHERS[kind]
    except KeyError:
        raise KeyError(f"unknown teacher kind {kind!r}; known: {list_teachers()}") from None


# ---------------------------------------------------------------- weights files


def save_teacher(
    path: str | os.PathLike,
    model: nn.Module,
    kind: str,
    arch: str,
    arch_kwargs: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write a teacher weights file atomically (temp file + rename), so a reader never sees half a file.

    ``meta`` must hold ``classes`` and ``spec`` (an InputSpec or its dict); it is
    stored as plain JSON-able values.
    """
    teacher_class(kind)  # fail before writing anything
    missing = {"classes", "spec"} - set(meta)
    if missing:
        raise ValueError(f"teacher meta lacks {sorted(missing)}")
    meta = dict(meta)
    if isinstance(meta["spec"], InputSpec):
        meta["spec"] = meta["spec"].to_dict()
    payload = {
        "format": WEIGHTS_FORMAT,
        "kind": kind,
        "arch": arch,
        "arch_kwargs": _plain(arch_kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": _plain(meta),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_weights(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """Read and check one of our teacher weights files; returns (payload, sha256 of the file)."""
    data = Path(path).read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        from pipeline.io.safe_pickle import torch_load_refusal

        raise TeacherWeightsError(path, f"refused: {torch_load_refusal(e)}") from None
    except Exception as e:  # torch raises several unrelated types for a bad archive
        raise TeacherWeightsError(path, f"not a readable torch file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise TeacherWeightsError(
            path,
            f"not an egoexo teacher file (format {found!r}, expected {WEIGHTS_FORMAT!r}); torchvision state "
            "dicts go through teachers.objects; 100DOH and detectron2 checkpoints through 'pipeline teachers convert'",
        )
    for key in ("kind", "arch", "arch_kwargs", "state_dict", "meta"):
        if key not in payload:
            raise TeacherWeightsError(path, f"teacher file lacks {key!r}")
    return payload, sha256


def source_kind(source: str | os.PathLike) -> str | None:
    """The teacher kind that loads ``source`` by name (e.g. "object" for ``resnet152:IMAGENET1K_V2``);
    None for an existing file or a name no kind claims."""
    if Path(source).is_file():
        return None
    return next((kind for kind, cls in _TEACHERS.items() if cls.claims_source(str(source))), None)


def load_teacher(path: str | os.PathLike, device: str | torch.device = "cpu") -> Teacher:
    """Load a teacher weights file, rebuilding its architecture from the file's own description, or
    a named source a teacher kind claims (``resnet152:IMAGENET1K_V2``: see ``pipeline teachers list``)."""
    kind = source_kind(path)
    if kind is not None:
        return _TEACHERS[kind].from_source(str(path), device)
    if not Path(path).is_file():
        raise TeacherWeightsError(path, "no such file (a teacher is a weights file of ours, or a named source such "
                                  "as resnet152:IMAGENET1K_V2; 'pipeline teachers list' shows them)")
    payload, sha256 = read_weights(path)
    kind, arch, arch_kwargs = payload["kind"], payload["arch"], payload["arch_kwargs"]
    if kind not in _TEACHERS:
        raise TeacherWeightsError(path, f"unknown teacher kind {kind!r}; known: {list_teachers()}")
    cls = _TEACHERS[kind]
    try:
        model = cls.build(arch, **arch_kwargs)
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise TeacherWeightsError(path, f"weights do not fit {kind}/{arch} {arch_kwargs}: {e}") from e
    meta = {
        **payload["meta"],
        "name": kind,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "weights_sha256": sha256,
        "source": str(Path(path).resolve()),
    }
    return cls(model, meta, device)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """JSON round trip: numpy scalars/arrays become Python values, so the dict loads with
    ``weights_only=True`` and can be written as store attributes."""

    def default(v: Any) -> Any:
        if isinstance(v, (np.generic, np.ndarray)):
            return v.tolist()
        if isinstance(v, Path):
            return str(v)
        raise TypeError(f"not JSON-serialisable in teacher metadata: {type(v).__name__}")

    return json.loads(json.dumps(value, default=default))
