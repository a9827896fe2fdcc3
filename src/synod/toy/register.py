"""A durable replicated register: the toy core that exercises the foundation.

Theory of operation
-------------------
Each node keeps a map ``key -> Entry`` and a Lamport ``counter``. It is the
simplest replicated store that still needs every part of the kernel -- the write
path persists before it answers, peers persist what they receive, a restart
rebuilds from the write-ahead log, and anti-entropy repairs what the network
lost -- so a bug in the simulator, the storage layer or the effects contract shows
up as a failed check rather than hiding.

Write path (``ClientRequest(body=Write)`` from a client):
  1. the node gives the write the version ``(counter + 1, self)`` and applies it
     to its map at once (reads may see it before it is durable: this toy promises
     durability of acknowledged writes, not linearizability);
  2. it returns ``Persist(records=(entry,), then=(ClientResult(WriteOk),
     Send(Replicate) to every peer))``: the client hears "ok" and the peers hear
     of the write only after the entry is fsynced on this node.

Replication: a node receiving ``Replicate`` keeps each entry that is newer than
its own for that key and persists the ones it kept (no answer is needed).

Anti-entropy: every ``anti_entropy_interval_ms`` a node pushes its whole map to
the next peer in round-robin order. After the network heals, one full round of
pushes without loss makes every node hold, for every key, the newest entry that
any node held at the start of the round: the cluster converges.

Conflict resolution is last-writer-wins by the total order ``(counter, origin,
value)``: concurrent writes to one key get different versions, and the order
breaks every tie the same way on every node. The value is part of the order
because a node may lose an unsynced write in a crash after anti-entropy pushed it
from memory, and then reuse its version for another value after restart; both
entries then exist and every node must still pick the same one.

Recovery: ``start`` replays the recovered records (entries) in log order,
keeping the newest per key, and raises the counter above every version seen.

Reads (``ClientRequest(body=Read)``) answer from local state. A request the node
cannot serve (a key or value over its bound, a full map, an unknown body) gets an
``ErrorReply`` with a stable code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from synod.codec import ClientRequest, ErrorReply, Message, decode, encode
from synod.core import (
    ClientResult,
    ConfigError,
    Effects,
    Persist,
    Recovered,
    Send,
    SetTimer,
    invariant,
)
from synod.core.faults import buggify
from synod.core.ids import NodeId
from synod.toy.messages import Entry, Read, ReadOk, Replicate, Write, WriteOk

ANTI_ENTROPY_TIMER = "anti_entropy"


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterConfig:
    """The toy register's bounds and timing."""

    anti_entropy_interval_ms: float = 50.0
    """Time between two anti-entropy pushes of a node (to one peer each). With N
    nodes a full round takes ``(N - 1) * anti_entropy_interval_ms``."""

    keys_max: int = 64
    """Most keys a node stores; a write of a new key beyond it is refused ("full").
    Also the most entries in one ``Replicate``, so a push is one bounded message."""

    key_bytes_max: int = 64
    """Longest key, in UTF-8 bytes."""

    value_bytes_max: int = 1024
    """Longest value, in UTF-8 bytes."""

    def __post_init__(self) -> None:
        if not self.anti_entropy_interval_ms > 0:
            raise ConfigError("RegisterConfig.anti_entropy_interval_ms must be > 0")
        for name in ("keys_max", "key_bytes_max", "value_bytes_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RegisterConfig.{name} must be >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterStatistics:
    """A snapshot of what one register node has done since it (re)started."""

    keys: int
    counter: int
    records_recovered: int
    writes_accepted: int
    requests_refused: int
    entries_kept: int
    entries_ignored: int
    pushes_sent: int
    messages_ignored: int


class RegisterNode:
    """One node of the replicated register (a ``synod.core.Core``)."""

    def __init__(
        self,
        node: NodeId,
        peers: tuple[NodeId, ...],
        rng: random.Random,
        config: RegisterConfig | None = None,
    ) -> None:
        invariant(node not in peers, "a node is not its own peer")
        self.node = node
        self.peers = peers
        self.config = config if config is not None else RegisterConfig()
        self._rng = rng
        self.state: dict[str, Entry] = {}
        self.counter = 0
        self._next_peer = 0
        self._records_recovered = 0
        self._writes_accepted = 0
        self._requests_refused = 0
        self._entries_kept = 0
        self._entries_ignored = 0
        self._pushes_sent = 0
        self._messages_ignored = 0

    # ------------------------------------------------------------ Core interface

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        for record in recovered.records:
            entry = decode(record)
            invariant(isinstance(entry, Entry), f"log record is not an Entry: {entry!r}")
            assert isinstance(entry, Entry)
            self._keep(entry)
        self._records_recovered = len(recovered.records)
        # Start the anti-entropy round at a random peer and a random phase, so that
        # nodes restarted together do not push in lockstep.
        self._next_peer = self._rng.randrange(len(self.peers)) if self.peers else 0
        first_ms = self._rng.uniform(0.0, self.config.anti_entropy_interval_ms)
        return [SetTimer(key=ANTI_ENTROPY_TIMER, delay_ms=first_ms)]

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        match message:
            case ClientRequest(request_id=request_id, body=body):
                return self._on_request(source, request_id, body)
            case Replicate(entries=entries):
                return self._on_replicate(entries)
            case _:
                self._messages_ignored += 1
                return []

    def on_timer(self, now_ms: float, key: str) -> Effects:
        if key != ANTI_ENTROPY_TIMER:
            self._messages_ignored += 1
            return []
        effects: Effects = []
        if self.peers and self.state:
            peer = self.peers[self._next_peer % len(self.peers)]
            self._next_peer = (self._next_peer + 1) % len(self.peers)
            entries = tuple(self.state[key] for key in sorted(self.state))
            effects.append(Send(to=peer, message=Replicate(entries=entries)))
            self._pushes_sent += 1
        interval_ms = self.config.anti_entropy_interval_ms
        if buggify(self._rng, "toy.anti_entropy_slow"):
            interval_ms *= 10  # a node that falls behind for a while
        effects.append(SetTimer(key=ANTI_ENTROPY_TIMER, delay_ms=interval_ms))
        return effects

    def check_invariants(self) -> None:
        invariant(len(self.state) <= self.config.keys_max, "more keys than keys_max")
        for key, entry in self.state.items():
            invariant(entry.key == key, f"entry for {entry.key!r} stored under {key!r}")
            invariant(entry.counter <= self.counter, "counter below a version this node holds")

    def statistics(self) -> RegisterStatistics:
        return RegisterStatistics(
            keys=len(self.state),
            counter=self.counter,
            records_recovered=self._records_recovered,
            writes_accepted=self._writes_accepted,
            requests_refused=self._requests_refused,
            entries_kept=self._entries_kept,
            entries_ignored=self._entries_ignored,
            pushes_sent=self._pushes_sent,
            messages_ignored=self._messages_ignored,
        )

    # ------------------------------------------------------------ handlers

    def _on_request(self, client: NodeId, request_id: int, body: Message) -> Effects:
        match body:
            case Write(key=key, value=value):
                return self._on_write(client, request_id, key, value)
            case Read(key=key):
                reply = ReadOk(key=key, entry=self.state.get(key))
                return [ClientResult(client=client, request_id=request_id, result=reply)]
            case _:
                return self._refuse(client, request_id, "bad_request", f"cannot serve {type(body).__name__}")

    def _on_write(self, client: NodeId, request_id: int, key: str, value: str) -> Effects:
        if not key or len(key.encode()) > self.config.key_bytes_max:
            return self._refuse(client, request_id, "too_large", "key empty or over key_bytes_max")
        if len(value.encode()) > self.config.value_bytes_max:
            return self._refuse(client, request_id, "too_large", "value over value_bytes_max")
        if key not in self.state and len(self.state) >= self.config.keys_max:
            return self._refuse(client, request_id, "full", "keys_max reached")
        entry = Entry(key=key, value=value, counter=self.counter + 1, origin=self.node)
        kept = self._keep(entry)
        invariant(kept, "a fresh version must be newer than anything held")
        self._writes_accepted += 1
        then: list[Send | ClientResult] = [
            ClientResult(client=client, request_id=request_id, result=WriteOk(entry=entry))
        ]
        then += [Send(to=peer, message=Replicate(entries=(entry,))) for peer in self.peers]
        return [Persist(records=(encode(entry),), then=tuple(then))]

    def _on_replicate(self, entries: tuple[Entry, ...]) -> Effects:
        if len(entries) > self.config.keys_max:
            self._messages_ignored += 1  # a peer over the bound: refuse it whole
            return []
        kept = [entry for entry in entries if self._keep(entry)]
        if not kept:
            return []
        return [Persist(records=tuple(encode(entry) for entry in kept))]

    def _refuse(self, client: NodeId, request_id: int, code: str, detail: str) -> Effects:
        self._requests_refused += 1
        reply = ErrorReply(code=code, detail=detail)
        return [ClientResult(client=client, request_id=request_id, result=reply)]

    # ------------------------------------------------------------ state

    def _keep(self, entry: Entry) -> bool:
        """Apply ``entry`` if it is newer than what we hold for its key."""
        self.counter = max(self.counter, entry.counter)
        current = self.state.get(entry.key)
        if current is not None and current.order() >= entry.order():
            self._entries_ignored += 1
            return False
        if current is None and len(self.state) >= self.config.keys_max:
            self._entries_ignored += 1
            return False
        self.state[entry.key] = entry
        self._entries_kept += 1
        return True


def register_factory(
    nodes: tuple[NodeId, ...], config: RegisterConfig | None = None
) -> RegisterFactory:
    """A ``CoreFactory`` for a register cluster of ``nodes``."""
    return RegisterFactory(nodes=nodes, config=config if config is not None else RegisterConfig())


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterFactory:
    """Builds a ``RegisterNode`` whose peers are the other ``nodes``."""

    nodes: tuple[NodeId, ...]
    config: RegisterConfig

    def __call__(self, node: NodeId, rng: random.Random) -> RegisterNode:
        peers = tuple(peer for peer in self.nodes if peer != node)
        return RegisterNode(node, peers, rng, self.config)
