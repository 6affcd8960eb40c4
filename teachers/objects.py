"""Object-Score teacher: a per-frame image classifier (paper: ImageNet-1k ResNet-152).

Two kinds of architecture:

* ``resnet_narrow`` -- torchvision's ``ResNet(BasicBlock, layers)`` with stage widths
  ``width * (1, 2, 4, 8)``, for the demo world at 64x64 (trainable on CPU in seconds);
  its frames are squashed to ``spec.size`` squares, as in its training;
* any torchvision classifier (``torchvision.models.list_models(module=torchvision.models)``:
  ``resnet152``, ``resnet50``, ``convnext_base``, ...), built with ``weights=None`` and given
  a LOCAL state dict through :func:`load_torchvision_classifier`, or by name as
  ``ARCH:WEIGHTS`` (``resnet152:IMAGENET1K_V2``, read from the torch hub cache) or
  ``ARCH:WEIGHTS@FILE``. Frames get exactly the preprocessing of torchvision's
  ``weights.transforms()``: short side resized to ``resize_size`` (aspect kept), centre
  crop ``crop_size``, the weights' interpolation, mean and std.

Training (the demo's ``resnet_narrow`` only) lives in :mod:`teachers.objects_train`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from teachers.base import InputSpec, Teacher, TeacherWeightsError, check_batch, file_sha256, register_teacher
from teachers.preprocess import resize_frames, run_batched, to_tensor

DEFAULT_ARCH = "resnet_narrow"
DEFAULT_SPEC = InputSpec(frame_rate=4.0, size=64)
# A per-frame classifier has no frame rate of its own; torchvision ones run at the demo teachers' rate.
TORCHVISION_FRAME_RATE = DEFAULT_SPEC.frame_rate
# torchvision weights by name: "resnet152:IMAGENET1K_V2" (torch hub cache) or "resnet152:IMAGENET1K_V2@FILE".
SOURCE = re.compile(r"(?P<arch>[a-z][a-z0-9_]*):(?P<weights>[A-Za-z0-9_]+)(?:@(?P<path>.+))?")


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's image classifiers: the architectures a torchvision object teacher can have."""
    return torchvision.models.list_models(module=torchvision.models)


