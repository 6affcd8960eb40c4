"""Typed stage configs: dataclasses loaded from YAML plus generic ``key=value`` overrides.

Every stage declares one dataclass (nested dataclasses for groups). ``load_config``
merges, in order, the dataclass defaults, a YAML file, and dotted ``key=value``
overrides, then checks every key and type before any work starts. Problems raise
``ConfigError`` naming the key; the CLI turns that into one line and exit code 2.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.errors import ConfigError

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert) ``value`` to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': must be one of {list(args)}, got {value!r}")
        return value
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: type[T], data: dict[str, Any], prefix: str = "", validate: bool = True) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        import difflib

        valid = ", ".join(sorted(names))
        close = difflib.get_close_matches(unknown[0], sorted(names), n=1)
        hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' ({hint}valid keys here: {valid})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        nested = _is_dataclass_type(hints[f.name])
        # A section's defaults are its field's default_factory (e.g. the object teacher's own
        # epochs), not its class's: keys given override them one by one.
        given = data.get(f.name)
        if nested and f.default_factory is not dataclasses.MISSING and (f.name not in data or isinstance(given, dict)):
            base = to_dict(f.default_factory())
            kwargs[f.name] = _build(hints[f.name], {**base, **(given or {})}, prefix + f.name + ".", validate)
        elif f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], prefix + f.name)
        elif nested and f.default is dataclasses.MISSING:
            kwargs[f.name] = _build(hints[f.name], {}, prefix + f.name + ".", validate)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field left out
        raise ConfigError(f"config '{prefix or cls.__name__}': {e}") from None
    check = getattr(obj, "validate", None)
    if validate and callable(check):
        try:
            check()
        except ValueError as e:
            raise ConfigError(f"config: {e}") from None
    return obj


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"config key '{key}': '{p}' is not a group")
        node = nxt
    node[parts[-1]] = value


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    validate: bool = True,
) -> T:
    """Defaults (the dataclass's, or ``defaults``) <- YAML file <- ``extra`` (CLI flags as dotted
    keys) <- ``key=value`` overrides; then every key and type is checked."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys to values")
        data = loaded
    data = _deep_merge(defaults or {}, data)
    for key, value in (extra or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    for item in overrides:
        _set_dotted(data, *parse_override(item))
    return _build(cls, data, validate=validate)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(out)


def dump_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (runnable again with ``--config``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(p)
    return p
