"""Input readers and output writers: how records get into mappers and out of reducers.

Readers are pluggable: an ``InputFormat`` turns a byte range of a file into
``RecordBlock``s (a list of records read in bulk, so the hot loop touches no I/O).
A splittable format must apply the line-alignment rule: a split ``[start, end)``
owns exactly the records that *begin* inside it, so M splits read every record
once. Record byte offsets are only computed when needed (an error report or a
record to skip), which keeps the common path fast.

Keys and values are msgpack values everywhere (str, bytes, int, float, bool, None
and tuples/lists/dicts of those); msgpack arrays come back as tuples, so keys stay
hashable and comparable.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, BinaryIO, Protocol

import msgpack

#: Bytes read per block by line readers (one block = one bulk decode and split).
BLOCK_BYTES = 1024 * 1024


@dataclass(slots=True, kw_only=True)
class RecordBlock:
    """Records read in bulk from ``path``; the first begins at byte ``offset``.

    ``keys`` is None when every key is None (text lines), which saves building a
    tuple per line. ``nbytes`` is the input bytes the block covers."""

    path: str
    offset: int
    keys: list[Any] | None
    values: list[Any]
    nbytes: int


class InputFormat(Protocol):
    """How a job's input files are read."""

    #: Whether a file may be cut into byte-range splits.
    splittable: bool

    def read(self, path: str, start: int, end: int) -> Iterator[RecordBlock]:
        """The records beginning in ``[start, end)`` of ``path``."""
        ...

    def record_offsets(self, block: RecordBlock) -> list[int]:
        """The byte offset (or ordinal, for record formats) of each record of ``block``."""
        ...


class TextLines:
    """One record per line: key None, value the line without its newline (``str``
    decoded with ``encoding``, or ``bytes`` when ``encoding`` is None)."""

    splittable = True

    def __init__(self, encoding: str | None = "utf-8", block_bytes: int = BLOCK_BYTES) -> None:
        self.encoding = encoding
        self.block_bytes = block_bytes

    def read(self, path: str, start: int, end: int) -> Iterator[RecordBlock]:
        with open(path, "rb") as handle:
            position = start
            if start > 0:
                handle.seek(start - 1)
                # The line straddling `start` belongs to the previous split; if the
                # byte before `start` is a newline, this reads just that newline.
                position = start - 1 + len(handle.readline())
            while position < end:
                chunk = handle.read(self.block_bytes)
                if not chunk:
                    return
                if not chunk.endswith(b"\n"):
                    chunk += handle.readline()
                last = position + len(chunk)
                if last > end:
                    # Keep the lines that begin before `end`.
                    cut = chunk.find(b"\n", end - 1 - position)
                    if cut != -1:
                        chunk = chunk[: cut + 1]
                yield self._block(path, position, chunk)
                position += len(chunk)

    def _block(self, path: str, offset: int, chunk: bytes) -> RecordBlock:
        if self.encoding is None:
            values: list[Any] = chunk.split(b"\n")
        else:
            try:
                values = chunk.decode(self.encoding).split("\n")
            except UnicodeDecodeError as error:
                raise InputDecodeError(path, offset + error.start, str(error)) from None
        if chunk.endswith(b"\n"):
            values.pop()
        return RecordBlock(path=path, offset=offset, keys=None, values=values, nbytes=len(chunk))

    def record_offsets(self, block: RecordBlock) -> list[int]:
        offsets = []
        position = block.offset
        for value in block.values:
            offsets.append(position)
            size = len(value) if self.encoding is None else len(value.encode(self.encoding))
            position += size + 1
        return offsets


class WholeFiles:
    """One record per file: key the path, value the whole content (``str`` or
    ``bytes``). Not splittable."""

    splittable = False

    def __init__(self, encoding: str | None = "utf-8") -> None:
        self.encoding = encoding

    def read(self, path: str, start: int, end: int) -> Iterator[RecordBlock]:
        with open(path, "rb") as handle:
            data = handle.read()
        value: Any = data
        if self.encoding is not None:
            try:
                value = data.decode(self.encoding)
            except UnicodeDecodeError as error:
                raise InputDecodeError(path, error.start, str(error)) from None
        yield RecordBlock(path=path, offset=0, keys=[path], values=[value], nbytes=len(data))

    def record_offsets(self, block: RecordBlock) -> list[int]:
        return [0]


