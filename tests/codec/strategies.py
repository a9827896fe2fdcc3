"""Hypothesis strategies built from message annotations, so every registered
message type gets a round-trip test without writing one by hand."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import pkgutil
import types
import typing
from typing import Any

from hypothesis import strategies as st

import synod
from synod.codec.registry import Message, registered_messages

_SKIP_PACKAGES = ("synod.cli",)


def import_all_synod_modules() -> None:
    """Import every module of the package so every message type is registered."""
    for info in pkgutil.walk_packages(synod.__path__, prefix="synod."):
        if info.name.startswith(_SKIP_PACKAGES) or info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def strategy_for(kind: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    supertype = getattr(kind, "__supertype__", None)
    if supertype is not None:
        return strategy_for(supertype, depth)
    if kind is type(None) or kind is None:
        return st.none()
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.integers(min_value=-(2**63), max_value=2**64 - 1)
    if kind is float:
        return st.floats(allow_nan=False)
    if kind is str:
        return st.text(max_size=20)
    if kind is bytes:
        return st.binary(max_size=40)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return st.sampled_from(list(kind))
    if isinstance(kind, type) and issubclass(kind, Message):
        if kind is Message:
            leaves = [c for c in registered_messages().values() if _is_leafish(c)]
            return st.sampled_from(leaves).flatmap(lambda c: message_strategy(c, depth + 1))
        return message_strategy(kind, depth + 1)
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if depth >= 2 and type(None) in args:
            return st.none()
        return st.one_of([strategy_for(a, depth) for a in args])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0], depth + 1), max_size=3 if depth < 2 else 0).map(tuple)
        return st.tuples(*(strategy_for(a, depth + 1) for a in args))
    if origin is frozenset:
        return st.frozensets(strategy_for(args[0], depth + 1), max_size=3)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0], depth + 1), strategy_for(args[1], depth + 1), max_size=3 if depth < 2 else 0)
    raise TypeError(f"no strategy for {kind!r}")


def _is_leafish(cls: type[Message]) -> bool:
    hints = typing.get_type_hints(cls)
    return all("Message" not in repr(h) for h in hints.values())


def message_strategy(cls: type[Message], depth: int = 0) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name], depth) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return st.fixed_dictionaries(fields).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Any:
    try:
        return cls(**values)
    except (TypeError, ValueError):
        # The class validates its own fields (bounds); such values cannot be sent.
        from hypothesis import reject

        reject()
