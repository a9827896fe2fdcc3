"""Typed wire messages: registration with append-only tags, msgpack encoding.

Theory of operation
-------------------
Every message is a ``@dataclass(frozen=True, slots=True, kw_only=True)`` that
subclasses ``Message`` and is registered with ``@message(tag)``. Tags are
**append-only**: a tag once shipped is never reused or renumbered (each block owns
a range, see ``TAG_RANGES``). On the wire a message is the msgpack array

    [PROTOCOL_VERSION, tag, [field_1, field_2, ...]]

with fields in declaration order. Nested messages are ``[tag, [fields...]]``;
tuples and lists are arrays; ``IntEnum`` values are integers. Decoding checks every
field against its annotation, so a decoded message always has the types its class
declares. Anything else -- garbage, a truncated buffer, an unknown tag, a wrong
field count or type, another protocol version -- raises ``RemoteProtocolError``
and nothing else. There is no pickle anywhere on the wire.

Supported field types: ``int``, ``float``, ``str``, ``bytes``, ``bool``, ``None``,
``NewType``s of those (``NodeId``), ``IntEnum`` subclasses, ``X | None``,
``tuple[X, ...]``, fixed ``tuple[X, Y]``, ``dict[K, V]``, ``frozenset[X]``,
a registered message class, a union of message classes, and ``Message`` (any
registered message).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import operator
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from synod.core.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_VERSION = 1

#: Tag ranges owned by each block, so blocks never collide. ONLY APPEND.
TAG_RANGES: dict[str, range] = {
    "test": range(1, 100),
    "runtime": range(100, 200),
    "sim": range(200, 300),
    "paxos": range(300, 500),
    "gossip": range(500, 600),
    "lock": range(600, 800),
    "txn": range(800, 1000),
    "mapreduce": range(1000, 1100),
    "node": range(1100, 1200),
}

#: msgpack nesting depth we accept; bounds recursion on hostile input.
_DEPTH_MAX = 32


class UnknownMessageType(RemoteProtocolError):
    """A well-formed message whose type tag this node does not know (a newer peer,
    or garbage that happens to parse): refused and counted apart from garbage."""


class Message:
    """Base class of every wire message (a marker; carries no state)."""

    __slots__ = ()


M = TypeVar("M", bound=Message)

_by_tag: dict[int, type[Message]] = {}
_tag_of: dict[type[Message], int] = {}


def message(tag: int) -> Callable[[type[M]], type[M]]:
    """Class decorator: register a message class under ``tag`` (append-only)."""

    def register(cls: type[M]) -> type[M]:
        if not (dataclasses.is_dataclass(cls) and issubclass(cls, Message)):
            raise LocalProtocolError(f"{cls.__name__} must be a dataclass subclassing Message")
        params = cls.__dataclass_params__
        if not params.frozen:
            raise LocalProtocolError(f"{cls.__name__} must be frozen")
        if tag in _by_tag and _by_tag[tag] is not cls:
            other = _by_tag[tag]
            if (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
                raise LocalProtocolError(
                    f"tag {tag} of {cls.__name__} already used by {other.__name__}"
                )
        _by_tag[tag] = cls
        _tag_of[cls] = tag
        _getters[cls] = _getter(cls)
        _builders.pop(cls, None)
        return cls

    return register


def registered_messages() -> dict[int, type[Message]]:
    """Every registered message class by tag."""
    return dict(_by_tag)


def tag_of(cls: type[Message]) -> int:
    return _tag_of[cls]


# ---------------------------------------------------------------- encoding


def _getter(cls: type[Message]) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning an instance's field values in declaration order."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        (only,) = names
        return lambda obj: (getattr(obj, only),)
    getter: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
    return getter


_getters: dict[type[Message], Callable[[Any], tuple[Any, ...]]] = {}


def _default(value: Any) -> Any:
    """msgpack's hook for what it cannot pack itself: messages (``[tag, fields]``,
    the fields packed by msgpack's C loop in turn), enums and frozensets. Tuples,
    lists, dicts, ints (IntEnum too), strs, bytes, floats, bools and None are
    packed natively."""
    cls = type(value)
    getter = _getters.get(cls)
    if getter is not None:
        return (_tag_of[cls], getter(value))
    if isinstance(value, Message):
        raise LocalProtocolError(f"{cls.__name__} is not a registered message")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset):
        items = list(value)
        with contextlib.suppress(TypeError):
            items.sort()
        return items
    raise LocalProtocolError(f"cannot encode value of type {cls.__name__}")


def encode(msg: Message) -> bytes:
    """Encode a registered message to bytes."""
    cls = type(msg)
    getter = _getters.get(cls)
    if getter is None:
        raise LocalProtocolError(f"{cls.__name__} is not a registered message")
    try:
        packed: bytes = msgpack.packb(
            (PROTOCOL_VERSION, _tag_of[cls], getter(msg)), default=_default, use_bin_type=True
        )
    except (OverflowError, ValueError, TypeError) as error:
        raise LocalProtocolError(f"cannot encode {cls.__name__}: {error}") from None
    return packed


# ---------------------------------------------------------------- decoding


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(what)


def _compile(kind: Any) -> Callable[[Any, int], Any]:
    """Return a validator turning a wire value into a value of type ``kind``."""
    supertype = getattr(kind, "__supertype__", None)
    if supertype is not None:  # NewType
        return _compile(supertype)
    if kind is Any:
        raise LocalProtocolError("message fields may not be typed Any")
    if kind is type(None) or kind is None:

        def none(v: Any, depth: int) -> Any:
            if v is not None:
                raise _bad("expected nil")
            return None

        return none
    if kind is bool:

        def boolean(v: Any, depth: int) -> Any:
            if type(v) is not bool:
                raise _bad("expected bool")
            return v

        return boolean
    if kind is int:

        def integer(v: Any, depth: int) -> Any:
            if type(v) is not int:
                raise _bad("expected int")
            return v

        return integer
    if kind is float:

        def real(v: Any, depth: int) -> Any:
            if type(v) is float:
                return v
            if type(v) is int:
                return float(v)
            raise _bad("expected float")

        return real
    if kind is str:

        def text(v: Any, depth: int) -> Any:
            if type(v) is not str:
                raise _bad("expected str")
            return v

        return text
    if kind is bytes:

        def binary(v: Any, depth: int) -> Any:
            if type(v) is not bytes:
                raise _bad("expected bytes")
            return v

        return binary
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        enum_kind = kind

        def enumeration(v: Any, depth: int) -> Any:
            if type(v) not in (int, str):
                raise _bad(f"expected {enum_kind.__name__}")
            try:
                return enum_kind(v)
            except ValueError:
                raise _bad(f"bad {enum_kind.__name__} value {v!r}") from None

        return enumeration
    if isinstance(kind, type) and issubclass(kind, Message):
        return _message_validator((kind,) if kind is not Message else None)
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if all(isinstance(a, type) and issubclass(a, Message) for a in args):
            return _message_validator(tuple(args))
        options = [_compile(a) for a in args]
        allow_none = type(None) in args
        others = [_compile(a) for a in args if a is not type(None)]

        def union(v: Any, depth: int) -> Any:
            if v is None and allow_none:
                return None
            for option in others:
                try:
                    return option(v, depth)
                except RemoteProtocolError:
                    continue
            raise _bad(f"value does not fit {kind}")

        del options
        return union
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _compile(args[0])

            def homogeneous(v: Any, depth: int) -> Any:
                if type(v) is not list:
                    raise _bad("expected array")
                depth += 1
                return tuple([item(x, depth) for x in v])

            return homogeneous
        items = [_compile(a) for a in args]

        def fixed(v: Any, depth: int) -> Any:
            if type(v) is not list or len(v) != len(items):
                raise _bad(f"expected array of {len(items)}")
            return tuple(check(x, depth + 1) for check, x in zip(items, v, strict=True))

        return fixed
    if origin is frozenset:
        member = _compile(args[0])

        def frozen(v: Any, depth: int) -> Any:
            if type(v) is not list:
                raise _bad("expected array")
            return frozenset(member(x, depth + 1) for x in v)

        return frozen
    if origin is dict:
        key_check, value_check = _compile(args[0]), _compile(args[1])

        def mapping(v: Any, depth: int) -> Any:
            if type(v) is not dict:
                raise _bad("expected map")
            return {key_check(k, depth + 1): value_check(x, depth + 1) for k, x in v.items()}

        return mapping
    raise LocalProtocolError(f"unsupported message field type {kind!r}")


def _message_validator(allowed: tuple[type[Message], ...] | None) -> Callable[[Any, int], Any]:
    def nested(v: Any, depth: int) -> Any:
        if type(v) is not list or len(v) != 2:
            raise _bad("expected [tag, fields]")
        cls = _by_tag.get(v[0]) if type(v[0]) is int else None
        if cls is None:
            raise UnknownMessageType(f"unknown message tag {v[0]!r}")
        if allowed is not None and cls not in allowed:
            raise _bad(f"message {cls.__name__} not allowed here")
        return _build(cls, v[1], depth + 1)

    return nested


_PRIMITIVES: dict[Any, str] = {int: "int", str: "str", bytes: "bytes", bool: "bool"}


def _primitive_name(kind: Any) -> tuple[str, bool] | None:
    """``(type name, optional)`` when ``kind`` is a primitive or ``primitive | None``."""
    kind = getattr(kind, "__supertype__", kind)
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind], False
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(kind)) == 2:
            inner = getattr(args[0], "__supertype__", args[0])
            if inner in _PRIMITIVES:
                return _PRIMITIVES[inner], True
    return None


def _make_builder(cls: type[Message]) -> Callable[[Any, int], Message]:
    """Generate a decoder for ``cls``: check the field count, check each field
    (primitives inline, the rest through compiled validators) and construct.
    Generated like ``dataclasses`` generates ``__init__``: one straight-line
    function per class is several times faster than a generic loop."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    label = cls.__name__
    env: dict[str, Any] = {"cls": cls, "bad": _bad, "DEPTH_MAX": _DEPTH_MAX,
                           "int": int, "str": str, "bytes": bytes, "bool": bool}
    lines = [
        "def build(fields, depth):",
        "    if depth > DEPTH_MAX:",
        "        raise bad('message nested too deeply')",
        f"    if type(fields) is not list or len(fields) != {len(names)}:",
        f"        raise bad({label + ': expected ' + str(len(names)) + ' fields'!r})",
    ]
    if names:
        lines.append(f"    ({', '.join(f'v{i}' for i in range(len(names)))},) = fields")
    for i, name in enumerate(names):
        primitive = _primitive_name(hints[name])
        if primitive is not None:
            type_name, optional = primitive
            condition = f"type(v{i}) is not {type_name}"
            if optional:
                condition = f"v{i} is not None and {condition}"
            lines.append(f"    if {condition}:")
            lines.append(f"        raise bad({label + '.' + name + ': expected ' + type_name!r})")
        else:
            env[f"check{i}"] = _compile(hints[name])
            lines.append(f"    v{i} = check{i}(v{i}, depth)")
    arguments = ", ".join(f"{name}=v{i}" for i, name in enumerate(names))
    lines += [
        "    try:",
        f"        return cls({arguments})",
        "    except (TypeError, ValueError) as error:",
        # A message's own __post_init__ may refuse values (bounds): bad input.
        f"        raise bad({label!r} + ': ' + str(error)) from None",
    ]
    exec("\n".join(lines), env)
    builder: Callable[[Any, int], Message] = env["build"]
    return builder


