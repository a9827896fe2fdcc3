"""The storage layer's error types.

``StorageCorruption`` is the loud one: data that was once durable no longer reads
back as written (a bad CRC in a sealed segment, a damaged snapshot). It names the
file and the byte offset so an operator can look at the damage. The others are
typed refusals of bad input from the caller (a record over the size bound, a full
buffer, a bad path).
"""

from __future__ import annotations

from synod.core.errors import SynodError


class StorageError(SynodError):
    """Base class of the storage layer's errors."""


class StorageCorruption(StorageError):
    """Durable data is damaged. Carries the file (``path``) and byte ``offset``."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class RecordTooLarge(StorageError):
    """A record is bigger than the configured bound (``record_bytes_max``)."""


class StorageFull(StorageError):
    """A bounded in-memory buffer is full: sync (or wait for the fsync in flight)
    before adding more. This is back-pressure, not a bug."""


class InvalidPath(StorageError):
    """A path is not a clean relative POSIX path (absolute, ``..``, empty part)."""


class FileClosed(StorageError):
    """A file handle was used after ``close()`` (or, on a ``SimDisk``, after a crash)."""
