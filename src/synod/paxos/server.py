"""Server glue: the Paxos key-value core as one node process hosts it.

Theory of operation
-------------------
``python -m synod.runtime.serve --core synod.paxos.server:kv_factory`` hosts one
``PaxosServer`` per node: a thin wrapper around ``PaxosReplica`` (with the
``KeyValue`` state machine) that adds two client bodies and nothing else:

``ClientBatch``
    many client bodies (``Command``, ``Read``) in one frame. The wrapper hands each
    item to the replica as its own ``ClientRequest`` under an internal, negative
    request id (clients use positive ids, so the two never meet), collects the
    replica's ``ClientResult`` for each, and answers the batch with ONE
    ``ClientBatchReply`` once every item has its answer (items of one batch almost
    always land in the same slot, so waiting for the last costs nothing). This is
    the client-side hop of "batching at every hop": one frame in, one frame out,
    one decode and one encode per batch envelope.
``StatusQuery``
    answered at once with a ``StatusReply`` (role, leader, ballot, chosen index):
    what ``synod cluster status`` prints and how tools wait for a leader.

Everything else goes to the replica untouched. The wrapper does no I/O (it is a
core like the replica, driven by the runtime or the simulator). Its table of
unanswered batches is bounded by ``batches_max``: past it the oldest batch is
forgotten (its client times out and retries with the same (client id, seq), which
the replica's exactly-once table answers).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from synod.codec.kernel import ClientRequest, ErrorReply
from synod.codec.registry import Message, message
from synod.core.effects import ClientResult, Effect, Effects, Persist, Recovered
from synod.core.errors import ConfigError, invariant
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.kv import KeyValue
from synod.paxos.replica import PaxosReplica, ReplicaStatistics

# Tags 480-489: the paxos server glue's client bodies (paxos owns 300-499; the
# replica's messages stop well below). ONLY APPEND.


@message(480)
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientBatch(Message):
    """Several client bodies (``Command`` or ``Read``) sent as one request."""

    items: tuple[Message, ...]


@message(481)
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientBatchReply(Message):
    """One answer per item of a ``ClientBatch``, in item order (each a
    ``CommandResult``, ``ReadResult`` or ``ErrorReply``)."""

    items: tuple[Message, ...]


@message(482)
@dataclass(frozen=True, slots=True, kw_only=True)
class StatusQuery(Message):
    """Ask a node for its ``StatusReply``."""


@message(483)
@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReply(Message):
    """A node's view: ``role`` ("leader", "candidate", "follower"), the leader it
    knows (empty if none), its ballot and chosen index."""

    node: str
    role: str
    leader: str
    ballot: str
    chosen_index: int
    members: tuple[str, ...]
    elections_started: int = 0
    leaderships: int = 0
    #: A digest of the replicated state (equal digests at equal chosen indexes:
    #: the replicas agree).
    digest: str = ""
    #: Why the replica ignored or refused inputs, as ``reason=count`` (for
    #: example ``prevote_denied=12``): what to look at when a node does not
    #: campaign or does not follow.
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Knobs of the server glue (the replica has its own ``PaxosConfig``)."""

    #: Items in one ``ClientBatch`` at most; a larger batch is refused whole with
    #: ``too_large`` (the client library never builds one).
    batch_items_max: int = 4096

    #: Batches awaiting answers at most; past it the oldest is forgotten.
    batches_max: int = 65536

    def __post_init__(self) -> None:
        if self.batch_items_max <= 0 or self.batches_max <= 0:
            raise ConfigError("ServerConfig: batch_items_max and batches_max must be positive")


@dataclass(slots=True)
class _Batch:
    client: NodeId
    request_id: int
    answers: list[Message | None]
    missing: int
    internal_ids: list[int] = field(default_factory=list)


