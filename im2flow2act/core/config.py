"""Dataclass configs: load from YAML, override with ``key=value``, save beside every output.

Configs are plain dataclasses with defaults, so code can build them directly. A YAML file and
command-line overrides only change fields that exist: a typo fails with the list of valid keys and the
closest match, instead of being silently ignored. Every stage needs it, so it lives in ``core``, the bottom
of the import chain (docs/design.md §3).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or override does not fit the config dataclass."""


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then ``key=value`` overrides.

    Nested fields are addressed with dots (``tracker_args.win_size=31``); values are parsed as YAML
    (``grid_size=16`` is an int, ``box=[0,0,10,10]`` a list).
    """
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        data = loaded
        where = str(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return from_dict(cls, data, where=where if not overrides else f"{where} + overrides")


def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Build dataclass ``cls`` from a mapping, checking keys and converting values by field type."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}: unknown config key {key!r} for {cls.__name__}{hint}; valid keys: {', '.join(fields)}"
        )
    kwargs = {
        k: _convert(hints[k], _onto_default(fields[k], hints[k], v), f"{where}: {cls.__name__}.{k}")
        for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: invalid {cls.__name__}: {err}") from err


def check_range(key: str, value: Any, low: float | None = None, high: float | None = None) -> None:
    """Refuse a number outside [low, high], naming the key (or the ``--option``) as typed, the value and
    the range, so a bad value fails when read, not deep in a run (``from_dict`` adds the config's name)."""
    if (low is None or value >= low) and (high is None or value <= high):
        return
    if high is None:
        allowed = f"at least {low}"
    elif low is None:
        allowed = f"at most {high}"
    else:
        allowed = f"between {low} and {high}"
    given = f"{key} {value!r}" if key.startswith("-") else f"{key}={value!r}"
    raise ConfigError(f"{given} is out of range: {allowed}")


def replace_checked(cfg: C, **changes: Any) -> C:
    """``dataclasses.replace`` that checks the new values as reading them would (``__post_init__``)."""
    try:
        return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {type(cfg).__name__}: {err}") from err


def check_out_folder(path: str | Path, option: str = "--out") -> Path:
    """Create the output folder ``path`` and prove it writable now: an existing file or a read-only place
    fails before any work, naming the option, instead of as an ``OSError`` traceback midway."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is an existing file, not a folder: give a folder to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(
            f"{option} {path} cannot be written ({err.strerror or err}): give a folder you can write to"
        ) from err
    return path


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML-friendly Python values (tuples become lists)."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML; every output directory gets one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def _onto_default(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """A partial mapping for a nested config section, laid over that field's own default.

    ``generator.flow.displacement_scale=6`` must change that one value of the default generator's flow
    (16×16 displacement), not rebuild the flow from ``FlowImageConfig``'s class defaults (32×32 absolute)."""
    if not (isinstance(value, dict) and dataclasses.is_dataclass(tp)):
        return value
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        return value
    return _overlay(default, value) if dataclasses.is_dataclass(default) else value


def _overlay(default: Any, value: dict[str, Any]) -> dict[str, Any]:
    """Every field of dataclass instance ``default`` as a plain mapping, with ``value``'s keys laid over it
    (nested sections key by key; unknown keys kept, for ``from_dict`` to name)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(default):
        if not f.init:
            continue
        current = getattr(default, f.name)
        given = value.get(f.name, dataclasses.MISSING)
        if given is dataclasses.MISSING:
            nested = dataclasses.is_dataclass(current)
            out[f.name] = _plain(dataclasses.asdict(current)) if nested else current
        elif isinstance(given, dict) and dataclasses.is_dataclass(current):
            out[f.name] = _overlay(current, given)
        else:
            out[f.name] = given
    out.update({k: v for k, v in value.items() if k not in out})
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type; raise ConfigError when it cannot fit."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value or {}, where=where)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
        item = args[0] if args else Any
        items = [_convert(item, v, where) for v in value]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as text
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value
