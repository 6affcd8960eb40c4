"""The 100DOH hand-object checkpoint (``faster_rcnn_1_8_132028.pth``) -> our ``hoi100doh`` teacher file.

The authors' trainval_net.py saves ``{"session", "epoch", "model", "optimizer", "pooling_mode",
"class_agnostic"}``; ``model`` is the state dict of their resnet Faster R-CNN, whose names
:class:`teachers.hoi100doh.HandObjectRCNN` repeats. The conversion is strict: every tensor of
``model`` must have a place of the same shape, and every place must be filled (BatchNorm's
``num_batches_tracked`` counters excepted: PyTorch before 0.4.1 did not write them and inference
never reads them).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from teachers import hoi100doh
from teachers.base import TeacherWeightsError, file_sha256, save_teacher

WHERE = ("the 100DOH checkpoints (faster_rcnn_1_8_132028.pth: 100K+ego; faster_rcnn_1_8_89999.pth: 100K) are "
         "linked from the model table of https://github.com/ddshan/hand_object_detector#readme")


def read_100doh(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, read with ``torch.load(weights_only=True)`` (tensors, numbers, strings, containers)."""
    if not Path(path).is_file():
        raise TeacherWeightsError(path, f"file not found; {WHERE}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        from pipeline.io.safe_pickle import torch_load_refusal

        raise TeacherWeightsError(path, f"refused: {torch_load_refusal(e)}") from None
    except Exception as e:  # torch raises several unrelated types for a bad archive
        raise TeacherWeightsError(path, f"not a readable torch file ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise TeacherWeightsError(path, "not a 100DOH checkpoint: no 'model' dict of named tensors")
    if ckpt.get("pooling_mode", "align") != "align":
        raise TeacherWeightsError(path, f"pooling_mode {ckpt['pooling_mode']!r}: only the released 'align' "
                                  "(RoIAlign) models are rebuilt")
    if ckpt.get("class_agnostic", False):
        raise TeacherWeightsError(path, "class_agnostic checkpoint (4 box outputs): only per-class boxes "
                                  "(the released models) are rebuilt")
    return ckpt


def check_100doh_state(weights: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse ``weights`` unless they fill the 100DOH model exactly; the first key that does not fit is named."""
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        expected = hoi100doh.build().state_dict()
    for name, value in weights.items():
        if name not in expected:
            raise TeacherWeightsError(path, f"key {name!r} has no place in the 100DOH model (left over; "
                                      f"{len(set(weights) - set(expected))} such keys in all)")
        if not isinstance(value, torch.Tensor) or value.shape != expected[name].shape:
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TeacherWeightsError(path, f"key {name!r}: {shape} does not fit {list(expected[name].shape)}")
    missing = [k for k in expected if k not in weights and not k.endswith("num_batches_tracked")]
    if missing:
        raise TeacherWeightsError(path, f"key {missing[0]!r} missing from the checkpoint ({len(missing)} missing in all)")


def convert_100doh(src: str | os.PathLike, out: str | os.PathLike, *, hand_threshold: float = 0.5,
                   object_threshold: float = 0.5, nms_threshold: float = 0.3, short_side: int = hoi100doh.SHORT_SIDE,
                   max_size: int = hoi100doh.MAX_SIZE) -> dict[str, Any]:
    """Convert the checkpoint at ``src`` into our teacher file ``out`` (kind ``hoi100doh``); thresholds and
    the resize (short side, long-side cap) go into its metadata, defaults as the authors' demo.py."""
    ckpt = read_100doh(src)
    check_100doh_state(ckpt["model"], src)
    model = hoi100doh.build()
    model.load_state_dict({**model.state_dict(), **ckpt["model"]})  # num_batches_tracked may be absent
    thresholds = hoi100doh.Thresholds(hand_threshold, object_threshold, nms_threshold)
    source = {"format": "100doh", "file": str(Path(src).resolve()), "sha256": file_sha256(src),
              **{k: ckpt[k] for k in ("session", "epoch") if isinstance(ckpt.get(k), int)}}
    path = save_teacher(out, model, "hoi100doh", hoi100doh.ARCH, {}, hoi100doh.make_meta(thresholds, short_side, max_size, converted_from=source))
    return {"out": str(path), "kind": "hoi100doh", "arch": hoi100doh.ARCH, "tensors": len(ckpt["model"])}
