"""Reading pickled weights without running code from the file.

Model-zoo pickles (PySlowFast's Caffe2 ``.pkl``, Detectron's) hold dicts of numpy arrays.
A pickle names the functions it calls while loading; :class:`RestrictedUnpickler` lets it
call only the few that rebuild numpy arrays, dtypes, scalars, builtin containers and
``collections.OrderedDict``, and refuses any other name before anything runs.
"""
from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import collections
import os
import pickle
from typing import Any, BinaryIO

import numpy as np

from pipeline.errors import PipelineError

try:  # numpy >= 2 keeps the modules pickles name under numpy._core
    from numpy import _core as _np_core
except ImportError:  # numpy 1.x
    from numpy import core as _np_core


class UnsafePickleError(PipelineError, pickle.UnpicklingError):
    """The pickle asked for a global outside the allowed set; nothing it asked for was run."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    found = {
        ("multiarray", "_reconstruct"): _np_core.multiarray._reconstruct,
        ("multiarray", "scalar"): _np_core.multiarray.scalar,
        # numpy's protocol-5 pickles rebuild contiguous arrays with _frombuffer.
        ("numeric", "_frombuffer"): _np_core.numeric._frombuffer,
    }
    # numpy 1.x wrote numpy.core.*, numpy 2 writes numpy._core.*; both name the same functions.
    allowed = {(f"{package}.{module}", name): obj for (module, name), obj in found.items()
               for package in ("numpy.core", "numpy._core")}
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float",
             "complex", "bool")

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    **{("builtins", name): getattr(builtins, name) for name in _BUILTINS},
    ("collections", "OrderedDict"): collections.OrderedDict,
    # How protocols 0-2 spell a bytes object written by Python 3: _codecs.encode(text, "latin1").
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses every other name."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set), as the base class maps them for protocols 0-2.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: the pickle asks for something other than "
                "numpy arrays, numbers, strings and containers"
            ) from None


def load_restricted(file: str | os.PathLike | BinaryIO, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` (a path or a binary file object) allowing only data.

    ``encoding="latin1"`` reads Python 2 pickles (Caffe2-era model zoos), whose numpy array
    buffers are byte strings.
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return RestrictedUnpickler(f, encoding=encoding).load()
    return RestrictedUnpickler(file, encoding=encoding).load()


def torch_load_refusal(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words.

    Torch's own text starts by suggesting to load again without the weights-only restriction,
    which would run the file's code: that advice is not passed on. A pickle asking for a class or function is named by it.
    """
    import re

    text = str(error)
    asked = re.search(r"GLOBAL (\S+)", text)
    if asked:
        return f"it asks for {asked.group(1)} (a class or function, not data)"
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    if detail:
        return f"not a torch weights file, or a damaged one ({detail.group(1).strip()})"
    return f"not a torch weights file, or a damaged one ({type(error).__name__})"
