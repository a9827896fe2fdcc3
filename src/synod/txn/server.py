"""A shard replica: a Paxos replica of the shard's group plus, on its leader, the
lock table and the Two-Phase Commit coordinator and participant.

Theory of operation
-------------------
Two-Phase Commit over Paxos groups, as Spanner runs it (Corbett et al., *Spanner*,
section 4.2.1), with Gray's 2PC (*Notes on Data Base Operating Systems*) inside.
Every participant and the coordinator are Paxos groups, so no single crash
blocks a transaction: whatever a leader decided is in its group's log, and the
next leader resumes from there.

*Reads* (``TxnGet``, ``TxnScan``) go to the leader of the key's shard, which takes
a shared lock (wound-wait, ``synod.txn.locks``) and answers from its applied
state, naming the ballot it serves under. Writes are buffered by the client
until commit. The commit carries each part's read ballots back, and a part
commits only under that same ballot (checked by the leader, and again in the
log against the last epoch): a leader deposed without knowing it answers from
a stale state, and its answer must never pair with a lock the client also got
from the real leader by a re-sent read (that was a lost update, sim seed 1013).

*Commit* (``TxnCommit``) goes to the leader of ``parts[0].group``, the coordinator.

* One part, this group: the **fast path**. The leader checks the read locks are
  still held under its ballot, takes the write locks, and proposes one
  ``FastCommitOp``; when it is applied, the client is told. (Read-only: while
  the leader's lease holds, no log round at all.)
* Several parts: the coordinator proposes ``RecordBeginOp`` (the transaction
  record, *pending*) in its own log and, at the same time, sends
  ``PrepareRequest`` to every participant group. A participant's leader checks
  the read locks are held under its current ballot (else votes no with a
  conflict naming the key), takes the write locks, proposes its ``PrepareOp``
  (locks and writes) and votes yes only once that record is applied. Once the
  record is applied and every vote is yes, the coordinator proposes the decision
  (``RecordDecideOp``); only once it is applied are the client and the
  participants told. Each participant applies ``DecideOp`` and acknowledges;
  when all did, the record is forgotten. A transaction that writes nothing needs
  no record: every participant votes from its locks under a valid lease.

*Failures.* Every message is re-sent on a tick until answered; every handler is
idempotent, answering from the applied state. A participant holding a prepare
record without a decision asks the coordinator's group (``DecisionQuery``); a
coordinator leader with no record for it answers abort (presumed abort: a record
is forgotten only after every participant acknowledged, and one never chosen
never will be once a newer leader is ready) -- but only while its lease holds,
since a deposed leader that does not know it yet may lack its successor's record. A leader that becomes
ready (its barrier applied, then its ``EpochOp``, after which the state machine
refuses prepare records and fast commits whose locks carry another ballot) drops
locks of older ballots, re-takes the locks of every prepare record in its state,
and resumes every transaction record:
pending ones collect votes again, decided ones re-send the decision. A pending
record older than ``txn_record_timeout_ms`` on the leader's clock is aborted;
unprepared locks idle for ``txn_idle_ms`` are released (abandoned clients).

The server is sans-IO: it hosts the ``PaxosReplica`` and talks to it as a local
client (``ClientRequest(Command)`` from the pseudo-client ``<node>#txn``), taking
the results out of the replica's effects.
"""

from __future__ import annotations

import enum
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from synod.codec.kernel import ClientRequest, ErrorReply
from synod.codec.registry import Message, decode, encode
from synod.core.effects import ClientResult, Effect, Effects, Persist, Recovered, Send, SetTimer
from synod.core.errors import LocalProtocolError, RemoteProtocolError, invariant
from synod.core.faults import mutant
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.messages import (
    Ballot,
    ChangeMembers,
    Command,
    CommandResult,
    TransferLeader,
    Value,
)
from synod.paxos.replica import PaxosReplica, Role
from synod.txn.config import TxnConfig
from synod.txn.engine import Engine, SqliteEngine
from synod.txn.errors import (
    CompactedError,
    ConflictError,
    OverloadedError,
    TxnAbortedError,
    TxnError,
    TxnStateError,
    TxnTooLargeError,
    WrongShardError,
)
from synod.txn.locks import MUTANT_WOUND_PREPARED, LockTable, Mode, Outcome, Request
from synod.txn.machine import (
    ABORTED,
    COMMITTED,
    FORGET_BATCH_MAX,
    MUTANT_COMMIT_WITHOUT_PREPARE,
    PENDING,
    ShardMachine,
    check_key,
    check_part,
    stale_read,
)
from synod.txn.messages import (
    DecideOp,
    Decision,
    DecisionAck,
    DecisionQuery,
    EpochOp,
    FastCommitOp,
    OpBatch,
    OpResult,
    OpResults,
    Part,
    PeerBatch,
    PeerMessage,
    PrepareOp,
    PrepareRequest,
    RecordBeginOp,
    RecordDecideOp,
    RecordForgetOp,
    TxnBatch,
    TxnBatchReply,
    TxnCommit,
    TxnGet,
    TxnOutcome,
    TxnRelease,
    TxnRows,
    TxnScan,
    TxnValue,
    Vote,
    Watch,
    WatchEvents,
    WatchWait,
    Write,
)
from synod.txn.shardmap import ShardMap

TICK_TIMER = "txn/tick"

#: Proposals that wait for one another (``ShardServer._propose``): every
#: operation of a transaction's life; the rare ones (epoch, forget, presumed
#: abort) go at once.
BATCHED_KINDS = frozenset({"fast", "prepare", "decide", "begin", "record_decide"})

#: Operations one ``OpBatch`` carries at most.
OP_BATCH_MAX = 64


#: 2PC messages one ``PeerBatch`` carries at most, and its bytes at most (estimated).
PEER_BATCH_MAX = 256
PEER_BATCH_BYTES_MAX = 1024 * 1024


def _batch_peer_sends(effects: Effects) -> Effects:
    """Put the 2PC messages of one event for the same node into ``PeerBatch``es
    (in order, each at the place of its first message); every other effect
    stays as it is."""
    out: Effects = []
    batches: list[tuple[NodeId, int, list[Message]]] = []   # (to, place in out, messages)
    filling: dict[NodeId, tuple[list[Message], int]] = {}  # to -> (the batch being filled, its bytes)
    for effect in effects:
        if isinstance(effect, Send) and isinstance(effect.message, PeerMessage):
            size = _peer_bytes(effect.message)
            messages, used = filling.get(effect.to, ([], PEER_BATCH_BYTES_MAX))
            if len(messages) < PEER_BATCH_MAX and used + size <= PEER_BATCH_BYTES_MAX:
                messages.append(effect.message)
                filling[effect.to] = (messages, used + size)
                continue
            filling[effect.to] = ([effect.message], size)
            batches.append((effect.to, len(out), filling[effect.to][0]))
        out.append(effect)
    for to, index, messages in batches:
        if len(messages) > 1:
            out[index] = Send(to=to, message=PeerBatch(messages=tuple(messages)))  # type: ignore[arg-type]
    return out


def _peer_bytes(message: Message) -> int:
    match message:
        case PrepareRequest():
            return 64 + len(message.txn) + _part_bytes(message.part)
        case Decision():
            return 64 + len(message.txn) + _writes_bytes(message.writes)
        case _:
            return 128


def _op_bytes(op: Message) -> int:
    """A generous estimate of ``op``'s encoded size."""
    match op:
        case FastCommitOp():
            return 64 + len(op.txn) + _writes_bytes(op.writes) + 32 * len(op.read_ballots)
        case PrepareOp():
            return 64 + len(op.txn) + len(op.coordinator) + _part_bytes(op.part)
        case DecideOp():
            return 64 + len(op.txn) + _writes_bytes(op.writes)
        case RecordBeginOp():
            return 64 + len(op.txn) + sum(_part_bytes(part) for part in op.parts)
        case _:
            return 256


def _writes_bytes(writes: tuple[Write, ...]) -> int:
    return sum(32 + len(w.key) + len(w.value or "") for w in writes)


def _part_bytes(part: Part) -> int:
    return (64 + len(part.group) + sum(16 + len(k) for k in part.read_keys)
            + sum(32 + len(a) + len(b) for a, b in part.read_ranges) + _writes_bytes(part.writes)
            + 32 * len(part.read_ballots))


class CoordinatorState(enum.Enum):
    """The coordinator's lifecycle of one transaction."""

    BEGINNING = "beginning"     # RecordBeginOp proposed
    VOTING = "voting"           # record pending; prepare requests out
    DECIDING = "deciding"       # RecordDecideOp proposed
    DECIDED = "decided"         # decision applied; telling participants
    FORGETTING = "forgetting"   # every participant acknowledged; RecordForgetOp proposed


#: Legal moves of the coordinator's lifecycle (anything else is a bug).
COORDINATOR_TRANSITIONS: dict[CoordinatorState, frozenset[CoordinatorState]] = {
    CoordinatorState.BEGINNING: frozenset({CoordinatorState.VOTING, CoordinatorState.DECIDING}),
    CoordinatorState.VOTING: frozenset({CoordinatorState.DECIDING, CoordinatorState.DECIDED}),
    CoordinatorState.DECIDING: frozenset({CoordinatorState.DECIDED}),
    CoordinatorState.DECIDED: frozenset({CoordinatorState.FORGETTING}),
    CoordinatorState.FORGETTING: frozenset(),
}


