"""The closed set of effects a protocol core returns, and the interfaces around it.

Theory of operation
-------------------
A core is a plain object. Its driver (the simulator or the asyncio runtime) calls
its handlers with the current time and an input; each handler returns a list of
effects, which the driver carries out *in list order*:

``Send``
    give ``message`` to the network for node ``to``. Best effort: it may be lost,
    duplicated or reordered; a core never assumes delivery.
``SetTimer`` / ``CancelTimer``
    arm (or re-arm: one timer per key) a timer that calls ``on_timer(key)`` after
    ``delay_ms``; cancel it. A cancelled or re-armed timer never fires its old
    instance.
``Persist``
    append ``records`` to this node's write-ahead log and make them durable
    (fsync; the driver batches fsyncs: group commit); *only then* carry out the
    effects in ``then``. This is how an acceptor says "persist the promise BEFORE
    sending it". Persists become durable in the order they were returned, and the
    ``then`` effects of an earlier ``Persist`` run before those of a later one.
``SaveSnapshot``
    durably store ``chunks`` as this node's snapshot, which stands for every
    record persisted by a ``Persist`` returned *before* it (in effect order); then
    carry out ``then``. The driver queues it behind those Persists (group-commit
    order), writes the snapshot file atomically once they are durable, and only
    then may delete write-ahead-log records it covers. At restart the core gets
    ``Recovered(snapshot=<the newest durable snapshot's chunks>, records=<the
    records persisted after it>)``. A crash anywhere leaves either the new
    snapshot with the records after it, or the previous snapshot with every record
    after that one. The chunks must be self-sufficient: whatever durable state the
    earlier records held (promises, accepted values) must be in them. A driver
    that cannot store snapshots may drop one and truncate nothing: so a core's
    records must also recover its state without the snapshot (as before it).
``ClientResult``
    hand a result back to the client request ``request_id`` that arrived from
    ``client``. The driver routes it (a TCP connection in the runtime, a simulated
    client in the simulator).

Effects listed after a ``Persist`` (not inside its ``then``) do not wait for it.

A core receives, through its handlers, only: a message from a peer or a client,
a timer firing, and (at ``start``) what its disk held. It gets the time as an
argument and its randomness as a seeded ``random.Random`` from the driver, so the
same inputs always give the same effects.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from synod.core.ids import NodeId

if TYPE_CHECKING:
    from synod.codec.registry import Message


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Send ``message`` to node ``to`` (best effort)."""

    to: NodeId
    message: Message


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimer:
    """Arm timer ``key`` to fire after ``delay_ms``; re-arming replaces it."""

    key: str
    delay_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTimer:
    """Cancel timer ``key`` if it is armed."""

    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Persist:
    """Append ``records`` to the write-ahead log, fsync, THEN carry out ``then``."""

    records: tuple[bytes, ...]
    then: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveSnapshot:
    """Store ``chunks`` durably as the node's snapshot, replacing every record
    persisted before this effect; THEN carry out ``then`` (see the module comment)."""

    chunks: tuple[bytes, ...]
    then: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientResult:
    """Answer the client request ``request_id`` from ``client`` with ``result``."""

    client: NodeId
    request_id: int
    result: Message


Effect: TypeAlias = Send | SetTimer | CancelTimer | Persist | SaveSnapshot | ClientResult
Effects: TypeAlias = list[Effect]


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    """What a node's disk held when it (re)started: the chunks of the newest
    snapshot the core saved with ``SaveSnapshot`` (None if it never saved one),
    and the write-ahead log records persisted after that snapshot, in append order
    (a torn tail already dropped). Empty on a fresh node."""

    records: tuple[bytes, ...] = ()
    snapshot: tuple[bytes, ...] | None = None


_CHUNK_LENGTH = struct.Struct(">Q")


def frame_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Length-prefix each chunk, so that ``unframe_chunks`` gives back exactly
    these chunks from any re-chunking of the concatenated output (a snapshot
    file splits big chunks). Pure; drivers use it to store ``SaveSnapshot``."""
    for chunk in chunks:
        yield _CHUNK_LENGTH.pack(len(chunk))
        yield chunk


def unframe_chunks(pieces: Iterable[bytes]) -> tuple[bytes, ...]:
    """The inverse of ``frame_chunks``; raises ``ValueError`` on a malformed stream."""
    data = b"".join(pieces)
    chunks: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + _CHUNK_LENGTH.size > len(data):
            raise ValueError("framed chunks: truncated length")
        (length,) = _CHUNK_LENGTH.unpack_from(data, offset)
        offset += _CHUNK_LENGTH.size
        if offset + length > len(data):
            raise ValueError("framed chunks: truncated chunk")
        chunks.append(data[offset : offset + length])
        offset += length
    return tuple(chunks)


class Core(Protocol):
    """What a driver drives: one protocol core hosted on one node.

    Every handler returns the effects to carry out, in order. ``check_invariants``
    raises ``InvariantViolation`` if the core's state is inconsistent; the simulator
    calls it after every step.
    """

    def start(self, now_ms: float, recovered: Recovered) -> Effects: ...

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects: ...

    def on_timer(self, now_ms: float, key: str) -> Effects: ...

    def check_invariants(self) -> None: ...


class CoreFactory(Protocol):
    """Builds a node's core. Called at first start and again at every restart (a
    crash loses every volatile field, so a fresh object is built and ``start`` gets
    what the disk kept)."""

    def __call__(self, node: NodeId, rng: random.Random) -> Core: ...


class Host(Protocol):
    """The small interface both drivers implement for the glue around a core
    (servers, clients, node composition). Cores never see it."""

    @property
    def node(self) -> NodeId: ...

    def now_ms(self) -> float:
        """Monotonic milliseconds (virtual in the simulator)."""
        ...

    def rng(self, name: str) -> random.Random:
        """A generator derived from the run's seed and ``name`` (stable across runs)."""
        ...

    def execute(self, effects: Sequence[Effect]) -> None:
        """Carry out effects in order (see the module comment)."""
        ...
