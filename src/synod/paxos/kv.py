"""A replicated key-value state machine: get, put, delete, compare-and-set.

Operations and results are small msgpack arrays; build them with the ``op_*``
helpers and read results with ``decode_result``. Keys and values are strings.
Deterministic, so every replica that applies the same log holds the same map,
named by ``digest()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from synod.core.errors import RemoteProtocolError

#: Keys per snapshot chunk (so a large map streams in pieces).
SNAPSHOT_KEYS_PER_CHUNK = 256


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def op_get(key: str) -> bytes:
    return _pack(["get", key])


def op_put(key: str, value: str) -> bytes:
    return _pack(["put", key, value])


def op_delete(key: str) -> bytes:
    return _pack(["delete", key])


def op_cas(key: str, expected: str | None, new: str) -> bytes:
    """Set ``key`` to ``new`` if it holds ``expected`` (None: if absent)."""
    return _pack(["cas", key, expected, new])


def decode_op(op: bytes) -> list[Any]:
    try:
        decoded = msgpack.unpackb(op, raw=False)
    except Exception as error:  # hostile bytes: msgpack raises many kinds
        raise RemoteProtocolError(f"undecodable kv op: {type(error).__name__}") from None
    if not isinstance(decoded, list) or not decoded or not isinstance(decoded[0], str):
        raise RemoteProtocolError("kv op must be [name, args...]")
    return decoded


def decode_result(result: bytes) -> Any:
    """get -> value or None; put -> None; delete -> existed (bool);
    cas -> (swapped, current value or None); a bad op -> {"error": text}."""
    decoded = msgpack.unpackb(result, raw=False)
    if isinstance(decoded, list):
        return tuple(decoded)
    return decoded


class KeyValue:
    """The key-value state machine (see ``synod.paxos.statemachine.StateMachine``)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, op: bytes) -> bytes:
        try:
            name, *args = decode_op(op)
            match name, args:
                case "put", [str() as key, str() as value]:
                    self.data[key] = value
                    return _pack(None)
                case "delete", [str() as key]:
                    return _pack(self.data.pop(key, None) is not None)
                case "cas", [str() as key, (str() | None) as expected, str() as new]:
                    current = self.data.get(key)
                    if current == expected:
                        self.data[key] = new
                        return _pack([True, new])
                    return _pack([False, current])
                case "get", [str() as key]:
                    return _pack(self.data.get(key))
                case _:
                    return _pack({"error": f"unknown kv op {name!r}"})
        except RemoteProtocolError as error:
            # A malformed op is applied as a no-op with an error result, the same
            # way on every replica: determinism holds for bad input too.
            return _pack({"error": str(error)})

    def query(self, op: bytes) -> bytes:
        try:
            name, *args = decode_op(op)
        except RemoteProtocolError as error:
            return _pack({"error": str(error)})
        if name == "get" and len(args) == 1 and isinstance(args[0], str):
            return _pack(self.data.get(args[0]))
        return _pack({"error": f"not a read-only kv op: {name!r}"})

    def snapshot(self) -> Iterator[bytes]:
        items = sorted(self.data.items())
        for start in range(0, len(items), SNAPSHOT_KEYS_PER_CHUNK):
            yield _pack(items[start : start + SNAPSHOT_KEYS_PER_CHUNK])

    def restore(self, chunks: Iterable[bytes]) -> None:
        data: dict[str, str] = {}
        for chunk in chunks:
            try:
                rows = msgpack.unpackb(chunk, raw=False)
                for key, value in rows:
                    data[str(key)] = str(value)
            except (ValueError, TypeError, msgpack.UnpackException) as error:
                raise RemoteProtocolError(f"bad kv snapshot chunk: {error}") from None
        self.data = data

    def digest(self) -> str:
        h = hashlib.sha256()
        for key, value in sorted(self.data.items()):
            h.update(_pack([key, value]))
        return h.hexdigest()[:16]