@dataclass(slots=True, kw_only=True)
class _Coordination:
    txn: str
    ts: int
    parts: tuple[Part, ...]
    state: CoordinatorState
    read_only: bool
    deadline_ms: float
    votes: dict[str, bool] = field(default_factory=dict)
    no_code: str = ""
    no_key: str = ""
    decision: bool | None = None
    acks: set[str] = field(default_factory=set)
    clients: list[tuple[NodeId, int]] = field(default_factory=list)
    proposing: bool = False
    #: When prepare requests or decisions were last sent, and how long the
    #: tick waits after that before sending them again (doubling, capped).
    sent_ms: float = 0.0
    resend_after_ms: float = 0.0
    #: When the current exchange (prepares, then decisions) was first sent:
    #: the answers' delays feed the server's estimate of an exchange's time.
    first_sent_ms: float = 0.0

    def move(self, new: CoordinatorState) -> None:
        if new not in COORDINATOR_TRANSITIONS[self.state]:
            raise LocalProtocolError(f"transaction {self.txn}: illegal move {self.state.value} -> {new.value}")
        self.state = new


@dataclass(slots=True, kw_only=True)
class _Preparing:
    """A participant's prepare (or the fast path's commit) in progress."""

    txn: str
    ts: int
    coordinator: str
    part: Part
    fast_client: tuple[NodeId, int] | None = None
    waiting: set[int] = field(default_factory=set)
    #: When its write locks were first asked for (a cross-shard prepare waits
    #: ``prepare_wait_ms`` at most).
    started_ms: float = 0.0
    proposed: bool = False
    voted: bool = False


@dataclass(slots=True, kw_only=True)
class _LockWait:
    kind: str                   # "get", "scan" or "prepare"
    txn: str
    client: NodeId | None = None
    request_id: int = 0
    key: str = ""
    end: str = ""
    limit: int = 0


@dataclass(slots=True, kw_only=True)
class _Batch:
    """A ``TxnBatch`` whose items are still being answered."""

    client: NodeId
    request_id: int
    answers: list[Message | None]
    missing: int
    internal_ids: list[int]


#: ``TxnBatch``es awaiting answers at most; past it the oldest is forgotten (its
#: client times out and asks again; commits answer duplicates from the log).
BATCHES_MAX = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class _WaitingWatch:
    client: NodeId
    request_id: int
    watch: WatchWait
    deadline_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnStatistics:
    """A snapshot of one shard server's transaction state and counters."""

    node: NodeId
    group: str
    ready: bool
    ballot: Ballot | None
    revision: int
    applied_ops: int
    locked_txns: int
    lock_waiters: int
    preparing: int
    coordinating: int
    in_doubt: int
    counts: tuple[tuple[str, int], ...]


