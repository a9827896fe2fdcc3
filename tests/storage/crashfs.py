"""A fault-injecting file layer for tests: a ``SimDisk`` that loses power after a
given number of mutating operations, so a test can crash at *every* point of a
sequence (inside a WAL sync, between a snapshot's rename and its directory fsync).

``CrashingFileSystem`` passes every call through to the real ``SimDisk``; when
its budget of mutating operations (write, fsync, create, rename, remove, mkdir,
fsync_dir, truncate) is spent, the next one raises ``PowerLoss`` instead of
happening. The test then calls ``disk.crash(rng)`` and reopens on the bare disk.
"""

from __future__ import annotations

from synod.storage.files import AppendFile, FileSystemStatistics
from synod.storage.simdisk import SimDisk


class PowerLoss(Exception):
    """The simulated power went out before this operation."""


class CrashingFileSystem:
    def __init__(self, disk: SimDisk, operations_max: int | None) -> None:
        self.disk = disk
        self.operations_left = operations_max
        self.operations_done = 0

    def spend(self) -> None:
        if self.operations_left is not None:
            if self.operations_left <= 0:
                raise PowerLoss(f"power lost after {self.operations_done} operations")
            self.operations_left -= 1
        self.operations_done += 1

    def open_append(self, path: str) -> AppendFile:
        self.spend()
        return _CrashingFile(self, self.disk.open_append(path))

    def create(self, path: str) -> AppendFile:
        self.spend()
        return _CrashingFile(self, self.disk.create(path))

    def read(self, path: str) -> bytes:
        return self.disk.read(path)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        return self.disk.read_range(path, offset, length)

    def size(self, path: str) -> int:
        return self.disk.size(path)

    def exists(self, path: str) -> bool:
        return self.disk.exists(path)

    def listdir(self, directory: str) -> list[str]:
        return self.disk.listdir(directory)

    def mkdir(self, directory: str) -> None:
        self.spend()
        self.disk.mkdir(directory)

    def rename(self, src: str, dst: str) -> None:
        self.spend()
        self.disk.rename(src, dst)

    def remove(self, path: str) -> None:
        self.spend()
        self.disk.remove(path)

    def fsync_dir(self, directory: str) -> None:
        self.spend()
        self.disk.fsync_dir(directory)

    def truncate(self, path: str, size: int) -> None:
        self.spend()
        self.disk.truncate(path, size)

    def statistics(self) -> FileSystemStatistics:
        return self.disk.statistics()


class _CrashingFile:
    def __init__(self, owner: CrashingFileSystem, inner: AppendFile) -> None:
        self._owner = owner
        self._inner = inner

    @property
    def path(self) -> str:
        return self._inner.path

    @property
    def size(self) -> int:
        return self._inner.size

    def write(self, data: bytes) -> None:
        self._owner.spend()
        self._inner.write(data)

    def fsync(self) -> None:
        self._owner.spend()
        self._inner.fsync()

    def close(self) -> None:
        self._inner.close()