_builders: dict[type[Message], Callable[[Any, int], Message]] = {}


def _build(cls: type[Message], fields: Any, depth: int) -> Message:
    builder = _builders.get(cls)
    if builder is None:
        builder = _builders[cls] = _make_builder(cls)
    return builder(fields, depth)


def decode(data: bytes, *, max_bytes: int = 16 * 1024 * 1024) -> Message:
    """Decode bytes into a registered message; ``RemoteProtocolError`` on anything bad."""
    if len(data) > max_bytes:
        raise _bad(f"message of {len(data)} bytes over the maximum {max_bytes}")
    try:
        wire = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
        )
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData,
            msgpack.FormatError, msgpack.StackError, RecursionError, UnicodeDecodeError) as error:
        raise _bad(f"undecodable message: {type(error).__name__}") from None
    except Exception as error:  # msgpack may raise others on hostile input
        raise _bad(f"undecodable message: {type(error).__name__}") from None
    if type(wire) is not list or len(wire) != 3:
        raise _bad("expected [version, tag, fields]")
    version, tag, fields = wire
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise _bad(f"unsupported protocol version {version!r}")
    cls = _by_tag.get(tag) if type(tag) is int else None
    if cls is None:
        raise UnknownMessageType(f"unknown message tag {tag!r}")
    try:
        return _build(cls, fields, 0)
    except RecursionError:
        raise _bad("message nested too deeply") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _bad(f"{cls.__name__}: {type(error).__name__}") from None
