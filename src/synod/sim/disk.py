"""A node's simulated disk: write-ahead log, group commit, fsync latency, and the
storage check.

Theory of operation
-------------------
Each node owns one ``synod.storage.SimDisk`` for its whole life: the disk
survives crashes (that is the point of a disk); the ``WriteAheadLog`` and the
``GroupCommit`` queue on it are volatile and die with the node.

A ``Persist`` effect is ``submit``-ted to the node's ``GroupCommit``. When no
fsync is in flight, ``start_batch`` takes the next batch (every queued persist, up
to the batch bound), appends its records to the log and calls ``flush()``, which
*writes* them to the disk without the final fsync; ``finish_batch``, which the
simulator calls after a simulated fsync latency, calls ``sync()``. So between the two, the batch's bytes sit
on the disk unsynced, and a crash there loses them or tears them, exactly the
window a real power loss hits. Only after ``finish_batch`` do the ``then`` effects
of the batch's persists run (returned in submission order).

On the side, a *shadow* keeps what the node appended and how many of those records
were made durable, so that at every (re)start the simulator checks the storage
layer's promise:

    the recovered records are a prefix of what was appended, and they include
    every record that was fsynced.

A broken promise is a storage bug (or a planted one) and raises
``StorageViolation`` naming the node and the first differing record.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from synod.core.effects import Effect
from synod.storage import (
    AppendFile,
    CommitBatch,
    FileSystemStatistics,
    GroupCommit,
    SimDisk,
    SimDiskConfig,
    WalConfig,
    WriteAheadLog,
)

WAL_DIRECTORY = "wal"

Then = tuple[Effect, ...]


class StorageViolation(AssertionError):
    """Recovery returned something other than a prefix including every synced record."""


class _HeldFile:
    """An ``AppendFile`` whose ``fsync`` may be held back by its ``_HeldSyncs``."""

    def __init__(self, owner: _HeldSyncs, handle: AppendFile) -> None:
        self._owner = owner
        self._handle = handle

    @property
    def path(self) -> str:
        return self._handle.path

    @property
    def size(self) -> int:
        return self._handle.size

    def write(self, data: bytes) -> None:
        self._handle.write(data)

    def fsync(self) -> None:
        self._owner.fsync_or_hold(self._handle.fsync)

    def close(self) -> None:
        self._handle.close()


class _HeldSyncs:
    """The ``FileSystem`` the log runs on: a ``SimDisk`` whose file and directory
    fsyncs are recorded instead of carried out while ``holding`` is on, and
    carried out later, in order, by ``release()``."""

    def __init__(self, disk: SimDisk) -> None:
        self.disk = disk
        self.holding = False
        self._held: list[Callable[[], None]] = []

    def fsync_or_hold(self, fsync: Callable[[], None]) -> None:
        if self.holding:
            self._held.append(fsync)
        else:
            fsync()

    def release(self) -> int:
        """Carry out every held fsync; return how many there were."""
        held, self._held = self._held, []
        for fsync in held:
            fsync()
        return len(held)

    def forget(self) -> None:
        """A crash: the held fsyncs never happen."""
        self._held = []
        self.holding = False

    # -- FileSystem, delegated --------------------------------------------------

    def open_append(self, path: str) -> AppendFile:
        return _HeldFile(self, self.disk.open_append(path))

    def create(self, path: str) -> AppendFile:
        return _HeldFile(self, self.disk.create(path))

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
        self.disk.mkdir(directory)

    def rename(self, src: str, dst: str) -> None:
        self.disk.rename(src, dst)

    def remove(self, path: str) -> None:
        self.disk.remove(path)

    def fsync_dir(self, directory: str) -> None:
        self.fsync_or_hold(lambda: self.disk.fsync_dir(directory))

    def truncate(self, path: str, size: int) -> None:
        self.disk.truncate(path, size)

    def statistics(self) -> FileSystemStatistics:
        return self.disk.statistics()


class NodeDisk:
    """One node's disk, its open log and commit queue (None while it is down), and
    the shadow used by the storage check."""

    def __init__(self, node: str, config: SimDiskConfig | None = None, *, check: bool = True,
                 wal_config: WalConfig | None = None) -> None:
        self.node = node
        self.check = check
        self.wal_config = wal_config
        self.fs = SimDisk(config)
        self._files = _HeldSyncs(self.fs)
        self._log: WriteAheadLog | None = None
        self._commit: GroupCommit[Then] | None = None
        #: Every record appended since the disk was new, minus what crashes lost.
        self._appended: list[bytes] = []
        #: How many leading records of ``_appended`` are known durable.
        self._synced_count = 0

    @property
    def appended_count(self) -> int:
        return len(self._appended)

    @property
    def synced_count(self) -> int:
        return self._synced_count

    @property
    def is_open(self) -> bool:
        return self._log is not None

    def open(self) -> tuple[bytes, ...]:
        """Open the log (at start or restart) and return the recovered records,
        after checking them against the shadow (``StorageViolation``)."""
        if self._log is not None:
            raise AssertionError(f"{self.node}: log opened twice")
        log, recovered = WriteAheadLog.open(self._files, WAL_DIRECTORY, self.wal_config)
        records = tuple(recovered)
        if self.check:
            self._check_recovery(records)
        self._log = log
        self._commit = GroupCommit()
        self._appended = list(records)
        # WriteAheadLog.open makes everything it returns durable.
        self._synced_count = len(records)
        return records

    def _check_recovery(self, records: tuple[bytes, ...]) -> None:
        if len(records) > len(self._appended):
            raise StorageViolation(
                f"{self.node}: recovered {len(records)} records but only "
                f"{len(self._appended)} were appended"
            )
        for index, record in enumerate(records):
            if record != self._appended[index]:
                raise StorageViolation(
                    f"{self.node}: recovered record #{index} differs from the one appended "
                    f"({record[:24]!r}... vs {self._appended[index][:24]!r}...)"
                )
        if len(records) < self._synced_count:
            raise StorageViolation(
                f"{self.node}: recovered {len(records)} records but {self._synced_count} "
                f"were fsynced"
            )

    def submit(self, records: tuple[bytes, ...], then: Then) -> None:
        """Queue a Persist; it becomes durable with a later batch."""
        self._require_commit().submit(records, then)

    def start_batch(self) -> CommitBatch[Then] | None:
        """If no fsync is in flight and persists are queued: append the next batch
        to the log and write it to the disk, holding its fsyncs back. Returns the
        batch (the caller schedules ``finish_batch`` after the fsync latency)."""
        batch = self._require_commit().next_batch()
        if batch is None:
            return None
        log = self._require_log()
        for record in batch.records:
            log.append(record)
            self._appended.append(record)
        # Write the batch now, unsynced: a crash before ``finish_batch`` loses or
        # tears it. ``flush`` itself fsyncs a segment it seals before creating the
        # next one (the log's own ordering rule), so those fsyncs are not held.
        log.flush()
        return batch

    def finish_batch(self, batch: CommitBatch[Then]) -> tuple[Then, ...]:
        """The fsync latency has passed: carry out the held fsyncs; return the
        batch's ``then`` effects in submission order."""
        self._require_log().sync()
        self._files.release()
        self._synced_count = len(self._appended)
        return self._require_commit().batch_durable(batch)

    def crash(self, rng: random.Random) -> None:
        """Power loss: log and queue are gone; the disk loses what was not fsynced."""
        self._log = None
        self._commit = None
        self._files.forget()
        self.fs.crash(rng)

    def _require_log(self) -> WriteAheadLog:
        if self._log is None:
            raise AssertionError(f"{self.node}: disk used while the node is down")
        return self._log

    def _require_commit(self) -> GroupCommit[Then]:
        if self._commit is None:
            raise AssertionError(f"{self.node}: disk used while the node is down")
        return self._commit
