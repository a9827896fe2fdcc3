"""Atomic snapshot files, written and read as streams of chunks.

Theory of operation
-------------------
A snapshot is the state of a state machine as of a log index. It may be bigger
than memory, so it is written from an iterable of chunks and read back as an
iterator of chunks; neither side ever holds more than one chunk
(``chunk_bytes_max``).

Writing is the classic atomic-replace sequence, each step for a reason:

1. write ``snap-<index>.tmp`` (a name no reader trusts);
2. fsync it -- its content is durable before any name points at it;
3. rename it to ``snap-<index>.snap`` -- atomic: the final name refers to a
   complete file or to nothing;
4. fsync the directory -- the rename itself survives a power loss.

A crash anywhere leaves either no ``snap-<index>.snap`` or a complete one.
Leftover ``.tmp`` files are removed when a store is opened.

The file format lets a reader detect damage (a bad sector, a truncated copy)::

    header   magic "SYNODSNP" | index (u64) | crc32 of the previous 16 bytes
    chunk*   length (u32) | crc32(length + data) (u32) | data
    trailer  0xFFFFFFFF | crc32 (u32) of what follows | chunks (u64) | bytes (u64)
             | crc32 of all chunk data (u32)

A damaged snapshot raises ``StorageCorruption`` naming the file and offset, from
``verify``, ``latest`` and ``read`` (which checks each chunk before yielding it,
and the trailer at the end). It is never silently skipped: a log may already be
truncated up to it, so falling back to an older snapshot could lose data; the
caller decides.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from synod.core.errors import ConfigError
from synod.storage.errors import StorageCorruption
from synod.storage.files import FileSystem, clean_path, join, parent_of

SNAPSHOT_MAGIC = b"SYNODSNP"
_HEADER = struct.Struct(">8sQI")
_CHUNK_HEADER = struct.Struct(">II")
_TRAILER_BODY = struct.Struct(">QQI")
_END_MARK = 0xFFFFFFFF

_FINAL_NAME = re.compile(r"^snap-(\d{20})\.snap$")
_TEMP_NAME = re.compile(r"^snap-(\d{20})\.tmp$")

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotConfig:
    """How snapshots are written and how many are kept."""

    #: Largest chunk stored (and so held in memory when reading), in bytes. Bigger
    #: input chunks are split. 1 MiB amortises the 8-byte chunk header and CRC call.
    chunk_bytes_max: int = 1 * MiB
    #: Snapshots kept by ``retain()``: the newest, plus one older in case the newest
    #: turns out damaged and the log still reaches back to the older one.
    keep_count: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_bytes_max < _END_MARK:
            raise ConfigError(
                f"SnapshotConfig.chunk_bytes_max must be in [1, 2^32-1), got {self.chunk_bytes_max}"
            )
        if self.keep_count < 1:
            raise ConfigError(f"SnapshotConfig.keep_count must be >= 1, got {self.keep_count}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotInfo:
    """A snapshot file: the log index it covers and where it is."""

    index: int
    path: str
    size_bytes: int


def snapshot_name(index: int) -> str:
    return f"snap-{index:020d}.snap"


def _temp_name(index: int) -> str:
    return f"snap-{index:020d}.tmp"


class SnapshotStore:
    """Snapshots in one directory of a ``FileSystem`` (see the module comment)."""

    def __init__(self, fs: FileSystem, directory: str, config: SnapshotConfig | None = None) -> None:
        self._fs = fs
        self._directory = clean_path(directory)
        self.config = config if config is not None else SnapshotConfig()
        self._make_directory()
        leftovers = [n for n in fs.listdir(self._directory) if _TEMP_NAME.match(n)]
        for name in leftovers:
            fs.remove(join(self._directory, name))
        if leftovers:
            fs.fsync_dir(self._directory)

    def _make_directory(self) -> None:
        missing: list[str] = []
        path = self._directory
        while path and not self._fs.exists(path):
            missing.append(path)
            path = parent_of(path)
        if missing:
            self._fs.mkdir(self._directory)
            for created in reversed(missing):
                self._fs.fsync_dir(parent_of(created))

    def write(self, index: int, chunks: Iterable[bytes]) -> SnapshotInfo:
        """Write the snapshot at ``index`` atomically from ``chunks``; replaces an
        existing snapshot at the same index. Durable when this returns."""
        if index < 0:
            raise ValueError(f"snapshot index must be >= 0, got {index}")
        temp = join(self._directory, _temp_name(index))
        final = join(self._directory, snapshot_name(index))
        handle = self._fs.create(temp)
        try:
            body = struct.pack(">8sQ", SNAPSHOT_MAGIC, index)
            handle.write(body + struct.pack(">I", zlib.crc32(body)))
            count = total = running = 0
            step = self.config.chunk_bytes_max
            for chunk in chunks:
                for start in range(0, len(chunk), step):
                    piece = bytes(chunk[start : start + step])
                    length = struct.pack(">I", len(piece))
                    handle.write(length + struct.pack(">I", zlib.crc32(piece, zlib.crc32(length))))
                    handle.write(piece)
                    running = zlib.crc32(piece, running)
                    count += 1
                    total += len(piece)
            trailer = _TRAILER_BODY.pack(count, total, running)
            handle.write(struct.pack(">II", _END_MARK, zlib.crc32(trailer)) + trailer)
            handle.fsync()
            size = handle.size
        finally:
            handle.close()
        self._fs.rename(temp, final)
        self._fs.fsync_dir(self._directory)
        return SnapshotInfo(index=index, path=final, size_bytes=size)

    def snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot file, oldest index first (names only; not verified)."""
        infos = []
        for name in self._fs.listdir(self._directory):
            match = _FINAL_NAME.match(name)
            if match:
                path = join(self._directory, name)
                infos.append(SnapshotInfo(index=int(match.group(1)), path=path,
                                          size_bytes=self._fs.size(path)))
        return sorted(infos, key=lambda info: info.index)

    def latest(self) -> SnapshotInfo | None:
        """The newest snapshot, verified; None if there is none. Raises
        ``StorageCorruption`` if it is damaged."""
        infos = self.snapshots()
        if not infos:
            return None
        self.verify(infos[-1])
        return infos[-1]

    def verify(self, info: SnapshotInfo) -> None:
        """Read the whole snapshot and check every CRC; raise ``StorageCorruption``."""
        for _chunk in self.read(info):
            pass

    def read(self, info: SnapshotInfo) -> Iterator[bytes]:
        """Yield the snapshot's chunks, each checked before it is yielded; the
        trailer (count, size, CRC of everything) is checked at the end."""
        path = info.path
        fs = self._fs
        header = fs.read_range(path, 0, _HEADER.size)
        if len(header) < _HEADER.size:
            raise StorageCorruption(path, 0, "short snapshot header")
        magic, index, crc = _HEADER.unpack(header)
        if magic != SNAPSHOT_MAGIC or crc != zlib.crc32(header[:16]):
            raise StorageCorruption(path, 0, "bad snapshot header")
        if index != info.index:
            raise StorageCorruption(path, 8, f"header says index {index}, name says {info.index}")
        offset = _HEADER.size
        count = total = running = 0
        while True:
            head = fs.read_range(path, offset, _CHUNK_HEADER.size)
            if len(head) < _CHUNK_HEADER.size:
                raise StorageCorruption(path, offset, "snapshot ends without its trailer")
            length, crc = _CHUNK_HEADER.unpack(head)
            if length == _END_MARK:
                break
            if length > self.config.chunk_bytes_max:
                raise StorageCorruption(path, offset, f"chunk length {length} over the bound")
            data = fs.read_range(path, offset + _CHUNK_HEADER.size, length)
            if len(data) < length:
                raise StorageCorruption(path, offset, "chunk runs past the end of the file")
            if crc != zlib.crc32(data, zlib.crc32(head[:4])):
                raise StorageCorruption(path, offset, "chunk CRC mismatch")
            running = zlib.crc32(data, running)
            count += 1
            total += length
            offset += _CHUNK_HEADER.size + length
            yield data
        body = fs.read_range(path, offset + _CHUNK_HEADER.size, _TRAILER_BODY.size + 1)
        if len(body) != _TRAILER_BODY.size:
            raise StorageCorruption(path, offset, "trailer is short or followed by data")
        if crc != zlib.crc32(body) or _TRAILER_BODY.unpack(body) != (count, total, running):
            raise StorageCorruption(path, offset, "trailer does not match the chunks")

    def retain(self, keep_count: int | None = None) -> list[SnapshotInfo]:
        """Delete all but the newest ``keep_count`` snapshots (default from the
        config); returns those deleted."""
        keep = self.config.keep_count if keep_count is None else keep_count
        if keep < 1:
            raise ValueError(f"keep_count must be >= 1, got {keep}")
        infos = self.snapshots()
        doomed = infos[:-keep]
        for info in doomed:
            self._fs.remove(info.path)
        if doomed:
            self._fs.fsync_dir(self._directory)
        return doomed
