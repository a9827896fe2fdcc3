"""The replicated state machine interface, and exactly-once client commands.

Theory of operation
-------------------
A user's state machine sees only operations (bytes) in log order: ``apply(op)``
must be deterministic -- the same operations in the same order give the same
results and the same state on every replica. It never reads a clock or a random
source; anything that depends on time arrives inside an operation that the leader
proposed with the time in it. ``query(op)`` answers a read without changing state.
``snapshot()`` yields the state as a stream of chunks (bytes) so that a state
larger than one message can be transferred and written piece by piece;
``restore(chunks)`` replaces the state with one read back from such a stream.
``digest()`` names the state, so the simulator can check that replicas converged.

Exactly-once (``ClientTable``): every command carries ``(client, seq)``. A client
may have many commands in flight, which may arrive and be chosen in any order, so
"the last seq applied" is not enough; the table keeps, per client, the results of
the commands applied whose answer the client may not have seen yet. Each command
also carries ``seen_below``, the lowest seq whose answer the client has not seen:
every result below it can be dropped, and a command below it is a stale duplicate
and is never applied again. The table is part of the replicated state (and so of
every snapshot); clients are evicted by log position, never by wall time, so every
replica evicts the same clients at the same slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import msgpack

from synod.core.errors import RemoteProtocolError
from synod.core.faults import declare_mutant, mutant

MUTANT_SNAPSHOT_DROPS_CLIENT_TABLE = declare_mutant(
    "paxos.snapshot_drops_client_table",
    "snapshots leave the exactly-once client table out, so a retried command "
    "applies twice on a replica restored from a snapshot",
)


class StateMachine(Protocol):
    """What a user implements to replicate their state with synod.paxos."""

    def apply(self, op: bytes) -> bytes:
        """Apply one operation; return its result. Deterministic; no clock reads."""
        ...

    def query(self, op: bytes) -> bytes:
        """Answer a read-only operation from the current state."""
        ...

    def snapshot(self) -> Iterator[bytes]:
        """The whole state as a stream of chunks."""
        ...

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace the state with the one ``snapshot()`` streamed."""
        ...

    def digest(self) -> str:
        """A short name of the state: equal states give equal digests."""
        ...


class Outcome:
    """What the client table says about a command about to be applied."""

    FRESH = "fresh"          # never applied: apply it
    DUPLICATE = "duplicate"  # applied, result still kept: answer with it
    FORGOTTEN = "forgotten"  # applied, and the client already saw the answer


@dataclass(slots=True)
class _Client:
    seen_below: int = 0
    last_slot: int = 0
    results: dict[int, tuple[bytes, int]] = field(default_factory=dict)


class ClientTable:
    """Per-client windows of results for exactly-once commands."""

    __slots__ = ("_clients", "client_retention_slots", "client_window_max", "clients_max")

    def __init__(self, *, client_window_max: int, clients_max: int, client_retention_slots: int) -> None:
        self.client_window_max = client_window_max
        self.clients_max = clients_max
        self.client_retention_slots = client_retention_slots
        self._clients: dict[str, _Client] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def lookup(self, client: str, seq: int) -> tuple[str, bytes, int]:
        """(outcome, cached result, slot it was applied in)."""
        entry = self._clients.get(client)
        if entry is None:
            return Outcome.FRESH, b"", 0
        if seq < entry.seen_below:
            return Outcome.FORGOTTEN, b"", 0
        cached = entry.results.get(seq)
        if cached is not None:
            return Outcome.DUPLICATE, cached[0], cached[1]
        return Outcome.FRESH, b"", 0

    def record(self, client: str, seq: int, seen_below: int, result: bytes, slot: int) -> None:
        """Remember the result of ``(client, seq)`` applied in ``slot``."""
        entry = self._clients.get(client)
        if entry is None:
            if len(self._clients) >= self.clients_max:
                self._evict_oldest()
            entry = self._clients[client] = _Client()
        entry.last_slot = slot
        if seen_below > entry.seen_below:
            entry.seen_below = seen_below
            for old in [s for s in entry.results if s < seen_below]:
                del entry.results[old]
        if seq >= entry.seen_below:
            entry.results[seq] = (result, slot)
        while len(entry.results) > self.client_window_max:
            # Forget the oldest result; the client can no longer retry it (it
            # becomes FORGOTTEN, never re-applied).
            lowest = min(entry.results)
            del entry.results[lowest]
            entry.seen_below = max(entry.seen_below, lowest + 1)

    def note_seen(self, client: str, seen_below: int) -> None:
        """Trim by a command's ``seen_below`` (even a duplicate's)."""
        entry = self._clients.get(client)
        if entry is not None and seen_below > entry.seen_below:
            entry.seen_below = seen_below
            for old in [s for s in entry.results if s < seen_below]:
                del entry.results[old]

    def evict(self, slot: int) -> int:
        """Drop clients not seen in the last ``client_retention_slots`` slots."""
        horizon = slot - self.client_retention_slots
        stale = [name for name, entry in self._clients.items() if entry.last_slot < horizon]
        for name in stale:
            del self._clients[name]
        return len(stale)

    def _evict_oldest(self) -> None:
        oldest = min(self._clients, key=lambda name: (self._clients[name].last_slot, name))
        del self._clients[oldest]

    def encode(self) -> bytes:
        rows = [
            [name, entry.seen_below, entry.last_slot,
             [[seq, result, slot] for seq, (result, slot) in sorted(entry.results.items())]]
            for name, entry in sorted(self._clients.items())
        ]
        packed: bytes = msgpack.packb(rows, use_bin_type=True)
        return packed

    def decode(self, data: bytes) -> None:
        try:
            rows = msgpack.unpackb(data, raw=False)
            clients = {}
            for name, seen_below, last_slot, results in rows:
                clients[str(name)] = _Client(
                    seen_below=int(seen_below), last_slot=int(last_slot),
                    results={int(seq): (bytes(result), int(slot)) for seq, result, slot in results},
                )
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            raise RemoteProtocolError(f"bad client table in snapshot: {error}") from None
        self._clients = clients


class ReplicatedState:
    """A user's state machine plus the exactly-once table: what a replica applies
    chosen commands to, snapshots and restores."""

    __slots__ = ("machine", "table")

    def __init__(self, machine: StateMachine, table: ClientTable) -> None:
        self.machine = machine
        self.table = table

    def apply(self, client: str, seq: int, seen_below: int, op: bytes, slot: int) -> tuple[str, bytes, int]:
        """Apply a command once: (outcome, result, slot the result came from)."""
        outcome, cached, cached_slot = self.table.lookup(client, seq)
        if outcome != Outcome.FRESH:
            self.table.note_seen(client, seen_below)
            return outcome, cached, cached_slot
        result = self.machine.apply(op)
        self.table.record(client, seq, seen_below, result, slot)
        return Outcome.FRESH, result, slot

    def snapshot_chunks(self) -> tuple[bytes, ...]:
        """The first chunk is the client table, the rest the user's state."""
        if mutant(MUTANT_SNAPSHOT_DROPS_CLIENT_TABLE):
            table = ClientTable(client_window_max=1, clients_max=1, client_retention_slots=1).encode()
        else:
            table = self.table.encode()
        return (table, *self.machine.snapshot())

    def restore(self, chunks: tuple[bytes, ...]) -> None:
        if not chunks:
            raise RemoteProtocolError("empty snapshot")
        self.table.decode(chunks[0])
        self.machine.restore(iter(chunks[1:]))

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.machine.digest().encode())
        h.update(self.table.encode())
        return h.hexdigest()[:16]