class ShardServer:
    """One replica of one shard (a ``synod.core.Core``)."""

    def __init__(
        self,
        node: NodeId,
        rng: random.Random,
        *,
        group: str,
        shard_map: ShardMap,
        config: TxnConfig | None = None,
        paxos_config: PaxosConfig | None = None,
        engine: Engine | None = None,
        observer: Callable[[NodeId, int, Value], None] | None = None,
    ) -> None:
        self.node = node
        self.group = group
        self.shard_map = shard_map
        self.shard = shard_map.shard(group)
        self.config = config or TxnConfig()
        self.machine = ShardMachine(engine if engine is not None else SqliteEngine(":memory:"), self.config)
        self.replica = PaxosReplica(node, rng, members=self.shard.replicas, machine=self.machine,
                                    config=paxos_config, observer=observer)
        self.locks = LockTable(waiters_max=self.config.lock_waiters_max, txns_max=self.config.txns_active_max,
                               aborted_max=self.config.outcomes_max)
        self.ready_ballot: Ballot | None = None
        self._epoch_proposed: Ballot | None = None
        self._seq_ballot: Ballot | None = None
        self._self_client = NodeId(f"{node}#txn")
        self._request_seq = 0
        self._command_seq = 0
        self._token_seq = 0
        self._proposals: dict[int, tuple[str, str]] = {}
        #: Operations waiting to be proposed together (``_propose``): (op, kind,
        #: txn); proposed batches: request id -> the (kind, txn) of each op.
        self._ready: list[tuple[Message, str, str]] = []
        self._op_batches: dict[int, tuple[tuple[str, str], ...]] = {}
        self._lock_waits: dict[int, _LockWait] = {}
        self._preparing: dict[str, _Preparing] = {}
        self._deciding: set[str] = set()
        self._coordinating: dict[str, _Coordination] = {}
        #: Prepared here, no decision yet: txn -> (coordinator group, when to
        #: ask it next, the wait before that).
        self._in_doubt: dict[str, tuple[str, float, float, float]] = {}
        #: A smoothed estimate (ms) of how long a 2PC exchange takes here: from a
        #: prepare request to its vote, from a decision to its acknowledgement,
        #: from a yes vote to the decision. Re-sends wait for twice as long.
        self._exchange_ms = 0.0
        self._presuming: dict[str, str] = {}
        self._forget_batches: dict[int, tuple[str, ...]] = {}
        self._inbox: deque[tuple[NodeId, Message]] = deque()
        #: Long-poll watches waiting for a change, and the revision they were
        #: last checked at (they are looked at again only when it grows).
        self._watches: list[_WaitingWatch] = []
        self._watches_revision = 0
        #: Items of ``TxnBatch``es get internal, negative request ids (clients
        #: use positive ones): internal id -> (batch key, index); batch key -> batch.
        self._batch_seq = 0
        self._batch_items: dict[int, tuple[int, int]] = {}
        self._batches: dict[int, _Batch] = {}
        #: Other groups' leaders, as last heard from (2PC messages come from a
        #: group's ready leader only).
        self._group_leaders: dict[str, NodeId] = {}
        self._group_members = {shard.group: frozenset(shard.replicas) for shard in shard_map.shards}
        #: 2PC messages sent in this event so far (``_batch_peer_sends``).
        self._peer_sends = 0
        self._counts: Counter[str] = Counter()

    # ================================================================ Core API

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        out = self.replica.start(now_ms, recovered)
        out.append(SetTimer(key=TICK_TIMER, delay_ms=self.config.resend_ms))
        return self._after(now_ms, out)

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        out: Effects = []
        match message:
            case ClientRequest(request_id=request_id, body=TxnBatch() as batch):
                self._on_batch(now_ms, source, request_id, batch, out)
            case ClientRequest(request_id=request_id, body=body):
                self._on_client(now_ms, source, request_id, body, out)
            case PrepareRequest() | Vote() | Decision() | DecisionAck() | DecisionQuery():
                self._from_peer(now_ms, source, message, out)
            case PeerBatch(messages=messages):
                for inner in messages:
                    self._from_peer(now_ms, source, inner, out)
            case _:
                out = self.replica.on_message(now_ms, source, message)
        return self._after(now_ms, out)

    def _from_peer(self, now_ms: float, source: NodeId, message: Message, out: Effects) -> None:
        # Only a group's ready leader sends these: remember who leads the
        # sender's group (named in the message: a node may host replicas of
        # several groups).
        assert isinstance(message, PeerMessage)
        group = message.coordinator if isinstance(message, PrepareRequest | Decision) else message.group
        if group != self.group and source in self._group_members.get(group, ()):
            self._group_leaders[group] = source
        self._sync(now_ms, out)
        self._on_peer(now_ms, source, message, out)

    def on_timer(self, now_ms: float, key: str) -> Effects:
        if key != TICK_TIMER:
            return self._after(now_ms, self.replica.on_timer(now_ms, key))
        out: Effects = [SetTimer(key=TICK_TIMER, delay_ms=self.config.resend_ms)]
        self._expire_watches(now_ms, out)
        self._sync(now_ms, out)
        if self.ready_ballot is not None:
            self._tick(now_ms, out)
        return self._after(now_ms, out)

    def check_invariants(self) -> None:
        self.replica.check_invariants()
        self.locks.check_invariants()
        invariant(len(self._watches) <= self.config.watches_waiting_max, "waiting watches over their bound")
        invariant(len(self._batches) <= BATCHES_MAX, "batches awaiting answers over their bound")
        for internal, (key, index) in self._batch_items.items():
            batch = self._batches.get(key)
            invariant(batch is not None and batch.answers[index] is None,
                      f"batch item {internal} belongs to no batch waiting for it")
        if self.ready_ballot is None:
            invariant(not self._coordinating and not self._preparing and not self._lock_waits,
                      "a server that is not a ready leader coordinates or prepares")
        for prep in self._preparing.values():
            invariant(prep.part.group == self.group, f"preparing {prep.txn} for another group")
            if prep.proposed:
                entry = self.locks.entry(prep.txn)
                invariant(entry is not None and entry.prepared,
                          f"{prep.txn} proposed its prepare record without holding prepared locks")

    # ================================================================ plumbing

    def _after(self, now_ms: float, effects: Effects) -> Effects:
        """Take this server's own proposal results out of the replica's effects,
        act on them and on messages to itself, until nothing new comes."""
        out: Effects = []
        queue = effects
        while True:
            intercepted: list[ClientResult] = []
            for effect in queue:
                kept = self._intercept(effect, intercepted)
                if kept is not None:
                    out.append(kept)
            queue = []
            self._sync(now_ms, queue)
            for result in intercepted:
                self._on_applied(now_ms, result.request_id, result.result, queue)
            while self._inbox:
                source, message = self._inbox.popleft()
                self._on_peer(now_ms, source, message, queue)
            if self._ready and self.replica.window_open():
                self._propose_ready(now_ms, queue)
            if not queue:
                self._wake_watches(out)
                if self._peer_sends > 1:
                    out = _batch_peer_sends(out)
                self._peer_sends = 0
                return self._route_batches(out) if self._batch_items else out

    def _intercept(self, effect: Effect, intercepted: list[ClientResult]) -> Effect | None:
        match effect:
            case ClientResult(client=client) if client == self._self_client:
                intercepted.append(effect)
                return None
            case Persist(records=records, then=then) if any(
                    isinstance(e, ClientResult) and e.client == self._self_client for e in then):
                # The replica answers commands after applying, never inside a
                # Persist; handled anyway so no answer is ever lost.
                kept = tuple(k for e in then if (k := self._intercept(e, intercepted)) is not None)
                return Persist(records=records, then=kept)
            case _:
                return effect

    def _sync(self, now_ms: float, out: Effects) -> None:
        """Follow the replica's role. A leader whose barrier is applied proposes
        its ``EpochOp``; once that is applied it is ready (serves transactions)."""
        replica = self.replica
        leading = replica.role is Role.LEADER and replica.chosen_index >= replica.barrier_slot
        ballot = replica.ballot if leading and self.machine.epoch == replica.ballot else None
        if self.ready_ballot is not None and ballot != self.ready_ballot:
            self._stop_leading(out)
        if not leading:
            self._epoch_proposed = None
        elif ballot is None and self._epoch_proposed != replica.ballot:
            self._epoch_proposed = replica.ballot
            self._propose(now_ms, EpochOp(ballot=replica.ballot), "epoch", "", out)
        if ballot is not None and self.ready_ballot is None:
            self._become_ready(now_ms, ballot, out)

    def _become_ready(self, now_ms: float, ballot: Ballot, out: Effects) -> None:
        self.ready_ballot = ballot
        self._counts["leaderships_ready"] += 1
        self.locks.purge(ballot)
        for record in self.machine.prepared():
            writes = tuple(w.key for w in record.part.writes)
            self.locks.install_prepared(record.txn, record.ts, ballot, record.part.read_keys,
                                        record.part.read_ranges, writes)
            self._mark_in_doubt(record.txn, record.coordinator, now_ms)
            self._counts["resumed_prepared"] += 1
        for state, begin in self.machine.records():
            if not begin.parts:
                continue   # a presumed-abort tombstone: nothing to resume
            read_only = not any(p.writes for p in begin.parts)
            coordination = _Coordination(txn=begin.txn, ts=begin.ts, parts=begin.parts, read_only=read_only,
                                         state=CoordinatorState.VOTING,
                                         deadline_ms=now_ms + self.config.txn_record_timeout_ms)
            self._coordinating[begin.txn] = coordination
            self._counts["resumed_records"] += 1
            if state == PENDING:
                self._send_prepares(now_ms, coordination, out, broadcast=True)
            else:
                coordination.decision = state == COMMITTED
                coordination.move(CoordinatorState.DECIDED)
                self._send_decisions(now_ms, coordination, out, broadcast=True)

    def _stop_leading(self, out: Effects) -> None:
        hint = self.replica.leader or ""
        refusal = ErrorReply(code="not_leader", detail="leadership changed", hint=hint)
        for wait in self._lock_waits.values():
            if wait.client is not None:
                out.append(ClientResult(client=wait.client, request_id=wait.request_id, result=refusal))
        for prep in self._preparing.values():
            if prep.fast_client is not None:
                out.append(ClientResult(client=prep.fast_client[0], request_id=prep.fast_client[1],
                                        result=ErrorReply(code="unavailable", detail="leadership changed; "
                                                          "the commit may or may not have happened")))
        for coordination in self._coordinating.values():
            for client, request_id in coordination.clients:
                out.append(ClientResult(client=client, request_id=request_id,
                                        result=ErrorReply(code="unavailable", detail="coordinator changed; "
                                                          "ask again for the outcome", hint=hint)))
        self.ready_ballot = None
        self._lock_waits.clear()
        self._preparing.clear()
        self._deciding.clear()
        self._coordinating.clear()
        self._in_doubt.clear()
        self._presuming.clear()
        self._forget_batches.clear()
        self._ready.clear()
        self._op_batches.clear()
        self._proposals.clear()
        self.locks.waiters.clear()

    def _propose(self, now_ms: float, op: Message, kind: str, txn: str, out: Effects) -> int:
        """Propose ``op``. The operations of a transaction's life (``BATCHED_KINDS``)
        wait in ``_ready`` until the end of the event and, while the Paxos window
        is shut, until it opens; they then leave together (``_propose_ready``):
        returns 0. Any other goes at once, behind whatever waits (order kept);
        returns its request id."""
        if kind in BATCHED_KINDS:
            self._ready.append((op, kind, txn))
            return 0
        if self._ready:
            self._propose_ready(now_ms, out)
        return self._propose_now(now_ms, op, kind, txn, out)

    def _propose_now(self, now_ms: float, op: Message, kind: str, txn: str, out: Effects) -> int:
        """Hand ``op`` to the replica as one command; returns its request id."""
        ballot = self.replica.ballot
        if ballot != self._seq_ballot:
            # A new client name per leadership, so sequence numbers never repeat.
            self._seq_ballot = ballot
            self._command_seq = 0
        self._request_seq += 1
        self._command_seq += 1
        request_id = self._request_seq
        encoded = encode(op)
        self.machine.proposed(encoded, op)
        command = Command(client=f"{self._self_client}.{ballot.round}", seq=self._command_seq,
                          seen_below=self._command_seq, op=encoded)
        self._proposals[request_id] = (kind, txn)
        self._counts[f"proposed_{kind}"] += 1
        out.extend(self.replica.on_message(now_ms, self._self_client,
                                           ClientRequest(request_id=request_id, body=command)))
        return request_id

    def _propose_ready(self, now_ms: float, out: Effects) -> None:
        """Propose what waits in ``_ready``, in order: in ``OpBatch``es of at most
        ``OP_BATCH_MAX`` operations and half a Paxos command's bytes (a lone or
        large one goes as itself)."""
        ready, self._ready = self._ready, []
        budget = self.replica.config.command_bytes_max // 2
        batch: list[tuple[Message, str, str]] = []
        size = 0
        for index, item in enumerate(ready):
            batch.append(item)
            size += _op_bytes(item[0])
            last = index == len(ready) - 1
            if not last and len(batch) < OP_BATCH_MAX and size + _op_bytes(ready[index + 1][0]) <= budget:
                continue
            if len(batch) == 1:
                self._propose_now(now_ms, *batch[0], out)
            else:
                ops = tuple(op for op, _, _ in batch)
                request_id = self._propose_now(now_ms, OpBatch(ops=ops), "batch", "", out)  # type: ignore[arg-type]
                self._op_batches[request_id] = tuple((kind, txn) for _, kind, txn in batch)
            batch, size = [], 0

    def _send_group(self, group: str, message: Message, out: Effects, *, broadcast: bool = False) -> None:
        """Send to ``group``'s leader (its ready leader acts; others ignore).

        This group's leader is this server: the message goes to its inbox only.
        Another group's: the replica it last heard from as that group's leader,
        if any, else every replica; ``broadcast`` (re-sends on the tick, a new
        leader resuming) always reaches every replica, so a stale hint costs
        one ``resend_ms`` at most. Every message here is idempotent and only a
        hint: each group's log, which every new leader resumes, is the truth."""
        if group == self.group:
            self._inbox.append((self.node, message))
            return
        try:
            replicas = self.shard_map.shard(group).replicas
        except KeyError:
            self._counts["unknown_group"] += 1
            return
        leader = self._group_leaders.get(group)
        if leader is not None and not broadcast:
            out.append(Send(to=leader, message=message))
            self._peer_sends += 1
            return
        for node in replicas:
            out.append(Send(to=node, message=message))
        self._peer_sends += len(replicas)

    def _reply(self, out: Effects, client: NodeId, request_id: int, result: Message) -> None:
        out.append(ClientResult(client=client, request_id=request_id, result=result))

    def _refuse(self, out: Effects, client: NodeId, request_id: int, error: TxnError) -> None:
        self._counts[f"refused_{error.code}"] += 1
        self._reply(out, client, request_id, ErrorReply(code=error.code, detail=error.detail, hint=error.key))

    def _not_leader(self, out: Effects, client: NodeId, request_id: int) -> None:
        leader = self.replica.leader
        hint = leader if leader is not None and leader != self.node else ""
        self._reply(out, client, request_id, ErrorReply(code="not_leader", detail="ask the leader", hint=hint))

    # ================================================================ batches

    def _on_batch(self, now_ms: float, client: NodeId, request_id: int, batch: TxnBatch, out: Effects) -> None:
        """Each commit of the batch as if it came alone, under an internal id;
        ``_route_batches`` gathers the answers into one reply."""
        count = len(batch.items)
        if not 0 < count <= self.config.batch_items_max or not all(isinstance(i, TxnCommit) for i in batch.items):
            self._reply(out, client, request_id, ErrorReply(
                code="too_large" if count > self.config.batch_items_max else "bad_request",
                detail=f"a batch holds 1 to {self.config.batch_items_max} commits"))
            return
        self._counts["batches"] += 1
        key = self._batch_seq - 1
        entry = _Batch(client=client, request_id=request_id, answers=[None] * count, missing=count,
                       internal_ids=[])
        self._batches[key] = entry
        for index, item in enumerate(batch.items):
            self._batch_seq -= 1
            internal = self._batch_seq
            entry.internal_ids.append(internal)
            self._batch_items[internal] = (key, index)
            self._on_client(now_ms, client, internal, item, out)
        while len(self._batches) > BATCHES_MAX:
            forgotten = self._batches.pop(next(iter(self._batches)))
            self._counts["batches_forgotten"] += 1
            for internal in forgotten.internal_ids:
                self._batch_items.pop(internal, None)

    def _route_batches(self, effects: Effects) -> Effects:
        """Turn answers to batch items into batch replies (once a batch is whole)."""
        out: Effects = []
        for effect in effects:
            if not isinstance(effect, ClientResult) or effect.request_id >= 0:
                out.append(effect)
                continue
            place = self._batch_items.pop(effect.request_id, None)
            if place is None:
                continue   # an item of a forgotten batch
            key, index = place
            batch = self._batches[key]
            invariant(batch.answers[index] is None, f"batch item {effect.request_id} answered twice")
            batch.answers[index] = effect.result
            batch.missing -= 1
            if batch.missing == 0:
                del self._batches[key]
                answers = tuple(a for a in batch.answers if a is not None)
                out.append(ClientResult(client=batch.client, request_id=batch.request_id,
                                        result=TxnBatchReply(items=answers)))
        return out

    # ================================================================ clients

    def _on_client(self, now_ms: float, client: NodeId, request_id: int, body: Message, out: Effects) -> None:
        self._sync(now_ms, out)
        match body:
            case TxnGet() | TxnScan():
                self._on_read(now_ms, client, request_id, body, out)
            case TxnCommit():
                self._on_commit(now_ms, client, request_id, body, out)
            case TxnRelease():
                self._on_release(now_ms, client, request_id, body, out)
            case Watch():
                self._on_watch(client, request_id, body, out)
            case WatchWait():
                self._on_watch_wait(now_ms, client, request_id, body, out)
            case ChangeMembers() | TransferLeader():
                out.extend(self.replica.on_message(now_ms, client,
                                                   ClientRequest(request_id=request_id, body=body)))
            case _:
                # Raw Paxos commands would bypass the locks: refused.
                self._reply(out, client, request_id, ErrorReply(code="bad_request", detail=type(body).__name__))

    def _check_read(self, body: TxnGet | TxnScan) -> None:
        if isinstance(body, TxnGet):
            check_key(body.key, self.config)
            if not self.shard.covers(body.key):
                raise WrongShardError(f"{body.key!r} is not in shard {self.group}", key=body.key)
            return
        check_key(body.start, self.config)
        if body.end:
            check_key(body.end, self.config)
        if body.limit <= 0 or body.limit > self.config.scan_keys_max:
            raise TxnTooLargeError(f"scan limit must be 1..{self.config.scan_keys_max}")
        if not self.shard.covers(body.start) or (self.shard.end and (not body.end or body.end > self.shard.end)):
            raise WrongShardError(f"[{body.start!r}, {body.end!r}) is not within shard {self.group}",
                                  key=body.start)

    def _on_read(self, now_ms: float, client: NodeId, request_id: int, body: TxnGet | TxnScan,
                 out: Effects) -> None:
        try:
            self._check_read(body)
        except TxnError as error:
            self._refuse(out, client, request_id, error)
            return
        ballot = self.ready_ballot
        if ballot is None:
            self._not_leader(out, client, request_id)
            return
        refusal = self._txn_refusal(body.txn)
        if refusal is not None:
            self._refuse(out, client, request_id, refusal)
            return
        self._token_seq += 1
        token = self._token_seq
        if isinstance(body, TxnGet):
            wait = _LockWait(kind="get", txn=body.txn, client=client, request_id=request_id, key=body.key)
            request = Request(token=token, txn=body.txn, key=body.key, mode=Mode.SHARED)
        else:
            wait = _LockWait(kind="scan", txn=body.txn, client=client, request_id=request_id, key=body.start,
                             end=body.end, limit=body.limit)
            request = Request(token=token, txn=body.txn, key=body.start, mode=Mode.SHARED, end=body.end)
        self._lock_waits[token] = wait
        outcome = self.locks.acquire(request, body.ts, ballot, now_ms)
        if outcome.refused:
            del self._lock_waits[token]
            self._refuse(out, client, request_id, OverloadedError("too many transactions or lock waiters"))
            return
        self._settle(now_ms, outcome, out)

    def _txn_refusal(self, txn: str) -> TxnError | None:
        """Why ``txn`` may not take locks here any more, if it may not."""
        aborted = self.locks.aborted.get(txn)
        if aborted is not None:
            return ConflictError(f"transaction {txn} was aborted here (conflict on {aborted!r})", key=aborted)
        entry = self.locks.entry(txn)
        if (entry is not None and entry.prepared) or txn in self._preparing:
            return TxnStateError(f"transaction {txn} is committing; no more operations")
        if self.machine.outcome(txn) is not None:
            return TxnStateError(f"transaction {txn} already ended")
        return None

    def _on_release(self, now_ms: float, client: NodeId, request_id: int, body: TxnRelease, out: Effects) -> None:
        if self.ready_ballot is None:
            self._not_leader(out, client, request_id)
            return
        entry = self.locks.entry(body.txn)
        if (entry is not None and entry.prepared) or body.txn in self._preparing:
            self._refuse(out, client, request_id, TxnStateError(f"transaction {body.txn} is committing"))
            return
        self._abort_locally(now_ms, body.txn, "released by the client", out)
        self._reply(out, client, request_id, TxnOutcome(txn=body.txn, committed=False))

    def _on_watch(self, client: NodeId, request_id: int, body: Watch, out: Effects) -> None:
        changes, kept = self.machine.changes(body.start, body.end, body.from_revision, self.config.scan_keys_max)
        if not kept:
            self._refuse(out, client, request_id, CompactedError(f"revision {body.from_revision} was compacted"))
            return
        self._reply(out, client, request_id, WatchEvents(events=tuple(changes), revision=self.machine.revision))

    def _on_watch_wait(self, now_ms: float, client: NodeId, request_id: int, body: WatchWait,
                       out: Effects) -> None:
        """A long poll: answered now if there is something to say, else parked
        until a change in the range is applied here or the wait runs out. Any
        replica serves it, from its applied state, as ``Watch``."""
        changes, kept = self.machine.changes(body.start, body.end, body.from_revision, self.config.scan_keys_max)
        if not kept:
            self._refuse(out, client, request_id, CompactedError(f"revision {body.from_revision} was compacted"))
            return
        if changes or body.wait_ms <= 0:
            self._reply(out, client, request_id, WatchEvents(events=tuple(changes), revision=self.machine.revision))
            return
        if len(self._watches) >= self.config.watches_waiting_max:
            self._refuse(out, client, request_id, OverloadedError("too many watches waiting"))
            return
        wait_ms = min(body.wait_ms, self.config.watch_wait_ms_max)
        self._watches.append(_WaitingWatch(client=client, request_id=request_id, watch=body,
                                           deadline_ms=now_ms + wait_ms))
        self._watches_revision = self.machine.revision

    def _wake_watches(self, out: Effects) -> None:
        """Answer the waiting watches that a newly applied change concerns."""
        if not self._watches:
            return
        revision = self.machine.revision
        if revision <= self._watches_revision:
            return
        self._watches_revision = revision
        waiting = []
        for parked in self._watches:
            watch = parked.watch
            changes, kept = self.machine.changes(watch.start, watch.end, watch.from_revision,
                                                 self.config.scan_keys_max)
            if not kept:
                self._refuse(out, parked.client, parked.request_id,
                             CompactedError(f"revision {watch.from_revision} was compacted"))
            elif changes:
                self._reply(out, parked.client, parked.request_id,
                            WatchEvents(events=tuple(changes), revision=revision))
            else:
                waiting.append(parked)
        self._watches = waiting

    def _expire_watches(self, now_ms: float, out: Effects) -> None:
        if not self._watches:
            return
        revision = self.machine.revision
        waiting = []
        for parked in self._watches:
            if now_ms >= parked.deadline_ms:
                self._reply(out, parked.client, parked.request_id, WatchEvents(events=(), revision=revision))
            else:
                waiting.append(parked)
        self._watches = waiting

    def _validate_commit(self, body: TxnCommit) -> None:
        if not body.parts:
            raise TxnStateError("a commit needs at least one part")
        if body.parts[0].group != self.group:
            raise WrongShardError(f"the coordinator group is {body.parts[0].group}, not {self.group}")
        groups = [p.group for p in body.parts]
        if len(set(groups)) != len(groups):
            raise TxnStateError("a group appears in two parts")
        total_keys = 0
        for part in body.parts:
            check_part(part, self.config)
            if (part.read_keys or part.read_ranges) and not part.read_ballots:
                raise TxnStateError(f"the reads at {part.group} carry no read ballot (the ballot of "
                                    "the leader that served them, from each read's answer)")
            if len(part.read_ballots) > 8:
                raise TxnTooLargeError(f"{len(part.read_ballots)} read ballots at {part.group}: at most 8")
            total_keys += len(part.read_keys) + len(part.writes) + 2 * len(part.read_ranges)
            try:
                shard = self.shard_map.shard(part.group)
            except KeyError:
                raise WrongShardError(f"unknown group {part.group}") from None
            for key in (*part.read_keys, *(w.key for w in part.writes)):
                if not shard.covers(key):
                    raise WrongShardError(f"{key!r} is not in shard {part.group}", key=key)
        if total_keys > self.config.txn_keys_max:
            raise TxnTooLargeError(f"{total_keys} keys over the limit of {self.config.txn_keys_max}")
        size = sum(len(w.key) + len(w.value or "") for p in body.parts for w in p.writes)
        if size > self.config.txn_bytes_max:
            raise TxnTooLargeError(f"{size} bytes of writes over the limit of {self.config.txn_bytes_max}")

    def _on_commit(self, now_ms: float, client: NodeId, request_id: int, body: TxnCommit, out: Effects) -> None:
        try:
            self._validate_commit(body)
        except TxnError as error:
            self._refuse(out, client, request_id, error)
            return
        if self.ready_ballot is None:
            self._not_leader(out, client, request_id)
            return
        coordination = self._coordinating.get(body.txn)
        if coordination is not None:
            if len(coordination.clients) < 8:
                coordination.clients.append((client, request_id))
            return
        prep = self._preparing.get(body.txn)
        if prep is not None and prep.fast_client is not None:
            prep.fast_client = (client, request_id)   # a re-sent fast-path commit
            return
        outcome = self.machine.outcome(body.txn)
        state = self.machine.record_state(body.txn)
        if state in (COMMITTED, ABORTED):
            outcome = state == COMMITTED
        if outcome is True:
            self._reply(out, client, request_id, TxnOutcome(txn=body.txn, committed=True))
            return
        if outcome is False:
            self._refuse(out, client, request_id, TxnAbortedError(f"transaction {body.txn} was aborted"))
            return
        aborted = self.locks.aborted.get(body.txn)
        if aborted is not None:
            self._refuse_commit(now_ms, out, client, request_id,
                                ConflictError(f"transaction {body.txn} lost a conflict on {aborted!r}", key=aborted))
            return
        if len(self._coordinating) + len(self._preparing) >= self.config.txns_active_max:
            self._refuse(out, client, request_id, OverloadedError("too many transactions committing"))
            return
        if len(body.parts) == 1:
            self._fast_commit(now_ms, client, request_id, body, out)
            return
        read_only = not any(p.writes for p in body.parts)
        coordination = _Coordination(txn=body.txn, ts=body.ts, parts=body.parts, read_only=read_only,
                                     state=CoordinatorState.BEGINNING,
                                     deadline_ms=now_ms + self.config.txn_record_timeout_ms,
                                     clients=[(client, request_id)])
        self._coordinating[body.txn] = coordination
        if read_only:
            coordination.move(CoordinatorState.VOTING)
            self._send_prepares(now_ms, coordination, out)
            return
        coordination.proposing = True
        self._propose(now_ms, RecordBeginOp(txn=body.txn, ts=body.ts, parts=body.parts), "begin", body.txn, out)
        # Participants prepare while the record is being chosen (one round less):
        # no decision is taken before the record is applied, and a participant
        # in doubt about a transaction whose record never got chosen is told
        # abort (presumed abort), which is then the truth.
        self._send_prepares(now_ms, coordination, out)

    def _refuse_commit(self, now_ms: float, out: Effects, client: NodeId, request_id: int,
                       error: TxnError) -> None:
        """Refuse a commit for want of locks -- a definite abort only while this
        leader's lease holds. A deposed leader that does not know it yet lacks the
        locks because a newer leader holds them, and that one may be committing
        the transaction right now (a client re-sent its commit): the outcome is
        unknown here (found by sim seed 408, a list append applied twice)."""
        if self.replica.has_read_lease(now_ms):
            self._refuse(out, client, request_id, error)
            return
        self._counts["commit_refusal_deferred"] += 1
        self._reply(out, client, request_id, ErrorReply(
            code="unavailable", detail="not sure to lead: the outcome is unknown here; ask again"))

    def _fast_commit(self, now_ms: float, client: NodeId, request_id: int, body: TxnCommit, out: Effects) -> None:
        part = body.parts[0]
        ballot = self.ready_ballot
        assert ballot is not None
        if part.read_keys or part.read_ranges:
            missing = self.locks.holds(body.txn, part.read_keys, part.read_ranges, ballot)
            if missing is not None:
                self._abort_locally(now_ms, body.txn, missing, out)
                self._refuse_commit(now_ms, out, client, request_id, ConflictError(
                    f"transaction {body.txn} no longer holds its lock on {missing!r}", key=missing))
                return
            stale = stale_read(True, part.read_ballots, ballot)
            if stale is not None:
                key = _first_read(part)
                self._counts["stale_reads_refused"] += 1
                self._abort_locally(now_ms, body.txn, key, out)
                self._refuse_commit(now_ms, out, client, request_id, ConflictError(
                    f"transaction {body.txn}: {stale} (read of {key!r})", key=key))
                return
        if not part.writes and self.replica.has_read_lease(now_ms):
            self._counts["fast_read_only"] += 1
            self._finish_locally(now_ms, body.txn, out)
            self._reply(out, client, request_id, TxnOutcome(txn=body.txn, committed=True))
            return
        prep = _Preparing(txn=body.txn, ts=body.ts, coordinator=self.group, part=part,
                          fast_client=(client, request_id))
        self._lock_writes(now_ms, prep, out)

    def _lock_writes(self, now_ms: float, prep: _Preparing, out: Effects) -> None:
        """Take the write locks of ``prep``; continue in ``_prepare_locked`` once all are held."""
        ballot = self.ready_ballot
        assert ballot is not None
        self._preparing[prep.txn] = prep
        prep.started_ms = now_ms
        if self.locks.begin(prep.txn, prep.ts, ballot, now_ms) is None:
            self._prepare_failed(prep, OverloadedError("too many transactions"), out)
            return
        # Every token is registered before the first request, so that a grant
        # cannot look like the last one while later locks are still to be asked.
        requests = []
        # A fast-path transaction that read nothing writes blindly: blind
        # writers of a key share it (see ``synod.txn.locks``).
        blind = prep.fast_client is not None and not (prep.part.read_keys or prep.part.read_ranges)
        mode = Mode.BLIND if blind else Mode.EXCLUSIVE
        for write in prep.part.writes:
            self._token_seq += 1
            token = self._token_seq
            prep.waiting.add(token)
            self._lock_waits[token] = _LockWait(kind="prepare", txn=prep.txn, key=write.key)
            requests.append(Request(token=token, txn=prep.txn, key=write.key, mode=mode))
        for request in requests:
            if self._preparing.get(prep.txn) is not prep:
                return  # wounded while taking an earlier lock
            outcome = self.locks.acquire(request, prep.ts, ballot, now_ms)
            if outcome.refused:
                self._prepare_failed(prep, OverloadedError("too many lock waiters"), out)
                return
            self._settle(now_ms, outcome, out)
        if self._preparing.get(prep.txn) is prep and not prep.waiting and not prep.proposed:
            self._prepare_locked(now_ms, prep, out)

    def _prepare_locked(self, now_ms: float, prep: _Preparing, out: Effects) -> None:
        ballot = self.ready_ballot
        assert ballot is not None
        if prep.fast_client is None and mutant(MUTANT_COMMIT_WITHOUT_PREPARE):
            # The planted bug: a yes vote with no prepare record behind it, so
            # nothing marks the locks prepared nor keeps them past this leader.
            prep.voted = True
            self._send_group(prep.coordinator, Vote(txn=prep.txn, group=self.group, yes=True), out)
            return
        self.locks.mark_prepared(prep.txn)
        prep.proposed = True
        if prep.fast_client is not None:
            op: Message = FastCommitOp(txn=prep.txn, ts=prep.ts, writes=prep.part.writes, lock_ballot=ballot,
                                       read_ballots=prep.part.read_ballots)
            self._propose(now_ms, op, "fast", prep.txn, out)
            return
        record = PrepareOp(txn=prep.txn, ts=prep.ts, coordinator=prep.coordinator, part=prep.part,
                           lock_ballot=ballot)
        self._propose(now_ms, record, "prepare", prep.txn, out)

    def _prepare_failed(self, prep: _Preparing, error: TxnError, out: Effects) -> None:
        self._preparing.pop(prep.txn, None)
        for token in prep.waiting:
            self._lock_waits.pop(token, None)
        if prep.fast_client is not None:
            self._refuse(out, prep.fast_client[0], prep.fast_client[1], error)
        else:
            self._send_group(prep.coordinator, Vote(txn=prep.txn, group=self.group, yes=False, code=error.code,
                                                    key=error.key), out)

    # ================================================================ locks

    def _settle(self, now_ms: float, outcome: Outcome, out: Effects) -> None:
        """Act on a lock operation: wounded transactions abort, granted requests go on."""
        for txn, key in outcome.wounded.items():
            self._on_wounded(now_ms, txn, key, out)
        for token in outcome.granted:
            self._on_granted(now_ms, token, out)

    def _give_up_waiting(self, now_ms: float, prep: _Preparing, key: str, out: Effects) -> None:
        """A cross-shard prepare waited ``prepare_wait_ms`` for a write lock an
        older, unprepared transaction holds: vote no.

        Wound-wait alone does not prevent every deadlock across shards: a
        transaction prepared at one shard is never wounded there, so an older one
        may wait for it there while its prepare here waits for the older one
        (sim seed 2051: an audit reading, a transfer preparing). Only the record
        timeout would end that; a bounded wait ends it sooner. Waiting for a
        prepared holder goes on (it usually just needs its decision; the rare
        cycle of two transactions each prepared at one shard and waiting at the
        other is left to the record timeout), and the fast path holds nothing
        prepared elsewhere, so it waits as long as it needs."""
        self._counts["prepare_wait_expired"] += 1
        self._prepare_failed(prep, ConflictError(
            f"transaction {prep.txn} waited {self.config.prepare_wait_ms:.0f} ms for the lock on {key!r}",
            key=key), out)
        # It votes no, so it will abort: its locks and queued requests go now.
        self._abort_locally(now_ms, prep.txn, key, out)

    def _on_wounded(self, now_ms: float, txn: str, key: str, out: Effects) -> None:
        self._counts["wounded"] += 1
        error = ConflictError(f"transaction {txn} was wounded by an older transaction on {key!r}", key=key)
        for token, wait in list(self._lock_waits.items()):
            if wait.txn == txn:
                del self._lock_waits[token]
                if wait.client is not None:
                    self._refuse(out, wait.client, wait.request_id, error)
        prep = self._preparing.get(txn)
        if prep is not None:
            if prep.voted and not prep.proposed:
                # Only under the planted commit_without_prepare: it voted yes
                # but held nothing prepared; it forgets the transaction.
                self._preparing.pop(txn, None)
                return
            if prep.proposed:
                # Only the planted bug wounds a prepared transaction; it then
                # goes on as if nothing happened, which is the bug.
                invariant(mutant(MUTANT_WOUND_PREPARED), f"prepared transaction {txn} was wounded")
                return
            self._prepare_failed(prep, error, out)

    def _on_granted(self, now_ms: float, token: int, out: Effects) -> None:
        wait = self._lock_waits.pop(token, None)
        if wait is None:
            return
        if wait.kind == "prepare":
            prep = self._preparing.get(wait.txn)
            if prep is None:
                return
            prep.waiting.discard(token)
            if not prep.waiting and not prep.proposed:
                self._prepare_locked(now_ms, prep, out)
            return
        assert wait.client is not None
        # The answer names the ballot it was served under: the commit carries it
        # back, and only a leader (and an epoch) of that ballot accepts it.
        ballot = self.ready_ballot
        invariant(ballot is not None, "a read answered by a server that is not a ready leader")
        if wait.kind == "get":
            value, revision = self.machine.get(wait.key)
            self._reply(out, wait.client, wait.request_id, TxnValue(value=value, revision=revision, ballot=ballot))
        else:
            rows, more = self.machine.scan(wait.key, wait.end, wait.limit)
            self._reply(out, wait.client, wait.request_id,
                        TxnRows(rows=tuple(rows), more=more, revision=self.machine.revision, ballot=ballot))

    def _abort_locally(self, now_ms: float, txn: str, reason: str, out: Effects) -> None:
        for token, wait in list(self._lock_waits.items()):
            if wait.txn == txn:
                del self._lock_waits[token]
                if wait.client is not None:
                    self._refuse(out, wait.client, wait.request_id, TxnAbortedError(f"{txn}: {reason}"))
        outcome, _ = self.locks.release(txn, aborted_by=reason)
        self._settle(now_ms, outcome, out)

    def _finish_locally(self, now_ms: float, txn: str, out: Effects) -> None:
        self._preparing.pop(txn, None)
        self._in_doubt.pop(txn, None)
        outcome, _ = self.locks.release(txn)
        self._settle(now_ms, outcome, out)

    # ================================================================ peers (2PC)

    def _on_peer(self, now_ms: float, source: NodeId, message: Message, out: Effects) -> None:
        if self.ready_ballot is None:
            self._counts["peer_not_leader"] += 1
            return
        match message:
            case PrepareRequest():
                self._on_prepare_request(now_ms, message, out)
            case Vote():
                self._on_vote(now_ms, message, out)
            case Decision():
                self._on_decision(now_ms, message, out)
            case DecisionAck():
                self._on_decision_ack(now_ms, message, out)
            case DecisionQuery():
                self._on_decision_query(now_ms, message, out)
            case _:
                self._counts["unknown_peer_message"] += 1

    def _vote(self, txn: str, coordinator: str, out: Effects, yes: bool, code: str = "", key: str = "") -> None:
        self._send_group(coordinator, Vote(txn=txn, group=self.group, yes=yes, code=code, key=key), out)

    def _on_prepare_request(self, now_ms: float, message: PrepareRequest, out: Effects) -> None:
        part = message.part
        if part.group != self.group:
            self._counts["prepare_for_other_group"] += 1
            return
        decided = self.machine.outcome(message.txn)
        if decided is not None:
            self._vote(message.txn, message.coordinator, out, decided, "" if decided else "aborted")
            return
        if message.txn in self._deciding:
            return   # a decision is being applied here: the answer follows from it
        if self.machine.is_prepared(message.txn):
            self._vote(message.txn, message.coordinator, out, True)
            return
        prep = self._preparing.get(message.txn)
        if prep is not None:
            if prep.voted:
                self._vote(message.txn, message.coordinator, out, True)
            return
        try:
            check_part(part, self.config)
        except TxnError as error:
            self._vote(message.txn, message.coordinator, out, False, error.code, error.key)
            return
        ballot = self.ready_ballot
        assert ballot is not None
        if part.read_keys or part.read_ranges:
            missing = self.locks.holds(message.txn, part.read_keys, part.read_ranges, ballot)
            if missing is not None:
                self._abort_locally(now_ms, message.txn, missing, out)
                self._vote(message.txn, message.coordinator, out, False, "conflict", missing)
                return
            if stale_read(True, part.read_ballots, ballot) is not None:
                key = _first_read(part)
                self._counts["stale_reads_refused"] += 1
                self._abort_locally(now_ms, message.txn, key, out)
                self._vote(message.txn, message.coordinator, out, False, "conflict", key)
                return
        elif message.txn in self.locks.aborted:
            key = self.locks.aborted[message.txn]
            self._vote(message.txn, message.coordinator, out, False, "conflict", key)
            return
        if message.read_only:
            # Nobody writes anywhere: the locks held under a lease that still
            # runs are enough (no other leader can have written since).
            lease = self.replica.has_read_lease(now_ms)
            self._vote(message.txn, message.coordinator, out, lease, "" if lease else "unavailable")
            return
        self._lock_writes(now_ms, _Preparing(txn=message.txn, ts=message.ts, coordinator=message.coordinator,
                                             part=part), out)

    def _exchanged(self, sent_ms: float, now_ms: float) -> None:
        """An answer came ``now_ms - sent_ms`` after its request: update the estimate."""
        sample_ms = min(max(0.0, now_ms - sent_ms), self.config.txn_record_timeout_ms)
        self._exchange_ms += (sample_ms - self._exchange_ms) / 8

    def _resend_wait_ms(self) -> float:
        """How long an unanswered 2PC message waits before its first re-send:
        ``resend_ms``, or twice the smoothed exchange time if that is longer (at
        most a quarter of ``txn_record_timeout_ms``). Under load a Paxos round
        takes longer than ``resend_ms``, and re-sending then -- to every replica
        of the group -- only adds work to processes already behind (in the
        bench, fixed re-sends every 50 ms cost a third of the CPU of a cross-shard
        transaction). A lost message costs about two exchanges."""
        return min(self.config.txn_record_timeout_ms / 4, max(self.config.resend_ms, 2 * self._exchange_ms))

    def _resend_wait_max_ms(self) -> float:
        return max(self._resend_wait_ms(), self.config.resend_backoff_max * self.config.resend_ms)

    def _mark_in_doubt(self, txn: str, coordinator: str, now_ms: float) -> None:
        """``txn`` is prepared here: ask its coordinator if no decision comes soon."""
        interval_ms = 2 * self._resend_wait_ms()
        self._in_doubt[txn] = (coordinator, now_ms + interval_ms, interval_ms, now_ms)

    def _resent(self, now_ms: float, coordination: _Coordination, broadcast: bool) -> None:
        """Note a send: a first one is re-sent after ``_resend_wait_ms``, a re-send
        (a broadcast on the tick) after twice the wait before it, capped."""
        coordination.sent_ms = now_ms
        if broadcast and coordination.resend_after_ms:
            coordination.resend_after_ms = min(2 * coordination.resend_after_ms, self._resend_wait_max_ms())
        else:
            coordination.first_sent_ms = now_ms
            coordination.resend_after_ms = self._resend_wait_ms()

    def _send_prepares(self, now_ms: float, coordination: _Coordination, out: Effects, *,
                       broadcast: bool = False) -> None:
        self._resent(now_ms, coordination, broadcast)
        for part in coordination.parts:
            if part.group not in coordination.votes:
                self._send_group(part.group, PrepareRequest(txn=coordination.txn, ts=coordination.ts,
                                                            coordinator=self.group, part=part,
                                                            read_only=coordination.read_only), out,
                                 broadcast=broadcast)

    def _on_vote(self, now_ms: float, message: Vote, out: Effects) -> None:
        coordination = self._coordinating.get(message.txn)
        if coordination is None:
            # Late, duplicated, or a vote for a transaction this group never
            # coordinated (bad input): counted and ignored.
            self._counts["vote_for_unknown_txn"] += 1
            return
        if coordination.state not in (CoordinatorState.BEGINNING, CoordinatorState.VOTING):
            return
        if message.group not in {p.group for p in coordination.parts}:
            self._counts["vote_from_non_participant"] += 1
            return
        if message.group not in coordination.votes:
            self._exchanged(coordination.first_sent_ms, now_ms)
        coordination.votes[message.group] = message.yes
        if not message.yes and not coordination.no_code:
            coordination.no_code = message.code or "aborted"
            coordination.no_key = message.key
        self._maybe_decide(now_ms, coordination, out)

    def _maybe_decide(self, now_ms: float, coordination: _Coordination, out: Effects) -> None:
        """Decide once the record is applied and the votes allow it."""
        if coordination.state is not CoordinatorState.VOTING:
            return
        if not all(coordination.votes.values()):
            self._decide(now_ms, coordination, False, out)
        elif all(coordination.votes.get(p.group) for p in coordination.parts):
            self._decide(now_ms, coordination, True, out)

    def _decide(self, now_ms: float, coordination: _Coordination, commit: bool, out: Effects) -> None:
        self._counts["decided_commit" if commit else "decided_abort"] += 1
        if coordination.read_only:
            coordination.decision = commit
            coordination.move(CoordinatorState.DECIDED)
            self._answer_clients(coordination, out)
            self._send_decisions(now_ms, coordination, out)
            del self._coordinating[coordination.txn]
            return
        coordination.move(CoordinatorState.DECIDING)
        coordination.proposing = True
        self._propose(now_ms, RecordDecideOp(txn=coordination.txn, commit=commit), "record_decide",
                      coordination.txn, out)

    def _answer_clients(self, coordination: _Coordination, out: Effects) -> None:
        for client, request_id in coordination.clients:
            if coordination.decision:
                self._reply(out, client, request_id, TxnOutcome(txn=coordination.txn, committed=True))
            elif coordination.no_code == "conflict":
                self._refuse(out, client, request_id, ConflictError(
                    f"transaction {coordination.txn} lost a conflict on {coordination.no_key!r}",
                    key=coordination.no_key))
            else:
                self._refuse(out, client, request_id, TxnAbortedError(
                    f"transaction {coordination.txn} aborted ({coordination.no_code or 'timeout'})",
                    key=coordination.no_key))
        coordination.clients.clear()

    def _send_decisions(self, now_ms: float, coordination: _Coordination, out: Effects, *,
                        broadcast: bool = False) -> None:
        self._resent(now_ms, coordination, broadcast)
        commit = bool(coordination.decision)
        for part in coordination.parts:
            if part.group in coordination.acks:
                continue
            writes = part.writes if commit and mutant(MUTANT_COMMIT_WITHOUT_PREPARE) else ()
            self._send_group(part.group, Decision(txn=coordination.txn, coordinator=self.group, commit=commit,
                                                  writes=writes), out, broadcast=broadcast)

    def _on_decision(self, now_ms: float, message: Decision, out: Effects) -> None:
        ack = DecisionAck(txn=message.txn, group=self.group)
        if self.machine.outcome(message.txn) is not None:
            # Applied here already (by a DecideOp, or -- at the coordinator's
            # own group -- with the decision record itself): its locks go.
            self._finish_locally(now_ms, message.txn, out)
            self._send_group(message.coordinator, ack, out)
            return
        if message.txn in self._deciding:
            return
        doubt = self._in_doubt.get(message.txn)
        if doubt is not None:
            self._exchanged(doubt[3], now_ms)
        prep = self._preparing.get(message.txn)
        prepared_here = self.machine.is_prepared(message.txn) or (
            prep is not None and (prep.proposed or prep.voted))
        if message.commit and not prepared_here and not message.writes:
            # Nothing prepared here: either the whole transaction was read-only
            # (nobody waits for an acknowledgement) or this leader is deposed and
            # does not know it yet (the prepare record is its successor's). Release
            # what locks it holds, and do NOT acknowledge: an acknowledgement lets
            # the coordinator forget the record the real leader still needs (found
            # by sim seed 411: a stale leader's ack, then a presumed abort).
            self._finish_locally(now_ms, message.txn, out)
            return
        if prep is not None and not prepared_here:
            # An abort overtook a prepare still taking its locks: stop it.
            self._preparing.pop(message.txn, None)
            for token in prep.waiting:
                self._lock_waits.pop(token, None)
        # Log the decision (an abort too, so a late duplicate prepare is refused).
        self._deciding.add(message.txn)
        self._mark_in_doubt(message.txn, message.coordinator, now_ms)
        self._propose(now_ms, DecideOp(txn=message.txn, commit=message.commit, writes=message.writes),
                      "decide", message.txn, out)

    def _on_decision_ack(self, now_ms: float, message: DecisionAck, out: Effects) -> None:
        coordination = self._coordinating.get(message.txn)
        if coordination is None or coordination.state is not CoordinatorState.DECIDED:
            return
        if message.group not in coordination.acks:
            self._exchanged(coordination.first_sent_ms, now_ms)
        coordination.acks.add(message.group)
        if all(p.group in coordination.acks for p in coordination.parts):
            # Forgotten in batches on the tick (one log slot for many records).
            coordination.move(CoordinatorState.FORGETTING)

    def _on_decision_query(self, now_ms: float, message: DecisionQuery, out: Effects) -> None:
        state = self.machine.record_state(message.txn)
        if state == PENDING or (message.txn in self._coordinating and state is None):
            return  # still deciding; the decision will be sent
        known = self.machine.outcome(message.txn) if state is None else None
        if known is not None:
            # Forgotten after every participant acknowledged; this group's own
            # part remembers the outcome (a late query from a deposed leader).
            self._counts["answered_query_from_outcome"] += 1
            self._send_group(message.group, Decision(txn=message.txn, coordinator=self.group, commit=known), out)
            return
        if state is None and not self.replica.has_read_lease(now_ms):
            # Presumed abort rests on "there is no record", which only a leader
            # whose lease holds may say: a deposed leader that does not know it
            # yet may lack a record its successor has chosen (found by seed 202).
            self._counts["presumed_abort_deferred"] += 1
            return
        if state is None:
            # Make the presumption durable before saying it: an aborted tombstone
            # record, so that the client re-sending this commit later cannot
            # begin the transaction anew (found by seed 103 with four shards).
            if message.txn not in self._presuming:
                self._presuming[message.txn] = message.group
                self._counts["presumed_abort"] += 1
                self._propose(now_ms, RecordDecideOp(txn=message.txn, commit=False), "presume", message.txn, out)
            return
        self._counts["answered_query"] += 1
        self._send_group(message.group, Decision(txn=message.txn, coordinator=self.group,
                                                 commit=state == COMMITTED), out)

    # ================================================================ applied proposals

    def _on_applied(self, now_ms: float, request_id: int, result: Message, out: Effects) -> None:
        proposal = self._proposals.pop(request_id, None)
        if proposal is None:
            return
        kind, txn = proposal
        if kind == "presume":
            group = self._presuming.pop(txn, "")
            if isinstance(result, CommandResult) and group:
                applied_presume = decode(result.result)
                if isinstance(applied_presume, OpResult) and applied_presume.status != "refused":
                    commit = applied_presume.detail == COMMITTED
                    self._send_group(group, Decision(txn=txn, coordinator=self.group, commit=commit), out)
            return
        if kind == "forget":
            batch = self._forget_batches.pop(request_id, ())
            for txn in batch:
                coordination = self._coordinating.get(txn)
                if coordination is None:
                    continue
                if isinstance(result, CommandResult):
                    del self._coordinating[txn]
                else:
                    coordination.proposing = False
            return
        if kind == "epoch":
            if not isinstance(result, CommandResult):
                self._epoch_proposed = None   # proposed again on the next event
            return
        items = self._op_batches.pop(request_id, ()) if kind == "batch" else ((kind, txn),)
        if not isinstance(result, CommandResult):
            for item_kind, item_txn in items:
                self._counts[f"proposal_failed_{item_kind}"] += 1
                self._proposal_failed(item_kind, item_txn)
            return
        try:
            applied = decode(result.result)
        except RemoteProtocolError:
            applied = OpResult(status="refused", detail="undecodable result")
        if isinstance(applied, OpResults) and len(applied.items) == len(items) and kind == "batch":
            answers: tuple[OpResult, ...] = applied.items
        else:
            # One op's result; or a batch refused whole (undecodable: a
            # replica's own proposal never is).
            invariant(isinstance(applied, OpResult) and (kind != "batch" or applied.status == "refused"),
                      f"{len(items)} shard op(s) answered with {type(applied).__name__}")
            assert isinstance(applied, OpResult)
            answers = (applied,) * len(items)
        for (item_kind, item_txn), answer in zip(items, answers, strict=True):
            self._dispatch_applied(now_ms, item_kind, item_txn, answer, out)

    def _dispatch_applied(self, now_ms: float, kind: str, txn: str, applied: OpResult, out: Effects) -> None:
        match kind:
            case "fast":
                self._applied_fast(now_ms, txn, applied, out)
            case "prepare":
                self._applied_prepare(now_ms, txn, applied, out)
            case "decide":
                self._applied_decide(now_ms, txn, out)
            case "begin" | "record_decide":
                self._applied_record(now_ms, kind, txn, applied, out)
            case _:
                invariant(False, f"unknown proposal kind {kind}")

    def _proposal_failed(self, kind: str, txn: str) -> None:
        """The replica refused the command (overloaded): let the tick retry."""
        if kind in ("fast", "prepare"):
            prep = self._preparing.get(txn)
            if prep is not None:
                prep.proposed = False
        elif kind == "decide":
            self._deciding.discard(txn)
        else:
            coordination = self._coordinating.get(txn)
            if coordination is not None:
                coordination.proposing = False

    def _applied_fast(self, now_ms: float, txn: str, applied: OpResult, out: Effects) -> None:
        prep = self._preparing.pop(txn, None)
        self._finish_locally(now_ms, txn, out)
        if prep is None or prep.fast_client is None:
            return
        client, request_id = prep.fast_client
        if applied.status == "refused":
            self._refuse(out, client, request_id, TxnAbortedError(applied.detail))
        else:
            self._counts["fast_commits"] += 1
            self._reply(out, client, request_id, TxnOutcome(txn=txn, committed=True))

    def _applied_prepare(self, now_ms: float, txn: str, applied: OpResult, out: Effects) -> None:
        prep = self._preparing.pop(txn, None)
        if prep is None:
            return
        if applied.status == "refused" or applied.detail == ABORTED:
            self._finish_locally(now_ms, txn, out)
            self._vote(txn, prep.coordinator, out, False, "aborted", "")
            return
        self._mark_in_doubt(txn, prep.coordinator, now_ms)
        self._vote(txn, prep.coordinator, out, True)

    def _applied_decide(self, now_ms: float, txn: str, out: Effects) -> None:
        self._deciding.discard(txn)
        coordinator = self._in_doubt.get(txn, ("", 0.0, 0.0, 0.0))[0]
        self._finish_locally(now_ms, txn, out)
        if coordinator:
            self._send_group(coordinator, DecisionAck(txn=txn, group=self.group), out)

    def _applied_record(self, now_ms: float, kind: str, txn: str, applied: OpResult, out: Effects) -> None:
        coordination = self._coordinating.get(txn)
        if coordination is None:
            return
        coordination.proposing = False
        if kind == "begin":
            decided = self.machine.record_state(txn)
            if applied.status == "duplicate" and decided in (COMMITTED, ABORTED):
                # A tombstone (presumed abort) or an earlier attempt decided it.
                coordination.decision = decided == COMMITTED
                coordination.no_code = coordination.no_code or "aborted"
                coordination.move(CoordinatorState.DECIDING)
                coordination.move(CoordinatorState.DECIDED)
                self._answer_clients(coordination, out)
                self._send_decisions(now_ms, coordination, out)
                return
            if applied.status == "refused":
                coordination.no_code = "aborted"
                coordination.decision = False
                self._answer_clients(coordination, out)
                del self._coordinating[txn]
                return
            # The prepare requests went out with the proposal of the record;
            # the tick re-sends them if no vote comes within ``resend_ms``.
            coordination.move(CoordinatorState.VOTING)
            self._maybe_decide(now_ms, coordination, out)
        elif kind == "record_decide":
            # The first decision chosen wins; ``detail`` is the one that did.
            coordination.decision = applied.detail == COMMITTED
            coordination.move(CoordinatorState.DECIDED)
            self._answer_clients(coordination, out)
            self._send_decisions(now_ms, coordination, out)
        else:
            del self._coordinating[txn]

    # ================================================================ the tick

    def _tick(self, now_ms: float, out: Effects) -> None:
        """Re-send what has no answer yet; time out pending records and idle locks."""
        for coordination in list(self._coordinating.values()):
            if coordination.proposing:
                continue
            match coordination.state:
                case CoordinatorState.VOTING:
                    if now_ms >= coordination.deadline_ms:
                        coordination.no_code = "timeout"
                        self._counts["record_timeouts"] += 1
                        self._decide(now_ms, coordination, False, out)
                    elif now_ms - coordination.sent_ms >= coordination.resend_after_ms:
                        self._send_prepares(now_ms, coordination, out, broadcast=True)
                case CoordinatorState.DECIDED:
                    if now_ms - coordination.sent_ms >= coordination.resend_after_ms:
                        self._send_decisions(now_ms, coordination, out, broadcast=True)
                case CoordinatorState.BEGINNING:
                    self._send_prepares(now_ms, coordination, out, broadcast=True)
                    coordination.proposing = True
                    self._propose(now_ms, RecordBeginOp(txn=coordination.txn, ts=coordination.ts,
                                                        parts=coordination.parts), "begin", coordination.txn, out)
                case CoordinatorState.DECIDING:
                    coordination.proposing = True
                    self._propose(now_ms, RecordDecideOp(txn=coordination.txn, commit=False), "record_decide",
                                  coordination.txn, out)
                case CoordinatorState.FORGETTING:
                    pass   # batched below
        batch = tuple(c.txn for c in self._coordinating.values()
                      if c.state is CoordinatorState.FORGETTING and not c.proposing)[:FORGET_BATCH_MAX]
        if batch:
            for txn in batch:
                self._coordinating[txn].proposing = True
            request_id = self._propose(now_ms, RecordForgetOp(txns=batch), "forget", "", out)
            self._forget_batches[request_id] = batch
        for prep in list(self._preparing.values()):
            if prep.txn not in self._preparing or prep.proposed or prep.voted:
                continue
            if not prep.waiting:
                self._prepare_locked(now_ms, prep, out)
            elif prep.fast_client is None and now_ms - prep.started_ms >= self.config.prepare_wait_ms:
                key = self.locks.waits_for_active_older(prep.txn)
                if key is not None:
                    self._give_up_waiting(now_ms, prep, key, out)
        for txn, (coordinator, query_at_ms, interval_ms, since_ms) in list(self._in_doubt.items()):
            if now_ms >= query_at_ms and txn not in self._deciding:
                self._counts["in_doubt_queries"] += 1
                self._send_group(coordinator, DecisionQuery(txn=txn, group=self.group), out, broadcast=True)
                # The next query waits twice as long as this one did (capped).
                interval_ms = min(2 * interval_ms, 2 * self._resend_wait_max_ms())
                self._in_doubt[txn] = (coordinator, now_ms + interval_ms, interval_ms, since_ms)
        for txn in self.locks.idle(now_ms, self.config.txn_idle_ms):
            if txn not in self._preparing:
                self._counts["idle_aborts"] += 1
                self._abort_locally(now_ms, txn, "idle", out)

    # ================================================================ observability

    @property
    def is_ready(self) -> bool:
        return self.ready_ballot is not None

    def in_doubt(self) -> list[str]:
        """Transactions prepared here with no decision applied yet."""
        return [record.txn for record in self.machine.prepared()]

    def statistics(self) -> TxnStatistics:
        return TxnStatistics(
            node=self.node, group=self.group, ready=self.is_ready, ballot=self.ready_ballot,
            revision=self.machine.revision, applied_ops=self.machine.applied, locked_txns=len(self.locks.txns),
            lock_waiters=len(self.locks.waiters), preparing=len(self._preparing),
            coordinating=len(self._coordinating), in_doubt=len(self._in_doubt),
            counts=tuple(sorted(self._counts.items())),
        )

    def status_line(self) -> str:
        return (f"{self.node}/{self.group} {'ready' if self.is_ready else '-'} rev={self.machine.revision} "
                f"locked={len(self.locks.txns)} preparing={len(self._preparing)} "
                f"coordinating={len(self._coordinating)} | {self.replica.status_line()}")


def _first_read(part: Part) -> str:
    """The key a refusal of ``part``'s reads names."""
    return part.read_keys[0] if part.read_keys else (part.read_ranges[0][0] if part.read_ranges else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardServerFactory:
    """A ``synod.core.CoreFactory`` building replicas of one shard. ``engine`` builds
    the storage engine for a node (default: an in-memory SQLite database)."""

    group: str
    shard_map: ShardMap
    config: TxnConfig | None = None
    paxos_config: PaxosConfig | None = None
    engine: Callable[[NodeId], Engine] | None = None
    observer: Callable[[NodeId, int, Value], None] | None = None

    def __call__(self, node: NodeId, rng: random.Random) -> ShardServer:
        engine = self.engine(node) if self.engine is not None else None
        return ShardServer(node, rng, group=self.group, shard_map=self.shard_map, config=self.config,
                           paxos_config=self.paxos_config, engine=engine, observer=self.observer)
