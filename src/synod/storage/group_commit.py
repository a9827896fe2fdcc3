"""Group commit for ``Persist`` effects, sans-IO: many persists, one fsync.

Theory of operation
-------------------
A core returns ``Persist(records, then)``: make ``records`` durable, *then*
carry out ``then``; persists become durable in the order they were returned.
An fsync costs milliseconds, so a driver must not pay one per persist. It hands
each persist to a ``GroupCommit`` and follows its answers:

* ``submit(records, token)`` queues a persist. ``token`` is opaque to this
  class: the driver's handle for what to do once it is durable (the ``then``
  effects, a future to resolve).
* ``next_batch()`` returns a ``CommitBatch`` -- "start an fsync now for these" --
  when no fsync is in flight and something is queued; otherwise ``None``. The
  batch holds the queued persists in order (up to ``batch_bytes_max``, always at
  least one). The driver appends ``batch.records`` to the write-ahead log and
  starts ``sync()`` (inline in the simulator, in a worker thread in the runtime).
* ``batch_durable(batch)`` -- called when that sync returned -- answers "these
  are durable now": the batch's tokens in submission order, to release in that
  order. Then ask ``next_batch()`` again: persists queued meanwhile form the next
  group.

At most one fsync is in flight, so while one runs the next group grows; that is
where the batching comes from, and why durable order equals submission order.
Queued bytes are bounded by ``pending_bytes_max``: past it ``submit`` raises
``StorageFull`` (the driver stops reading input until a batch completes; the
``has_room`` test lets it check first). A persist with no records still gets a
token slot, so its ``then`` effects wait for every earlier persist.

A driver loop, in full::

    def on_persist(effect):
        commit.submit(effect.records, effect.then)
        kick()

    def kick():
        batch = commit.next_batch()
        if batch is not None:
            for record in batch.records:
                wal.append(record)
            start_sync(wal, on_done=lambda: finish(batch))

    def finish(batch):
        for then in commit.batch_durable(batch):
            execute(then)
        kick()
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from synod.core.errors import ConfigError, LocalProtocolError, invariant
from synod.storage.errors import RecordTooLarge, StorageFull

T = TypeVar("T")

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupCommitConfig:
    """Bounds of a group-commit queue."""

    #: Most record bytes queued (not yet in a batch). Past it ``submit`` raises
    #: ``StorageFull``: back-pressure. 64 MiB is several seconds of a busy node's
    #: log at disk speed, so hitting it means the disk cannot keep up.
    pending_bytes_max: int = 64 * MiB
    #: Most record bytes in one batch (one fsync). Bounds the latency a single
    #: fsync adds; a persist bigger than this still forms a batch of its own.
    batch_bytes_max: int = 16 * MiB

    def __post_init__(self) -> None:
        if self.pending_bytes_max < 1:
            raise ConfigError(
                f"GroupCommitConfig.pending_bytes_max must be >= 1, got {self.pending_bytes_max}"
            )
        if self.batch_bytes_max < 1:
            raise ConfigError(
                f"GroupCommitConfig.batch_bytes_max must be >= 1, got {self.batch_bytes_max}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitBatch(Generic[T]):
    """Persists to make durable with one sync: append ``records``, then fsync."""

    number: int
    records: tuple[bytes, ...]
    tokens: tuple[T, ...]
    record_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupCommitStatistics:
    """A snapshot of a group-commit queue's counters."""

    submitted: int
    batches: int
    records: int
    record_bytes: int
    largest_batch_persists: int
    pending_persists: int
    pending_bytes: int
    in_flight: bool
    refused_full: int


@dataclass(frozen=True, slots=True)
class _Queued(Generic[T]):
    records: tuple[bytes, ...]
    token: T
    record_bytes: int


class GroupCommit(Generic[T]):
    """Batches persists into fsyncs, one in flight at a time (see the module comment)."""

    def __init__(self, config: GroupCommitConfig | None = None) -> None:
        self.config = config if config is not None else GroupCommitConfig()
        self._queue: deque[_Queued[T]] = deque()
        self._pending_bytes = 0
        self._in_flight: CommitBatch[T] | None = None
        self._next_number = 1
        self._submitted = 0
        self._batches = 0
        self._records = 0
        self._record_bytes = 0
        self._largest = 0
        self._refused_full = 0

    @property
    def in_flight(self) -> CommitBatch[T] | None:
        """The batch whose sync is running, if any."""
        return self._in_flight

    @property
    def pending_bytes(self) -> int:
        """Record bytes queued and not yet in a batch."""
        return self._pending_bytes

    def has_room(self, record_bytes: int) -> bool:
        """True if a persist of ``record_bytes`` would be accepted now."""
        return self._pending_bytes + record_bytes <= self.config.pending_bytes_max

    def submit(self, records: Sequence[bytes], token: T) -> None:
        """Queue a persist. Raises ``StorageFull`` when the queue is full and
        ``RecordTooLarge`` when the persist could never fit."""
        size = sum(len(record) for record in records)
        if size > self.config.pending_bytes_max:
            raise RecordTooLarge(
                f"persist of {size} bytes is over pending_bytes_max ({self.config.pending_bytes_max})"
            )
        if not self.has_room(size):
            self._refused_full += 1
            raise StorageFull(
                f"group commit holds {self._pending_bytes} bytes; "
                f"pending_bytes_max is {self.config.pending_bytes_max}"
            )
        self._queue.append(_Queued(tuple(records), token, size))
        self._pending_bytes += size
        self._submitted += 1

    def next_batch(self) -> CommitBatch[T] | None:
        """The next batch to sync, or None (an fsync is in flight, or nothing is queued)."""
        if self._in_flight is not None or not self._queue:
            return None
        records: list[bytes] = []
        tokens: list[T] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if tokens and size + head.record_bytes > self.config.batch_bytes_max:
                break
            self._queue.popleft()
            records.extend(head.records)
            tokens.append(head.token)
            size += head.record_bytes
        self._pending_bytes -= size
        batch = CommitBatch(number=self._next_number, records=tuple(records),
                            tokens=tuple(tokens), record_bytes=size)
        self._next_number += 1
        self._in_flight = batch
        return batch

    def batch_durable(self, batch: CommitBatch[T]) -> tuple[T, ...]:
        """The sync of ``batch`` completed: return its tokens, in submission order."""
        if self._in_flight is None or batch.number != self._in_flight.number:
            raise LocalProtocolError(
                f"batch {batch.number} is not the batch in flight "
                f"({None if self._in_flight is None else self._in_flight.number})"
            )
        self._in_flight = None
        self._batches += 1
        self._records += len(batch.records)
        self._record_bytes += batch.record_bytes
        self._largest = max(self._largest, len(batch.tokens))
        return batch.tokens

    def statistics(self) -> GroupCommitStatistics:
        return GroupCommitStatistics(
            submitted=self._submitted,
            batches=self._batches,
            records=self._records,
            record_bytes=self._record_bytes,
            largest_batch_persists=self._largest,
            pending_persists=len(self._queue),
            pending_bytes=self._pending_bytes,
            in_flight=self._in_flight is not None,
            refused_full=self._refused_full,
        )

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` if the queue's bookkeeping is inconsistent."""
        invariant(self._pending_bytes == sum(q.record_bytes for q in self._queue),
                  "pending_bytes matches the queue")
        invariant(self._pending_bytes <= self.config.pending_bytes_max, "queue within its bound")