class PaxosServer:
    """A ``synod.core.Core``: a ``PaxosReplica`` plus client batching and status."""

    def __init__(self, replica: PaxosReplica, config: ServerConfig | None = None) -> None:
        self.replica = replica
        self.config = config or ServerConfig()
        self._next_internal = -1
        # internal request id -> (batch key, item index)
        self._items: dict[int, tuple[int, int]] = {}
        # batch key (its first internal id) -> batch
        self._batches: dict[int, _Batch] = {}
        self.batches_forgotten = 0

    # ------------------------------------------------------------ Core API

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return self._route(self.replica.start(now_ms, recovered))

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        if isinstance(message, ClientRequest):
            body = message.body
            if isinstance(body, ClientBatch):
                return self._on_batch(now_ms, source, message.request_id, body)
            if isinstance(body, StatusQuery):
                return [ClientResult(client=source, request_id=message.request_id, result=self.status())]
        return self._route(self.replica.on_message(now_ms, source, message))

    def on_timer(self, now_ms: float, key: str) -> Effects:
        return self._route(self.replica.on_timer(now_ms, key))

    def check_invariants(self) -> None:
        self.replica.check_invariants()
        invariant(len(self._batches) <= self.config.batches_max, "too many batches remembered")
        for internal, (key, index) in self._items.items():
            batch = self._batches.get(key)
            invariant(batch is not None, f"item {internal} of a forgotten batch")
            invariant(batch is not None and batch.answers[index] is None, "answered item still waiting")

    # ------------------------------------------------------------ queries

    def status(self) -> StatusReply:
        replica = self.replica
        stats = replica.statistics()
        return StatusReply(
            node=replica.node,
            role=replica.role.name.lower(),
            leader=replica.leader or "",
            ballot=str(replica.ballot if replica.is_leader else replica.leader_ballot),
            chosen_index=replica.chosen_index,
            members=tuple(replica.members_history[-1][1]),
            elections_started=stats.elections_started,
            leaderships=stats.leaderships,
            digest=stats.digest,
            ignored=tuple(f"{reason}={count}" for reason, count in stats.ignored),
        )

    def statistics(self) -> ReplicaStatistics:
        return self.replica.statistics()

    # ------------------------------------------------------------ batching

    def _on_batch(self, now_ms: float, client: NodeId, request_id: int, batch: ClientBatch) -> Effects:
        count = len(batch.items)
        if count == 0 or count > self.config.batch_items_max:
            return [ClientResult(client=client, request_id=request_id, result=ErrorReply(
                code="too_large" if count else "bad_request",
                detail=f"a batch holds 1 to {self.config.batch_items_max} items, not {count}"))]
        key = self._next_internal
        entry = _Batch(client=client, request_id=request_id, answers=[None] * count, missing=count)
        self._batches[key] = entry
        out: Effects = []
        for index, item in enumerate(batch.items):
            internal = self._next_internal
            self._next_internal -= 1
            entry.internal_ids.append(internal)
            self._items[internal] = (key, index)
            effects = self.replica.on_message(now_ms, client, ClientRequest(request_id=internal, body=item))
            out.extend(effects)
        while len(self._batches) > self.config.batches_max:
            self._forget(next(iter(self._batches)))
        return self._route(out)

    def _forget(self, key: int) -> None:
        batch = self._batches.pop(key)
        for internal in batch.internal_ids:
            self._items.pop(internal, None)
        self.batches_forgotten += 1

    def _route(self, effects: Effects) -> Effects:
        """Turn the replica's answers to batch items into batch replies."""
        if not self._items:
            return effects
        out: Effects = []
        for effect in effects:
            routed = self._route_one(effect)
            if routed is not None:
                out.append(routed)
        return out

    def _route_one(self, effect: Effect) -> Effect | None:
        if isinstance(effect, ClientResult):
            if effect.request_id >= 0:
                return effect
            place = self._items.pop(effect.request_id, None)
            if place is None:
                return None   # an item of a forgotten batch
            key, index = place
            batch = self._batches[key]
            batch.answers[index] = effect.result
            batch.missing -= 1
            if batch.missing:
                return None
            del self._batches[key]
            answers = tuple(a for a in batch.answers if a is not None)
            return ClientResult(client=batch.client, request_id=batch.request_id,
                                result=ClientBatchReply(items=answers))
        if isinstance(effect, Persist) and effect.then:
            then = tuple(e for e in (self._route_one(t) for t in effect.then) if e is not None)
            return Persist(records=effect.records, then=then)
        return effect


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerFactory:
    """A ``synod.core.CoreFactory`` of ``PaxosServer`` around a KV replica."""

    members: tuple[NodeId, ...]
    paxos: PaxosConfig
    server: ServerConfig
    machine: Callable[[], KeyValue] = KeyValue

    def __call__(self, node: NodeId, rng: random.Random) -> PaxosServer:
        replica = PaxosReplica(node, rng, members=self.members, machine=self.machine(), config=self.paxos)
        return PaxosServer(replica, self.server)


def local_paxos_config() -> PaxosConfig:
    """``PaxosConfig.local()`` with a Phase 2 window of 4 slots and a snapshot
    every 1,000 slots.

    Why a small window: the replica proposes a slot as soon as a command arrives
    while the window has room, so with 32 slots open the first 32 commands of a
    burst each get a slot of their own (a WAL record, an Accept per peer, a vote
    each). With 4, the rest of the burst waits a moment and leaves in ONE slot of
    up to ``batch_commands_max`` commands; the group commit already merges the
    fsyncs of slots in flight, so little pipelining is lost. Measured on loopback
    (bench/paxos.py setup, 256 writes in flight): about 1.5-2x the writes/s of a
    32-slot window, at equal latency for one write in flight.

    Why frequent snapshots: at full load slots hold tens to hundreds of commands,
    so 10,000 slots kept in memory are millions of objects, and the interpreter's
    full garbage collections over them stalled a replica long enough (300 ms) to
    cost an election now and then in 60 s soaks; with 1,000 slots there were
    none (the KV snapshot of a few thousand keys takes milliseconds)."""
    return dataclasses.replace(PaxosConfig.local(), window_slots_max=4, snapshot_interval_slots=1000)


def kv_factory(nodes: tuple[NodeId, ...]) -> ServerFactory:
    """The core builder for ``synod.runtime.serve --core synod.paxos.server:kv_factory``:
    a KV replica per node with ``local_paxos_config()`` (processes on one machine)."""
    return ServerFactory(members=tuple(sorted(nodes)), paxos=local_paxos_config(), server=ServerConfig())


def kv_lan_factory(nodes: tuple[NodeId, ...]) -> ServerFactory:
    """As ``kv_factory`` with ``PaxosConfig.lan()`` (nodes on separate machines)."""
    return ServerFactory(members=tuple(sorted(nodes)), paxos=PaxosConfig.lan(), server=ServerConfig())
