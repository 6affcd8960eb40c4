"""Converters from the weights formats people have to ours: one module per source format.

``CONVERTERS`` maps a ``pipeline teachers convert --format`` name to ``convert(src, out, **options) -> dict``
(what was written, for the CLI to print).
"""
from __future__ import annotations

from typing import Any, Callable


def _convert_100doh(src, out, **options: Any) -> dict[str, Any]:
    from teachers.convert.hoi100doh import convert_100doh

    return convert_100doh(src, out, **options)


def _convert_detectron2(src, out, **options: Any) -> dict[str, Any]:
    from teachers.convert.detectron2 import convert_detectron2

    return convert_detectron2(src, out, **options)


CONVERTERS: dict[str, Callable[..., dict[str, Any]]] = {"100doh": _convert_100doh, "detectron2": _convert_detectron2}
