"""``RealFileSystem``: the storage ``FileSystem`` on real files, with real fsyncs.

Every path is resolved under ``root`` after ``clean_path`` has refused absolute
paths and ``..``, so nothing outside the root is ever touched. Writes go straight
to the file descriptor with ``os.write`` (the write-ahead log does its own
buffering), ``fsync`` is ``os.fsync`` and ``fsync_dir`` opens the directory
read-only and fsyncs it, which is what makes a create, rename or remove durable
on Linux (ext4, xfs).
"""

from __future__ import annotations

import os
from pathlib import Path

from synod.storage.errors import FileClosed, InvalidPath
from synod.storage.files import AppendFile, FileSystemStatistics, clean_path, same_directory


class _Counters:
    __slots__ = ("bytes_written", "dir_fsyncs", "fsyncs")

    def __init__(self) -> None:
        self.bytes_written = 0
        self.fsyncs = 0
        self.dir_fsyncs = 0


class RealAppendFile:
    """A real file descriptor opened with ``O_APPEND``."""

    __slots__ = ("_counters", "_fd", "_path", "_size")

    def __init__(self, path: str, fd: int, counters: _Counters) -> None:
        self._path = path
        self._fd: int | None = fd
        self._size = os.fstat(fd).st_size
        self._counters = counters

    @property
    def path(self) -> str:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    def _descriptor(self) -> int:
        if self._fd is None:
            raise FileClosed(f"{self._path} is closed")
        return self._fd

    def write(self, data: bytes) -> None:
        fd = self._descriptor()
        view = memoryview(data)
        while view:
            # os.write may write less than asked (signals, huge buffers): loop.
            written = os.write(fd, view)
            view = view[written:]
        self._size += len(data)
        self._counters.bytes_written += len(data)

    def fsync(self) -> None:
        os.fsync(self._descriptor())
        self._counters.fsyncs += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RealFileSystem:
    """The ``FileSystem`` interface on real files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._counters = _Counters()

    def _real(self, path: str) -> Path:
        return self.root / clean_path(path) if path else self.root

    def _file(self, path: str) -> Path:
        if not path:
            raise InvalidPath("the root is a directory, not a file")
        return self.root / clean_path(path)

    def open_append(self, path: str) -> AppendFile:
        fd = os.open(self._file(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return RealAppendFile(clean_path(path), fd, self._counters)

    def create(self, path: str) -> AppendFile:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC
        fd = os.open(self._file(path), flags, 0o644)
        return RealAppendFile(clean_path(path), fd, self._counters)

    def read(self, path: str) -> bytes:
        return self._file(path).read_bytes()

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        with self._file(path).open("rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def size(self, path: str) -> int:
        return self._file(path).stat().st_size

    def exists(self, path: str) -> bool:
        return self._real(path).exists()

    def listdir(self, directory: str) -> list[str]:
        return sorted(os.listdir(self._real(directory)))

    def mkdir(self, directory: str) -> None:
        self._real(directory).mkdir(parents=True, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        same_directory(src, dst)
        os.replace(self._file(src), self._file(dst))

    def remove(self, path: str) -> None:
        os.remove(self._file(path))

    def fsync_dir(self, directory: str) -> None:
        fd = os.open(self._real(directory), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._counters.dir_fsyncs += 1

    def truncate(self, path: str, size: int) -> None:
        os.truncate(self._file(path), size)

    def statistics(self) -> FileSystemStatistics:
        return FileSystemStatistics(
            bytes_written=self._counters.bytes_written,
            fsyncs=self._counters.fsyncs,
            dir_fsyncs=self._counters.dir_fsyncs,
        )
