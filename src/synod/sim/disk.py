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

A ``SaveSnapshot`` joins the same queue, after the Persists returned before it,
with its WAL *position*: the index the next record appended after those Persists
gets. When the batch holding it is durable, the snapshot is written atomically to
``snap/`` under that position (``SnapshotStore``), the log is truncated below the
position (``truncate_prefix``: whole sealed segments only) and older snapshots are
deleted (two are kept); then its ``then`` effects run. At ``open`` the newest
snapshot that verifies and that the log still reaches is returned with the
records from its position on. The simulator runs an event at a time, so a crash
falls before the snapshot is written or after it is written (before or after the
truncation); a crash never tears it (a torn snapshot file is a storage test).

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

from synod.core.effects import Effect, Recovered, SaveSnapshot, frame_chunks
from synod.storage import (
    AppendFile,
    CommitBatch,
    FileSystemStatistics,
    GroupCommit,
    SimDisk,
    SimDiskConfig,
    SnapshotStore,
    WalConfig,
    WriteAheadLog,
)
from synod.storage.snapshot_log import SNAPSHOT_DIRECTORY, PendingSnapshot, recover_snapshot

WAL_DIRECTORY = "wal"

Then = tuple[Effect, ...]


Token = Then | PendingSnapshot


def save_snapshot(store: SnapshotStore, log: WriteAheadLog, pending: PendingSnapshot) -> int:
    """Write ``pending`` atomically, then drop the log records it covers and the
    snapshots before it. Every record below its position must be durable.
    Returns the log's new first index. Shared by both drivers."""
    store.write(pending.position, frame_chunks(pending.effect.chunks))
    first = log.truncate_prefix(pending.position)
    store.retain()
    return first


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
        self._commit: GroupCommit[Token] | None = None
        self._snapshots: SnapshotStore | None = None
        #: WAL index the next submitted record will get (valid while open).
        self._next_position = 1
        #: Every record appended since the disk was new, minus what crashes lost
        #: and what snapshots covered: record i has WAL index ``_base + i``.
        self._appended: list[bytes] = []
        self._base = 1
        #: How many leading records of ``_appended`` are known durable.
        self._synced_count = 0
        #: Snapshots written and WAL truncations that removed records.
        self.snapshots_saved = 0

    @property
    def appended_count(self) -> int:
        return len(self._appended)

    @property
    def synced_count(self) -> int:
        return self._synced_count

    @property
    def is_open(self) -> bool:
        return self._log is not None

    def records_ever(self) -> int:
        """WAL index of the newest record: every record this disk ever kept."""
        return self._require_log().last_index

    def log_records(self) -> int:
        """How many records the open log holds (what truncation bounds)."""
        log = self._require_log()
        return log.last_index - log.first_index + 1

    def open(self) -> Recovered:
        """Open the log and snapshots (at start or restart) and return what they
        recovered, after checking the records against the shadow
        (``StorageViolation``)."""
        if self._log is not None:
            raise AssertionError(f"{self.node}: log opened twice")
        log, recovered = WriteAheadLog.open(self._files, WAL_DIRECTORY, self.wal_config)
        records = tuple(recovered)
        first = log.first_index
        if self.check:
            self._check_recovery(first, records)
        store = SnapshotStore(self.fs, SNAPSHOT_DIRECTORY)
        found = recover_snapshot(store, first, log.last_index)
        self._log = log
        self._snapshots = store
        self._commit = GroupCommit()
        self._next_position = log.last_index + 1
        self._appended = list(records)
        self._base = first
        # WriteAheadLog.open makes everything it returns durable.
        self._synced_count = len(records)
        if found is None:
            return Recovered(records=records)
        position, chunks = found
        return Recovered(records=records[position - first:], snapshot=chunks)

    def _check_recovery(self, first: int, records: tuple[bytes, ...]) -> None:
        # Records below the shadow's base were covered by a snapshot (a crash may
        # undo a truncation); the rest must match what was appended.
        skip = max(0, self._base - first)
        records = records[skip:]
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
        self._next_position += len(records)

    def submit_snapshot(self, effect: SaveSnapshot) -> None:
        """Queue a SaveSnapshot behind every Persist submitted before it."""
        self._require_commit().submit((), PendingSnapshot(self._next_position, effect))

    def start_batch(self) -> CommitBatch[Token] | None:
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

    def finish_batch(self, batch: CommitBatch[Token]) -> tuple[Then, ...]:
        """The fsync latency has passed: carry out the held fsyncs, then the
        batch's snapshots; return the batch's ``then`` effects in submission order."""
        log = self._require_log()
        log.sync()
        self._files.release()
        self._synced_count = len(self._appended)
        thens: list[Then] = []
        for token in self._require_commit().batch_durable(batch):
            if isinstance(token, PendingSnapshot):
                assert self._snapshots is not None
                first = save_snapshot(self._snapshots, log, token)
                self._files.release()
                self.snapshots_saved += 1
                if first > self._base:
                    del self._appended[: first - self._base]
                    self._synced_count -= first - self._base
                    self._base = first
                thens.append(token.effect.then)
            else:
                thens.append(token)
        return tuple(thens)

    def crash(self, rng: random.Random) -> None:
        """Power loss: log and queue are gone; the disk loses what was not fsynced."""
        self._log = None
        self._commit = None
        self._snapshots = None
        self._files.forget()
        self.fs.crash(rng)

    def _require_log(self) -> WriteAheadLog:
        if self._log is None:
            raise AssertionError(f"{self.node}: disk used while the node is down")
        return self._log

    def _require_commit(self) -> GroupCommit[Token]:
        if self._commit is None:
            raise AssertionError(f"{self.node}: disk used while the node is down")
        return self._commit
