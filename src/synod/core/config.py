"""Loading the per-block ``Config`` dataclasses from TOML and from overrides.

Each block has one frozen, keyword-only ``Config`` dataclass whose fields carry
their unit in their name and validate in ``__post_init__``. This module turns a
mapping (a TOML table, ``--set key=value`` pairs from the command line) into such
a dataclass, with an error that names the field when a key is unknown or a value
has the wrong type.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from synod.core.errors import ConfigError

C = TypeVar("C")


def _coerce(name: str, value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str, bool):
        if isinstance(value, str) and kind is not str:
            try:
                if kind is bool:
                    if value.lower() in ("true", "1", "yes", "on"):
                        return True
                    if value.lower() in ("false", "0", "no", "off"):
                        return False
                    raise ValueError(value)
                return kind(value)
            except ValueError:
                raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}") from None
        if type(value) is not kind:
            raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        (item_kind, *_rest) = typing.get_args(kind)
        return tuple(_coerce(name, item, item_kind) for item in value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: value {value!r} does not fit {kind}")
    return value


def config_from_mapping(cls: type[C], values: Mapping[str, Any], *, base: C | None = None) -> C:
    """Build ``cls`` (a Config dataclass) from ``values``, starting from ``base``
    (or the defaults). Unknown keys and wrong types raise ``ConfigError`` naming
    the field; the dataclass's own ``__post_init__`` checks the rest."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        attr = key.replace("-", "_")
        if attr not in fields:
            raise ConfigError(f"unknown config field {key!r} for {cls.__name__}")
        changes[attr] = _coerce(f"{cls.__name__}.{attr}", value, hints[attr])
    start = base if base is not None else cls()
    try:
        return dataclasses.replace(start, **changes)  # type: ignore[type-var]
    except TypeError as error:
        raise ConfigError(f"{cls.__name__}: {error}") from None


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, with a ``ConfigError`` naming the file on a syntax error."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path}: {error}") from None


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from the command line."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        result[key.strip()] = value.strip()
    return result