def build(
    arch: str = DEFAULT_ARCH,
    *,
    num_classes: int,
    width: int = 32,
    layers: tuple[int, int, int, int] | list[int] = (1, 1, 1, 1),
    **torchvision_kwargs: Any,
) -> nn.Module:
    """An image classifier taking [N, 3, S, S]: ``resnet_narrow`` (``width``/``layers``) or any torchvision
    classifier by name, untrained (``torchvision_kwargs`` go to its builder, e.g. ``transform_input``)."""
    if arch in torchvision_classifiers():
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **torchvision_kwargs)
    if arch != DEFAULT_ARCH:
        raise ValueError(f"unknown object architecture {arch!r}; known: {DEFAULT_ARCH!r} or a torchvision "
                         f"classifier ({', '.join(torchvision_classifiers())})")
    # ResNet hard-codes 64..512 channels for BasicBlock; build it, then swap in a narrow
    # stem and stages made by its own _make_layer, so every block is still torchvision's.
    model = ResNet(BasicBlock, list(layers), num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.inplanes = width
    for i, blocks in enumerate(layers):
        setattr(model, f"layer{i + 1}", model._make_layer(BasicBlock, width * 2**i, blocks, stride=1 if i == 0 else 2))
    model.fc = nn.Linear(width * 8 * BasicBlock.expansion, num_classes)
    for m in model.modules():  # the init ResNet.__init__ gives its own layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def make_meta(classes: Sequence[str], spec: InputSpec = DEFAULT_SPEC, **extra: Any) -> dict[str, Any]:
    """Metadata for save_teacher: class names and input spec, plus e.g. train metrics and data source."""
    return {"classes": list(classes), "spec": spec.to_dict(), **extra}


@register_teacher("object")
class ObjectTeacher(Teacher):
    """Object-Score: class logits for every teacher frame; padding frames get all-zero logits."""

    build = staticmethod(build)

    def output_shapes(self, num_frames: int) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"object/logits": ((num_frames, len(self.classes)), "float16")}

    def predict(self, frames: np.ndarray, times: np.ndarray, *, max_batch: int = 64) -> dict[str, np.ndarray]:
        check_batch(frames, times)
        valid = np.isfinite(times)
        logits = np.zeros((*times.shape, len(self.classes)), np.float32)
        if valid.any():
            logits[valid] = np.concatenate(run_batched(self._logits, frames[valid], max_batch))
        return {"object/logits": logits}

    def _logits(self, frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            preprocess = self.meta.get("preprocess")
            if preprocess is None:  # the demo classifiers: squashed to a square, as in their training
                x = to_tensor(resize_frames(frames, self.spec.size), self.spec, self.device)
            else:
                x = classification_inputs(frames, preprocess, self.spec, self.device)
            return self.model(x).float().cpu().numpy()

    @classmethod
    def claims_source(cls, source: str) -> bool:
        match = SOURCE.fullmatch(source)
        return match is not None and match["arch"] in torchvision_classifiers()

    @classmethod
    def from_source(cls, source: str, device: str | torch.device = "cpu") -> "ObjectTeacher":
        """``ARCH:WEIGHTS`` (the file torchvision downloads, from the torch hub cache) or ``ARCH:WEIGHTS@FILE``."""
        match = SOURCE.fullmatch(source)
        weights = torchvision_weights(match["arch"], match["weights"])
        path = Path(match["path"]) if match["path"] else hub_cache_file(weights)
        if not path.is_file():
            where = ("the torch hub cache (torch.hub.get_dir()/checkpoints; TORCH_HOME moves it)" if not match["path"]
                     else "the file given after '@'")
            raise TeacherWeightsError(
                path, f"no such file: {source} reads torchvision's {weights} from {where}. Fetch {weights.url} "
                f"there (e.g. run torchvision.models.get_model({match['arch']!r}, weights={weights.name!r}) once "
                f"on a machine with internet and copy the file), or name any copy as "
                f"{match['arch']}:{weights.name}@/path/to/{Path(urlparse(weights.url).path).name}",
            )
        return load_torchvision_classifier(path, match["arch"], weights, device=device)

    @classmethod
    def describe(cls) -> dict[str, str]:
        names = torchvision_classifiers()
        examples = []
        for weights in torchvision.models.get_model_weights("resnet152"):
            settings, _ = preprocessing(weights)
            examples.append(f"resnet152:{weights.name} {settings['resize_size']}->{settings['crop_size']} "
                            f"{settings['interpolation']}")
        return {
            **super().describe(),
            "architectures": f"{DEFAULT_ARCH} (demo); any of torchvision's {len(names)} classifiers "
            f"({', '.join(n for n in names if n.startswith('resnet'))}, {names[0]}, ...)",
            "input": f"single frames at {DEFAULT_SPEC.frame_rate:g} fps. demo: squashed to "
            f"{DEFAULT_SPEC.size}x{DEFAULT_SPEC.size}; torchvision weights: their transforms(), short side "
            f"resized (aspect kept) then centre crop, their interpolation, mean and std ({'; '.join(examples)})",
            "weights": f"{super().describe()['weights']}; torchvision state dict by name: ARCH:WEIGHTS from the "
            "torch hub cache (e.g. resnet152:IMAGENET1K_V2), or ARCH:WEIGHTS@FILE",
        }


def classification_inputs(
    frames: np.ndarray, preprocess: dict[str, Any], spec: InputSpec, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, crop, crop]: torchvision's ``ImageClassification`` transform
    (the one ``weights.transforms()`` gives) on a batch: short side to ``resize_size`` (aspect kept),
    centre crop ``crop_size``, 0-1, normalised with ``spec``'s mean and std."""
    x = torch.as_tensor(frames).to(device).permute(0, 3, 1, 2).contiguous()
    x = TF.resize(x, [int(preprocess["resize_size"])], interpolation=InterpolationMode(preprocess["interpolation"]),
                  antialias=bool(preprocess["antialias"]))
    x = TF.center_crop(x, [int(preprocess["crop_size"])])
    return TF.normalize(TF.convert_image_dtype(x, torch.float), list(spec.mean), list(spec.std))


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's index order."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES  # the list torchvision's own weights use

    return list(_IMAGENET_CATEGORIES)


def torchvision_weights(arch: str, name: str | None = None) -> torchvision.models.WeightsEnum:
    """torchvision's weights ``name`` for classifier ``arch`` (``IMAGENET1K_V2``; None or ``DEFAULT``: its default)."""
    name = name or "DEFAULT"
    if arch not in torchvision_classifiers():
        raise TeacherWeightsError(f"{arch}:{name}", f"{arch!r} is not a torchvision classifier; they are: "
                                  f"{', '.join(torchvision_classifiers())}")
    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum[name]
    except KeyError:
        raise TeacherWeightsError(f"{arch}:{name}", f"torchvision has no {name!r} weights for {arch}; it has "
                                  f"{', '.join(w.name for w in enum)} (and DEFAULT)") from None


def hub_cache_file(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision keeps ``weights`` once downloaded: torch.hub.get_dir()/checkpoints/<the URL's file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def preprocessing(weights: torchvision.models.WeightsEnum) -> tuple[dict[str, Any], InputSpec]:
    """(resize/crop/interpolation settings, input spec at ``TORCHVISION_FRAME_RATE``) of ``weights.transforms()``."""
    t = weights.transforms()
    if not hasattr(t, "resize_size"):
        raise ValueError(f"{weights} has no image classification transform ({type(t).__name__})")
    settings = {"resize_size": int(t.resize_size[0]), "crop_size": int(t.crop_size[0]),
                "interpolation": t.interpolation.value, "antialias": bool(t.antialias)}
    spec = InputSpec(TORCHVISION_FRAME_RATE, int(t.crop_size[0]), tuple(t.mean), tuple(t.std))
    return settings, spec


def _builder_kwargs(arch: str, weights: torchvision.models.WeightsEnum) -> dict[str, Any]:
    """What torchvision's own builder sets when it is given ``weights`` (its ``_ovewrite_named_param`` calls),
    besides the class count, so the model computes what ``get_model(arch, weights=...)`` computes."""
    if arch in ("googlenet", "inception_v3"):
        return {"transform_input": True, "aux_logits": True, "init_weights": False}
    if arch.startswith("vit_"):
        return {"image_size": weights.meta["min_size"][0]}
    if arch.startswith("maxvit"):
        return {"input_size": list(weights.meta["min_size"])}
    return {}


def load_torchvision_classifier(
    state_dict_path: str | os.PathLike,
    arch: str = "resnet152",
    weights: torchvision.models.WeightsEnum | str | None = None,
    classes: Sequence[str] | None = None,
    *,
    frame_rate: float = TORCHVISION_FRAME_RATE,
    device: str | torch.device = "cpu",
) -> ObjectTeacher:
    """An Object-Score teacher from a LOCAL torchvision classification state dict (e.g. the file
    torchvision's ``ResNet152_Weights.IMAGENET1K_V2`` downloads, fetched by hand elsewhere).

    ``weights`` (a member of the arch's weights enum or its name; None: the arch's default)
    sets the preprocessing (``weights.transforms()``) and, when the file has as many classes,
    the class names; a file with another class count (a fine-tuned head) gets ``classes`` or
    ``class_<i>``. The state dict must fit the architecture exactly. Save the teacher in our
    format with ``save_teacher(path, t.model, "object", arch, t.meta["arch_kwargs"], t.meta)``.
    """
    if not isinstance(weights, torchvision.models.WeightsEnum):
        weights = torchvision_weights(arch, weights)
    try:
        state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a bad archive
        raise TeacherWeightsError(state_dict_path, f"not a readable torch file ({type(e).__name__}: {e})") from e
    for wrapper in ("state_dict", "model"):  # common checkpoint wrappers around the bare state dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TeacherWeightsError(state_dict_path, "not a state dict (a dict of tensors)")
    kwargs = _builder_kwargs(arch, weights)
    categories = weights.meta["categories"]
    with torch.device("meta"):  # shapes only: no time spent initialising weights the file replaces
        model = build(arch, num_classes=len(categories), **kwargs)
    # The class count is the output layer's, which torchvision registers last in every classifier.
    head = next(reversed(model.state_dict()))
    num_classes = int(state[head].shape[0]) if head in state else len(categories)
    if classes is None:
        classes = categories if num_classes == len(categories) else [f"class_{i}" for i in range(num_classes)]
    if len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for a {num_classes}-way classifier")
    kwargs["num_classes"] = num_classes
    model = _load_exactly(arch, kwargs, state, state_dict_path)
    settings, spec = preprocessing(weights)
    meta = {
        "name": "object",
        "arch": arch,
        "arch_kwargs": kwargs,
        "classes": list(classes),
        "spec": InputSpec(frame_rate, spec.size, spec.mean, spec.std).to_dict(),
        "preprocess": settings,
        "torchvision_weights": f"{arch}:{weights.name}",
        "weights_url": weights.url,
        "weights_sha256": file_sha256(state_dict_path),
        "source": str(Path(state_dict_path).resolve()),
        "converted_from": "torchvision state dict",
    }
    return ObjectTeacher(model, meta, device)


def _load_exactly(arch: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor], path: str | os.PathLike) -> nn.Module:
    """torchvision ``arch`` holding exactly ``state``: every key used, none left over, every shape equal."""
    with torch.device("meta"):
        model = build(arch, **kwargs)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" for what, keys in (
        ("missing", [k for k in expected if k not in got]),
        ("unexpected", [k for k in got if k not in expected]),
        ("of another shape", [f"{k} {list(got[k])} vs {list(expected[k])}" for k in expected
                              if k in got and got[k] != expected[k]]),
    ) if keys]
    if problems:
        raise TeacherWeightsError(path, f"weights do not fit torchvision {arch} {kwargs}: {'; '.join(problems)}")
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # a buffer no state dict holds
        model = build(arch, **kwargs)
        model.load_state_dict(state)
    return model.float()
