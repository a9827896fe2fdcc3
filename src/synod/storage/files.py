"""The one small file interface everything durable in synod goes through.

Theory of operation
-------------------
Durable state (the write-ahead log, snapshots) is written through a
``FileSystem``: a handful of calls on POSIX-style relative paths
(``"wal/wal-00000000000000000001.seg"``), each with the crash semantics of a
real disk. Two implementations keep the same promises:

* ``synod.storage.realfs.RealFileSystem`` -- real files under a root directory,
  with ``os.fsync`` on files and on directories;
* ``synod.storage.simdisk.SimDisk`` -- an in-memory disk driven by the simulator,
  which on ``crash(rng)`` loses, keeps, tears or garbles exactly what a power loss
  may lose, keep, tear or garble.

The promises a caller may rely on, and nothing more:

1. ``AppendFile.write`` appends to the file (it is opened for appending); the
   bytes are readable at once but **not durable** until ``AppendFile.fsync()``
   returns. A crash may lose any suffix of the unsynced writes, and the last
   write that survives may be torn: a later sector kept while an earlier one is
   lost, zero-filled or garbage.
2. ``fsync()`` makes the file's *content* (including a ``truncate``) durable, not
   its *name*: ``create``, ``rename``, ``remove`` and ``mkdir`` become durable
   only after ``fsync_dir`` of the directory holding the name (a crash before it
   may undo them, in order).
3. ``rename`` replaces ``dst`` atomically: after a crash the name refers to the
   old file or the new one, never to a mix. Both names must be in the same
   directory (``InvalidPath`` otherwise): that is all synod needs, and it keeps
   the promise a single directory fsync can make.

Paths are relative to the file system's root, use ``/`` and never contain ``..``
or empty parts; the root itself is ``""``. ``clean_path`` checks this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from synod.storage.errors import InvalidPath


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSystemStatistics:
    """A snapshot of what a file system has done since it was built."""

    #: Bytes handed to ``AppendFile.write``.
    bytes_written: int
    #: ``AppendFile.fsync`` calls.
    fsyncs: int
    #: ``fsync_dir`` calls.
    dir_fsyncs: int
    #: Simulated power losses (always 0 on real files).
    crashes: int = 0


class AppendFile(Protocol):
    """A file open for appending. ``size`` counts every byte written so far."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...

    def write(self, data: bytes) -> None:
        """Append ``data`` (not durable until ``fsync``)."""
        ...

    def fsync(self) -> None:
        """Make every byte written so far, and any truncate, durable."""
        ...

    def close(self) -> None:
        """Release the handle (does not fsync). Idempotent."""
        ...


class FileSystem(Protocol):
    """The file operations synod's storage needs (see the module comment)."""

    def open_append(self, path: str) -> AppendFile:
        """Open ``path`` for appending, creating it empty if it does not exist."""
        ...

    def create(self, path: str) -> AppendFile:
        """Create ``path`` empty (truncating an existing file) and open it for appending."""
        ...

    def read(self, path: str) -> bytes:
        """The whole current content of ``path`` (``FileNotFoundError`` if absent)."""
        ...

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``path`` from ``offset`` (short at end of file)."""
        ...

    def size(self, path: str) -> int:
        """The current size of ``path`` in bytes."""
        ...

    def exists(self, path: str) -> bool:
        """True if ``path`` names a file or a directory."""
        ...

    def listdir(self, directory: str) -> list[str]:
        """The names in ``directory``, sorted."""
        ...

    def mkdir(self, directory: str) -> None:
        """Create ``directory`` and any missing parents (no error if it exists)."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst`` in the same directory, replacing
        ``dst`` if it exists."""
        ...

    def remove(self, path: str) -> None:
        """Remove the file ``path``."""
        ...

    def fsync_dir(self, directory: str) -> None:
        """Make the creates, renames and removes of names in ``directory`` durable."""
        ...

    def truncate(self, path: str, size: int) -> None:
        """Cut ``path`` to ``size`` bytes (durable after an fsync of the file)."""
        ...

    def statistics(self) -> FileSystemStatistics: ...


def clean_path(path: str) -> str:
    """Return ``path`` if it is a clean relative POSIX path, else raise ``InvalidPath``.

    ``""`` is the root. No leading ``/``, no ``.`` or ``..`` parts, no empty parts,
    no NUL: storage paths never leave the root and have one spelling each.
    """
    if path == "":
        return path
    if "\x00" in path or "\\" in path:
        raise InvalidPath(f"invalid storage path {path!r}")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidPath(f"invalid storage path {path!r}")
    return path


def parent_of(path: str) -> str:
    """The directory holding ``path`` (``""`` for a name in the root)."""
    head, _sep, _tail = clean_path(path).rpartition("/")
    return head


def same_directory(src: str, dst: str) -> None:
    """Raise ``InvalidPath`` unless ``src`` and ``dst`` are in one directory."""
    if parent_of(src) != parent_of(dst):
        raise InvalidPath(f"rename {src!r} -> {dst!r} crosses directories")


def join(directory: str, name: str) -> str:
    """``directory/name``, or ``name`` when ``directory`` is the root."""
    return clean_path(f"{directory}/{name}" if directory else name)
