"""Helpers shared by the storage tests."""

from __future__ import annotations

from synod.storage.files import FileSystem
from synod.storage.realfs import RealFileSystem
from synod.storage.simdisk import SimDisk


def overwrite(fs: FileSystem, path: str, offset: int, data: bytes) -> None:
    """Damage durable bytes in place (a bad sector), on either file system."""
    if isinstance(fs, SimDisk):
        fs.damage(path, offset, data)
    else:
        assert isinstance(fs, RealFileSystem)
        with (fs.root / path).open("r+b") as handle:
            handle.seek(offset)
            handle.write(data)


def append_raw(fs: FileSystem, path: str, data: bytes) -> None:
    """Append bytes to a file behind the log's back (what a torn write leaves)."""
    handle = fs.open_append(path)
    handle.write(data)
    handle.fsync()
    handle.close()
