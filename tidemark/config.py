"""Typed configuration: one frozen dataclass per daemon, loaded in one place.

Precedence, highest first: explicit overrides (command-line flags), environment
variables ``{PREFIX}{KEY}`` (e.g. ``TIDEMARK_COLLECTOR_MAX_CONNECTIONS``), the TOML
file (its ``[section]`` table, or its top level), then the dataclass defaults.
Every value is converted to the field's type; a bad one raises :class:`ConfigError`
naming the key. Nothing here reads ``os.environ`` by itself: callers pass it in.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from tidemark.errors import ConfigError

__all__ = ["load_config", "parse_duration_seconds", "parse_size_bytes"]

T = TypeVar("T")

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_duration_seconds(text: str | float | int) -> float:
    """``"200ms"``, ``"10s"``, ``"5m"``, ``"1h"`` or a bare number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    raw = text.strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number):] or "s"
    if unit not in _DURATION_UNITS:
        raise ValueError(f"unknown duration unit {unit!r} in {text!r}")
    return float(number) * _DURATION_UNITS[unit]


def parse_size_bytes(text: str | int) -> int:
    """``"4KiB"``, ``"64MB"`` (binary multiples) or a bare number of bytes."""
    if isinstance(text, int):
        return text
    raw = text.strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number):]
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r}")
    return int(float(number) * _SIZE_UNITS[unit])


def _convert(key: str, value: Any, target: Any) -> Any:
    origin = typing.get_origin(target)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(target) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return _convert(key, value, options[0])
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if target is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return parse_size_bytes(value) if key.endswith("_bytes") else int(value)
        if isinstance(value, int):
            return value
        raise ValueError(f"expected an integer, got {value!r}")
    if target is float:
        if isinstance(value, str) and key.endswith("_seconds"):
            result = parse_duration_seconds(value)
        elif isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        else:
            result = float(value)
        if math.isnan(result):
            raise ValueError("NaN is not allowed")
        return result
    if target is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if target is Path:
        return Path(str(value))
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        (item_type, *_rest) = typing.get_args(target)
        return tuple(_convert(key, item.strip() if isinstance(item, str) else item, item_type)
                     for item in items if item != "")
    return value


def load_config(
    cls: type[T],
    *,
    path: Path | str | None = None,
    section: str | None = None,
    environ: Mapping[str, str] | None = None,
    env_prefix: str = "",
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build a frozen config of type ``cls`` from file, environment and overrides."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        if section is not None and isinstance(document.get(section), dict):
            document = document[section]
        for key, value in document.items():
            if isinstance(value, dict):
                continue  # other daemons' sections
            if key not in fields:
                raise ConfigError(f"unknown configuration key {key!r} in {path}")
            raw[key] = value
    if environ and env_prefix:
        for name in fields:
            env_key = env_prefix + name.upper()
            if env_key in environ:
                raw[name] = environ[env_key]
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ConfigError(f"unknown configuration key {key!r}")
        if value is not None:
            raw[key] = value
    converted: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            converted[key] = _convert(key, value, hints[key])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"configuration key {key!r}: {exc}") from None
    try:
        config = cls(**converted)
    except ValueError as exc:  # raised by a __post_init__ validation
        raise ConfigError(str(exc)) from None
    return config