class MsgpackRecords:
    """Files of msgpack chunks, each an array of ``[key, value]`` pairs: the
    msgpack output format, and how one step's output feeds the next. Not
    splittable; a record's "offset" is its ordinal in the file."""

    splittable = False

    def read(self, path: str, start: int, end: int) -> Iterator[RecordBlock]:
        ordinal = 0
        with open(path, "rb") as handle:
            unpacker = msgpack.Unpacker(handle, raw=False, use_list=False, strict_map_key=False,
                                        max_buffer_size=1 << 30)
            for chunk in unpacker:
                keys = [pair[0] for pair in chunk]
                values = [pair[1] for pair in chunk]
                yield RecordBlock(path=path, offset=ordinal, keys=keys, values=values, nbytes=0)
                ordinal += len(chunk)

    def record_offsets(self, block: RecordBlock) -> list[int]:
        return list(range(block.offset, block.offset + len(block.values)))


class InputDecodeError(Exception):
    """Input bytes that the format cannot decode, with where they are."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path} at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset


# ------------------------------------------------------------------- outputs


class OutputFormat(Protocol):
    """How reducers' output is written to a part file."""

    name: str

    def write(self, handle: BinaryIO, pairs: Sequence[tuple[Any, Any]]) -> None:
        """Append ``pairs`` (in order) to the open part file."""
        ...


_KEY = itemgetter(0)
_VALUE = itemgetter(1)


def _render(value: Any) -> bytes:
    kind = type(value)
    if kind is str:
        encoded: bytes = value.encode("utf-8")
        return encoded
    if kind is bytes:
        return bytes(value)
    if kind is int or kind is float:
        return repr(value).encode()
    return json.dumps(value, ensure_ascii=False, default=_json_default).encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot render {type(value).__name__} as text")


class TextOutput:
    """One line per pair: ``key<TAB>value``, or just ``key`` when the value is None.
    str and bytes are written as they are, numbers with ``repr``, anything else as
    JSON."""

    name = "text"

    def write(self, handle: BinaryIO, pairs: Sequence[tuple[Any, Any]]) -> None:
        if not pairs:
            return
        key_kinds = set(map(type, map(_KEY, pairs)))
        value_kinds = set(map(type, map(_VALUE, pairs)))
        if value_kinds == {type(None)} and key_kinds == {bytes}:
            handle.write(b"\n".join(map(_KEY, pairs)) + b"\n")
            return
        if key_kinds == {str} and value_kinds <= {int, str}:
            handle.write("".join([f"{key}\t{value}\n" for key, value in pairs]).encode("utf-8"))
            return
        # The common shapes are formatted in bulk: str keys with str/int/None
        # values as text encoded once per batch, bytes keys with None values as
        # they are; anything else goes through _render.
        out: list[bytes] = []
        text: list[str] = []
        for key, value in pairs:
            kind = type(key)
            if kind is str and (type(value) is int or type(value) is str):
                text.append(f"{key}\t{value}\n")
                continue
            if kind is str and value is None:
                text.append(key + "\n")
                continue
            if text:
                out.append("".join(text).encode("utf-8"))
                text = []
            if kind is bytes and value is None:
                out.append(key + b"\n")
            else:
                line = _render(key) if value is None else _render(key) + b"\t" + _render(value)
                out.append(line + b"\n")
        if text:
            out.append("".join(text).encode("utf-8"))
        handle.write(b"".join(out))

    def write_keys(self, handle: BinaryIO, keys: list[Any]) -> None:
        """``write`` of pairs whose values are all None, given as their keys (a
        sort's output): bytes keys are written as they are, one per line."""
        if not keys:
            return
        if set(map(type, keys)) == {bytes}:
            handle.write(b"\n".join(keys))
            handle.write(b"\n")
            return
        self.write(handle, list(zip(keys, itertools.repeat(None))))


class MsgpackOutput:
    """Chunks of msgpack ``[key, value]`` pairs (read back by ``MsgpackRecords``)."""

    name = "msgpack"

    def write(self, handle: BinaryIO, pairs: Sequence[tuple[Any, Any]]) -> None:
        if pairs:
            handle.write(msgpack.packb(list(pairs), use_bin_type=True))
