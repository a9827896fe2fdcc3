"""``SimDisk``: an in-memory disk with the crash semantics of a real one.

Theory of operation
-------------------
FoundationDB's simulator taught us that storage code is only as good as the
disk it was tested against: a disk that never loses anything hides every missing
fsync. ``SimDisk`` implements the ``FileSystem`` interface
(``synod.storage.files``) in memory and keeps, for every file (an *inode*):

* ``data`` -- what a read returns now;
* ``durable`` -- the content as of the last ``fsync`` of that file;
* ``unsynced`` -- the writes and truncates since that fsync, in order.

and for every directory the list of name operations (link a file or a
subdirectory under a name, unlink a name) since its last ``fsync_dir``.

``crash(rng)`` is a power loss. For every directory it keeps a random prefix of
its un-fsynced name operations (a journalling file system commits them in order,
so a crash may undo the latest ones, never keep a later one and lose an earlier
one). Then, for every file still reachable, it keeps a random prefix of its
unsynced operations, and with probability ``tear_probability`` tears the last
write it kept, in one of two ways:

* *short*: only a prefix of the write's bytes reached the disk;
* *sectors*: the file's size grew to the full write, but each
  ``sector_bytes``-aligned sector of it independently holds the new bytes, the
  old ones (zeros past the old end of file), or garbage -- so a later sector can
  survive while an earlier one is lost, as on a real drive whose write cache
  reorders.

Everything is decided by the ``random.Random`` passed in, and iteration is in a
fixed order (directory names sorted, inodes by number), so the same seed gives
the same disk after the crash. Open handles die with the crash (using one raises
``FileClosed``). This module does no I/O: the simulator drives it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from synod.core.errors import ConfigError, invariant
from synod.storage.errors import FileClosed
from synod.storage.files import (
    AppendFile,
    FileSystemStatistics,
    clean_path,
    parent_of,
    same_directory,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimDiskConfig:
    """How harsh a simulated power loss is."""

    #: The unit in which a torn write keeps or loses data, in bytes. 512 is the
    #: sector of most drives (4096 for "advanced format" ones); smaller values tear
    #: records into more pieces and so test more interleavings.
    sector_bytes: int = 512
    #: Probability that the last unsynced write kept by a crash is torn. High on
    #: purpose: a torn tail is the case recovery code most often gets wrong.
    tear_probability: float = 0.5

    def __post_init__(self) -> None:
        if self.sector_bytes < 1:
            raise ConfigError(f"SimDiskConfig.sector_bytes must be >= 1, got {self.sector_bytes}")
        if not 0.0 <= self.tear_probability <= 1.0:
            raise ConfigError(
                f"SimDiskConfig.tear_probability must be in [0, 1], got {self.tear_probability}"
            )


@dataclass(frozen=True, slots=True)
class _Write:
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Truncate:
    size: int


class _Inode:
    __slots__ = ("data", "durable", "number", "unsynced")

    def __init__(self, number: int) -> None:
        self.number = number
        self.data = bytearray()
        self.durable = b""
        self.unsynced: list[_Write | _Truncate] = []


class _Directory:
    """Marker for a directory entry in the namespace."""

    __slots__ = ()


_DIRECTORY = _Directory()

_Node = _Inode | _Directory


@dataclass(frozen=True, slots=True)
class _Link:
    path: str
    node: _Node


@dataclass(frozen=True, slots=True)
class _Unlink:
    path: str


def _apply(content: bytearray, operation: _Write | _Truncate) -> None:
    match operation:
        case _Write(offset=offset, data=data):
            if len(content) < offset:
                content.extend(bytes(offset - len(content)))
            content[offset : offset + len(data)] = data
        case _Truncate(size=size):
            if size <= len(content):
                del content[size:]
            else:
                content.extend(bytes(size - len(content)))


class SimFile:
    """A handle on a ``SimDisk`` file, open for appending."""

    __slots__ = ("_closed", "_disk", "_generation", "_inode", "_path")

    def __init__(self, disk: SimDisk, inode: _Inode, path: str) -> None:
        self._disk = disk
        self._inode = inode
        self._path = path
        self._generation = disk._generation
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    @property
    def size(self) -> int:
        return len(self._inode.data)

    def _check(self) -> None:
        if self._closed:
            raise FileClosed(f"{self._path} is closed")
        if self._generation != self._disk._generation:
            raise FileClosed(f"{self._path} was open when the disk crashed")

    def write(self, data: bytes) -> None:
        self._check()
        inode = self._inode
        inode.unsynced.append(_Write(len(inode.data), bytes(data)))
        inode.data.extend(data)
        self._disk._bytes_written += len(data)

    def fsync(self) -> None:
        self._check()
        self._inode.durable = bytes(self._inode.data)
        self._inode.unsynced.clear()
        self._disk._fsyncs += 1

    def close(self) -> None:
        self._closed = True


class SimDisk:
    """An in-memory ``FileSystem`` that can lose power (see the module comment)."""

    def __init__(self, config: SimDiskConfig | None = None) -> None:
        self.config = config if config is not None else SimDiskConfig()
        self._names: dict[str, _Node] = {"": _DIRECTORY}
        self._durable_names: dict[str, _Node] = {"": _DIRECTORY}
        self._directory_operations: dict[str, list[_Link | _Unlink]] = {}
        self._next_inode = 1
        self._generation = 0
        self._bytes_written = 0
        self._fsyncs = 0
        self._dir_fsyncs = 0
        self._crashes = 0

    # -- lookups ---------------------------------------------------------------

    def _file(self, path: str) -> _Inode:
        node = self._names.get(clean_path(path))
        if node is None:
            raise FileNotFoundError(path)
        if not isinstance(node, _Inode):
            raise IsADirectoryError(path)
        return node

    def _require_directory(self, directory: str) -> None:
        node = self._names.get(clean_path(directory))
        if node is None:
            raise FileNotFoundError(directory)
        if not isinstance(node, _Directory):
            raise NotADirectoryError(directory)

    def _record(self, operation: _Link | _Unlink) -> None:
        self._directory_operations.setdefault(parent_of(operation.path), []).append(operation)

    # -- the FileSystem interface ----------------------------------------------

    def open_append(self, path: str) -> AppendFile:
        node = self._names.get(clean_path(path))
        if node is None:
            return self.create(path)
        if not isinstance(node, _Inode):
            raise IsADirectoryError(path)
        return SimFile(self, node, path)

    def create(self, path: str) -> AppendFile:
        node = self._names.get(clean_path(path))
        if isinstance(node, _Directory):
            raise IsADirectoryError(path)
        if isinstance(node, _Inode):
            # O_TRUNC on an existing file: the truncate is content, durable on fsync.
            self.truncate(path, 0)
            return SimFile(self, node, path)
        self._require_directory(parent_of(path))
        inode = _Inode(self._next_inode)
        self._next_inode += 1
        self._names[path] = inode
        self._record(_Link(path, inode))
        return SimFile(self, inode, path)

    def read(self, path: str) -> bytes:
        return bytes(self._file(path).data)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        return bytes(self._file(path).data[offset : offset + length])

    def size(self, path: str) -> int:
        return len(self._file(path).data)

    def exists(self, path: str) -> bool:
        return clean_path(path) in self._names

    def listdir(self, directory: str) -> list[str]:
        self._require_directory(directory)
        prefix = f"{directory}/" if directory else ""
        return sorted(
            name[len(prefix) :]
            for name in self._names
            if name and parent_of(name) == directory
        )

    def mkdir(self, directory: str) -> None:
        clean_path(directory)
        if directory == "":
            return
        node = self._names.get(directory)
        if isinstance(node, _Directory):
            return
        if isinstance(node, _Inode):
            raise FileExistsError(directory)
        self.mkdir(parent_of(directory))
        self._names[directory] = _DIRECTORY
        self._record(_Link(directory, _DIRECTORY))

    def rename(self, src: str, dst: str) -> None:
        same_directory(src, dst)
        inode = self._file(src)
        if isinstance(self._names.get(clean_path(dst)), _Directory):
            raise IsADirectoryError(dst)
        self._require_directory(parent_of(dst))
        if src == dst:
            return
        del self._names[src]
        self._names[dst] = inode
        # Link first: a crash keeps a prefix of the directory's operations, so dst
        # names the old file or the new one, and src may survive as a second
        # name of the new file (rename(2) allows that window; never a lost file).
        self._record(_Link(dst, inode))
        self._record(_Unlink(src))

    def remove(self, path: str) -> None:
        self._file(path)
        del self._names[path]
        self._record(_Unlink(path))

    def fsync_dir(self, directory: str) -> None:
        self._require_directory(directory)
        # The directory's durable listing becomes its current listing.
        for name in [n for n in self._durable_names if n and parent_of(n) == directory]:
            del self._durable_names[name]
        for name, node in self._names.items():
            if name and parent_of(name) == directory:
                self._durable_names[name] = node
        self._directory_operations.pop(directory, None)
        self._dir_fsyncs += 1

    def truncate(self, path: str, size: int) -> None:
        if size < 0:
            raise ValueError(f"bad size {size}")
        inode = self._file(path)
        operation = _Truncate(size)
        _apply(inode.data, operation)
        inode.unsynced.append(operation)

    def statistics(self) -> FileSystemStatistics:
        return FileSystemStatistics(
            bytes_written=self._bytes_written,
            fsyncs=self._fsyncs,
            dir_fsyncs=self._dir_fsyncs,
            crashes=self._crashes,
        )

    # -- faults ----------------------------------------------------------------

    def crash(self, rng: random.Random) -> None:
        """Lose power: keep what is durable, and a random, possibly torn, part of
        what is not (see the module comment). Every open handle dies."""
        for directory in sorted(self._directory_operations):
            operations = self._directory_operations[directory]
            for operation in operations[: rng.randint(0, len(operations))]:
                match operation:
                    case _Link(path=path, node=node):
                        self._durable_names[path] = node
                    case _Unlink(path=path):
                        self._durable_names.pop(path, None)
        self._directory_operations.clear()
        self._drop_orphans()
        inodes = {n.number: n for n in self._durable_names.values() if isinstance(n, _Inode)}
        for number in sorted(inodes):
            self._crash_file(inodes[number], rng)
        self._names = dict(self._durable_names)
        self._generation += 1
        self._crashes += 1

    def _drop_orphans(self) -> None:
        # A name whose directory did not survive is gone with it. Shorter paths
        # first, so a parent is decided before its children.
        for name in sorted(self._durable_names, key=lambda n: (n.count("/"), n)):
            if name and parent_of(name) not in self._durable_names:
                del self._durable_names[name]

    def _crash_file(self, inode: _Inode, rng: random.Random) -> None:
        content = bytearray(inode.durable)
        operations = inode.unsynced
        kept = rng.randint(0, len(operations))
        for position, operation in enumerate(operations[:kept]):
            last = position == kept - 1
            if last and isinstance(operation, _Write) and rng.random() < self.config.tear_probability:
                self._tear(content, operation, rng)
            else:
                _apply(content, operation)
        inode.durable = bytes(content)
        inode.data = content
        inode.unsynced = []

    def _tear(self, content: bytearray, write: _Write, rng: random.Random) -> None:
        if not write.data:
            return
        if rng.random() < 0.5:
            _apply(content, _Write(write.offset, write.data[: rng.randrange(len(write.data))]))
            return
        old = bytes(content)
        end = write.offset + len(write.data)
        _apply(content, _Write(write.offset, write.data))
        sector = self.config.sector_bytes
        for first in range(write.offset - write.offset % sector, end, sector):
            low, high = max(first, write.offset), min(first + sector, end)
            fate = rng.random()
            if fate < 0.5:
                continue  # this sector reached the disk
            if fate < 0.8:
                # Lost: the old bytes, or zeros where the file had none.
                piece = old[low:high]
                content[low:high] = piece + bytes(high - low - len(piece))
            else:
                content[low:high] = rng.randbytes(high - low)
        invariant(len(content) >= end, "a torn write keeps the file's new size")

    def damage(self, path: str, offset: int, data: bytes) -> None:
        """Overwrite durable bytes of ``path`` in place (bit rot, a bad sector):
        a fault injector for tests of corruption detection."""
        inode = self._file(path)
        for content in (inode.data, bytearray(inode.durable)):
            invariant(offset + len(data) <= len(content), "damage stays inside the file")
        inode.data[offset : offset + len(data)] = data
        durable = bytearray(inode.durable)
        durable[offset : offset + len(data)] = data
        inode.durable = bytes(durable)
