"""The cell's master glue: a sans-IO core wrapping a Paxos replica of the namespace.

Theory of operation
-------------------
Burrows, *The Chubby lock service*, sections 2.8 (sessions and KeepAlives), 2.9
(fail-overs) and 2.5 (caching). Every replica of the cell runs a ``LockServer``:
a ``PaxosReplica`` whose state machine is the ``Namespace``, plus what only the
master needs, all of it in memory:

*Master and epoch.* The replica that leads the Paxos group is the master once it
has had a ``BeginEpoch`` command chosen: the namespace raises the epoch, and the
new master (1) stamps every later time-bearing command with its own clock, moved
forward so it never runs behind the log's clock; (2) gives every session in the
namespace a fresh lease of ``lease_ms`` from now, which outlasts anything the old
master can have promised (the old master's grants ended at most ``lease_ms``
after it last answered); (3) rejects calls that carry another epoch
(``stale_epoch``, with the new epoch as hint) and answers each session's first
KeepAlive with ``failover``, so the client flushes its cache and re-subscribes;
(4) since it cannot know what the old master let clients cache, a write waits
until every session has acknowledged the failover or let its lease run out.

*Sessions and KeepAlives.* A KeepAlive is held open until ``keepalive_early_ms``
before the session's lease ends (or answered at once when events or
invalidations are waiting for the session); the reply extends the lease to
``lease_ms`` from the moment it leaves, and states the lease as a duration from
when the KeepAlive *arrived*. The client counts that duration from when it
*sent* the KeepAlive, so its view of the lease ends before the master's. When a lease runs out the master proposes
``ExpireSession`` with its clock in it; the namespace releases the session's
locks with lock-delay and deletes its ephemeral nodes.

*Caching.* A ``GetContents`` asked with ``cache`` is marked cacheable unless an
invalidation of that path is in progress; the master remembers who caches what.
Before it proposes a change to a cached file (write, delete, ACL change, the
deletion of a session's ephemeral nodes) it sends an ``Invalidation`` to every
session caching it, on that session's KeepAlive reply, and waits until each has
acknowledged it on its next KeepAlive or its lease has ended. Only then does the
change go to Paxos, so no cache can hold the old contents once the change is
chosen.

*Events* come out of the namespace as it applies chosen commands; the master puts
them on the queues of subscribed sessions, and they ride on KeepAlive replies
until acknowledged (at least once, in order).

Roles: a replica is ``FOLLOWER`` (not the master), ``STARTING`` (leads Paxos,
its ``BeginEpoch`` in flight) or ``MASTER``; changed only by ``become_*``.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from synod.codec.kernel import ClientRequest, ErrorReply
from synod.codec.registry import Message, decode, encode
from synod.core.effects import ClientResult, Effects, Persist, Recovered, SetTimer
from synod.core.errors import RemoteProtocolError, invariant
from synod.core.faults import declare_mutant, mutant
from synod.core.ids import NodeId
from synod.lock.config import LockConfig
from synod.lock.errors import LockError
from synod.lock.messages import (
    Acquire,
    BeginEpoch,
    CheckSequencer,
    CloseSession,
    Create,
    Delete,
    Done,
    EpochBegun,
    Event,
    EventKind,
    ExpireSession,
    GetContents,
    Invalidation,
    KeepAlive,
    KeepAliveBatch,
    KeepAliveBatchReply,
    KeepAliveReply,
    ListChildren,
    LockCall,
    LockCallBatch,
    LockCallBatchReply,
    LockReply,
    OpenSession,
    OpenSessions,
    OpError,
    Release,
    SessionEvent,
    SessionOpened,
    SessionsOpened,
    SetAcl,
    Stat,
    Subscribe,
    Write,
)
from synod.lock.namespace import Namespace
from synod.paxos.config import PaxosConfig
from synod.paxos.messages import Command, CommandResult, Read, ReadMode, ReadResult, Value
from synod.paxos.replica import PaxosReplica
from synod.paxos.server import StatusQuery, StatusReply

MUTANT_INVALIDATION_NOT_AWAITED = declare_mutant(
    "lock.invalidation_not_awaited",
    "the master proposes a write without waiting for caches holding the file to "
    "acknowledge their invalidation",
)

#: Timer keys of this glue start with this (the replica's never do).
TIMER_PREFIX = "lock/"
#: Calls waiting for invalidations, at most (back-pressure beyond).
PARKED_CALLS_MAX = 10_000
#: Entries of one ``KeepAliveBatch``, at most.
KEEPALIVE_BATCH_MAX = 4_096
#: Entries of one ``LockCallBatch``, at most.
CALL_BATCH_MAX = 1_024
#: Subscriptions per session, at most.
SUBSCRIPTIONS_PER_SESSION_MAX = 1_000

_READ_ONLY = (GetContents, Stat, ListChildren, CheckSequencer)


def principal_of(source: NodeId) -> str:
    """The authenticated principal behind a message source: the runtime names a
    client connection ``<principal>#<n>``; the simulator names clients by node."""
    return source.partition("#")[0]


class Role(enum.Enum):
    FOLLOWER = "follower"
    STARTING = "starting"
    MASTER = "master"


@dataclass(frozen=True, slots=True, kw_only=True)
class LockServerStatistics:
    role: str
    epoch: int
    sessions: int
    parked_calls: int
    cached_paths: int
    invalidations_sent: int
    events_queued: int
    sessions_expired: int
    calls: int
    keepalives: int


@dataclass(slots=True)
class _Call:
    """A client call the master is working on."""

    client: NodeId
    request_id: int
    call: LockCall
    session: int
    cache: bool = False
    mark: int = 0
    changing: tuple[str, ...] = ()


@dataclass(slots=True)
class _Parked:
    """A change waiting until the caches that hold its paths are invalidated."""

    call: _Call | None
    command: Message
    waiting: set[int]


@dataclass(slots=True)
class _HeldBatch:
    """A ``KeepAliveBatch`` the master holds: per entry its session and, for an
    entry answered at once, that answer (None: held, answered with the batch)."""

    client: NodeId
    request_id: int
    sessions: list[int] = field(default_factory=list)
    replies: list[Message | None] = field(default_factory=list)


@dataclass(slots=True)
class _CallBatch:
    """A ``LockCallBatch`` being answered: one slot per entry."""

    client: NodeId
    request_id: int
    replies: list[LockReply | ErrorReply | None]
    missing: int


@dataclass(slots=True)
class _SessionState:
    client: NodeId
    lease_end_ms: float
    events: list[SessionEvent] = field(default_factory=list)
    event_seq: int = 0
    invalidations: dict[int, str] = field(default_factory=dict)
    held: tuple[NodeId, int] | None = None
    #: The ``KeepAliveBatch`` holding this session's KeepAlive (0: none).
    held_batch: int = 0
    held_since_ms: float = 0.0
    failover_pending: bool = False
    expiring: bool = False


class LockServer:
    """One replica of a lock cell (a ``synod.core.Core``)."""

    def __init__(
        self,
        node: NodeId,
        rng: random.Random,
        *,
        members: tuple[NodeId, ...],
        config: LockConfig | None = None,
        paxos: PaxosConfig | None = None,
        observer: Callable[[NodeId, int, Value], None] | None = None,
        event_observer: Callable[[NodeId, list[Event]], None] | None = None,
    ) -> None:
        self.node = node
        self.config = config or LockConfig()
        self.namespace = Namespace(self.config)
        self.namespace.listener = self._on_events
        self.event_observer = event_observer
        self.replica = PaxosReplica(node, rng, members=members, machine=self.namespace,
                                    config=paxos, observer=observer)
        self.role = Role.FOLLOWER
        self.epoch = 0
        self.clock_offset_ms = 0.0
        self.sessions: dict[int, _SessionState] = {}
        self.subscriptions: dict[str, dict[int, frozenset[EventKind]]] = {}
        self.cached_by: dict[str, set[int]] = {}
        self.invalidation_next = 1
        self.parked: list[_Parked] = []
        #: Paths with a change proposed and not yet applied: not cacheable.
        self.changing: Counter[str] = Counter()
        #: (lease end, session) for every lease granted; see ``_on_tick``.
        self._deadlines: list[tuple[float, int]] = []
        self._held_batches: dict[int, _HeldBatch] = {}
        #: ``LockCallBatch``es in progress; their entries' request ids are
        #: ``-(number * CALL_BATCH_MAX + index)`` (a client's are positive).
        self._call_batches: dict[int, _CallBatch] = {}
        self._call_batch_next = 1
        self._batch_next = 1
        self._calls: dict[int, _Call | None] = {}
        self._internal_next = 1
        self._own_changing: dict[int, tuple[str, ...]] = {}
        self._internal_seq = 0
        self._now_ms = 0.0
        self._counts: Counter[str] = Counter()
        self._out: Effects = []

    # ================================================================ Core API

    @property
    def tick_ms(self) -> float:
        return max(1.0, min(self.config.keepalive_early_ms / 4, 100.0))

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        self._now_ms = now_ms
        self._route(self.replica.start(now_ms, recovered))
        self._out.append(SetTimer(key=f"{TIMER_PREFIX}tick", delay_ms=self.tick_ms))
        return self._drain()

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        self._now_ms = now_ms
        if isinstance(message, ClientRequest) and isinstance(message.body, StatusQuery):
            self._reply(source, message.request_id, self.status())
            return self._drain()
        if isinstance(message, ClientRequest) and isinstance(
                message.body, LockCall | LockCallBatch | KeepAlive | KeepAliveBatch):
            match message.body:
                case LockCall():
                    self._on_call(now_ms, source, message.request_id, message.body)
                case LockCallBatch():
                    self._on_call_batch(now_ms, source, message.request_id, message.body)
                case KeepAlive():
                    self._on_keepalive(now_ms, source, message.request_id, message.body)
                case KeepAliveBatch():
                    self._on_keepalive_batch(now_ms, source, message.request_id, message.body)
            return self._drain()
        self._route(self.replica.on_message(now_ms, source, message))
        return self._drain()

    def on_timer(self, now_ms: float, key: str) -> Effects:
        self._now_ms = now_ms
        if not key.startswith(TIMER_PREFIX):
            self._route(self.replica.on_timer(now_ms, key))
            return self._drain()
        name = key.removeprefix(TIMER_PREFIX)
        if name == "tick":
            self._on_tick(now_ms)
            self._out.append(SetTimer(key=key, delay_ms=self.tick_ms))
        elif name.startswith("ka/"):
            session = int(name.removeprefix("ka/"))
            state = self.sessions.get(session)
            if state is not None and state.held is not None:
                self._answer_keepalive(now_ms, session, state)
        elif name.startswith("kab/"):
            self._answer_batch(now_ms, int(name.removeprefix("kab/")))
        return self._drain()

    def _drain(self) -> Effects:
        """Everything the glue and the replica produced during this call, in order."""
        if self.role is not Role.FOLLOWER and not self.replica.is_leader:
            self.become_follower("lost_leadership")
        out, self._out = self._out, []
        return out

    def check_invariants(self) -> None:
        self.replica.check_invariants()
        self.namespace.check_invariants()
        if self.role is Role.MASTER:
            invariant(self.epoch == self.namespace.epoch or self.epoch < self.namespace.epoch,
                      "a master ahead of the namespace's epoch")
        else:
            invariant(not self.parked, "a non-master holds parked changes")
            invariant(not self._held_batches, "a non-master holds KeepAlive batches")
            invariant(not self._call_batches, "a non-master answers call batches")
        invariant(len(self.parked) <= PARKED_CALLS_MAX, "too many parked calls")

    # ================================================================ roles

    def become_follower(self, reason: str) -> None:
        """Forget everything the master kept in memory; calls in flight are
        abandoned (their clients time out and retry at the new master)."""
        if self.role is not Role.FOLLOWER:
            self._counts[f"step_down/{reason}"] += 1
        self.role = Role.FOLLOWER
        self.epoch = 0
        self.sessions.clear()
        self.subscriptions.clear()
        self.cached_by.clear()
        self.parked.clear()
        self._deadlines.clear()
        self._held_batches.clear()
        self._call_batches.clear()
        self._calls.clear()
        self._own_changing.clear()
        self.changing.clear()

    def become_starting(self, now_ms: float) -> None:
        invariant(self.role is Role.FOLLOWER, "starting from a role other than follower")
        self.role = Role.STARTING
        self._internal_seq = 0
        self._propose(BeginEpoch(node=self.node, now_ms=now_ms + self.clock_offset_ms), None)

    def become_master(self, now_ms: float, begun: EpochBegun) -> None:
        invariant(self.role is Role.STARTING, "master without starting")
        self.role = Role.MASTER
        self.epoch = begun.epoch
        self.clock_offset_ms = max(self.clock_offset_ms, begun.clock_ms - now_ms)
        for session in self.namespace.session_ids():
            principal = self.namespace.principal_of(session) or ""
            self.sessions[session] = _SessionState(
                client=NodeId(principal), lease_end_ms=now_ms + self.config.lease_ms,
                failover_pending=True,
            )
            self._watch_lease(session, self.sessions[session])
        self._counts["masterships"] += 1

    @property
    def is_master(self) -> bool:
        return self.role is Role.MASTER

    def _stamp(self, now_ms: float) -> float:
        return now_ms + self.clock_offset_ms

    # ================================================================ the replica

    def _route(self, effects: Effects) -> None:
        """Pass the replica's effects on (to ``_out``), taking the answers to our
        own commands and reads out of them."""
        for effect in effects:
            if isinstance(effect, ClientResult):
                self._on_replica_result(effect)
                continue
            if isinstance(effect, Persist):
                invariant(not any(isinstance(e, ClientResult) for e in effect.then),
                          "a client result inside a persist")
            self._out.append(effect)

    def _propose(self, command: Message, call: _Call | None) -> None:
        internal = self._internal_next
        self._internal_next += 1
        if call is None:
            call = _Call(client=self.node, request_id=0, call=LockCall(epoch=0, incarnation=0, seq=0, seen_below=0, op=command),
                         session=0)
            own = True
        else:
            own = False
        call.changing = self._affected_paths(command)
        self.changing.update(call.changing)
        self._calls[internal] = None if own else call
        if own:
            self._own_changing[internal] = call.changing
        if not own:
            client = f"{principal_of(call.client)}#{call.call.incarnation}"
            seq, seen_below = call.call.seq, call.call.seen_below
        else:
            # One exactly-once client per leadership (its ballot is unique), so a
            # restarted master never meets the results of its earlier life.
            self._internal_seq += 1
            client = f"master/{self.replica.ballot}"
            seq, seen_below = self._internal_seq, self._internal_seq
        body = Command(client=client, seq=seq, seen_below=seen_below, op=encode(command))
        self._feed(ClientRequest(request_id=internal, body=body))

    def _read(self, operation: Message, call: _Call) -> None:
        if self.replica.has_read_lease(self._now_ms):
            # What the replica's lease read would do (query the state machine
            # now), without encoding the operation and decoding its result.
            self._counts["reads_local"] += 1
            self._on_call_result(call, self.namespace.execute(operation))
            return
        internal = self._internal_next
        self._internal_next += 1
        self._calls[internal] = call
        self._feed(ClientRequest(request_id=internal, body=Read(op=encode(operation), mode=ReadMode.LEASE)))

    def _feed(self, request: ClientRequest) -> None:
        self._route(self.replica.on_message(self._now_ms, NodeId(f"master-{self.node}"), request))

    def _on_replica_result(self, effect: ClientResult) -> None:
        if effect.request_id not in self._calls:
            self._counts["result_for_forgotten_call"] += 1
            return
        call = self._calls.pop(effect.request_id)
        changing = call.changing if call is not None else self._own_changing.pop(effect.request_id, ())
        self.changing.subtract(changing)
        for path in changing:
            if self.changing[path] <= 0:
                del self.changing[path]
        body = effect.result
        if isinstance(body, CommandResult | ReadResult):
            try:
                result = decode(body.result)
            except RemoteProtocolError as error:
                result = OpError(code="bad_request", detail=str(error))
        else:
            result = body
        if call is None:
            self._on_own_result(result)
            return
        self._on_call_result(call, result)

    def _on_own_result(self, result: Message) -> None:
        if isinstance(result, EpochBegun) and self.role is Role.STARTING:
            self.become_master(self._now_ms, result)
            return
        if isinstance(result, Done) and result.detail == "expired":
            return
        if isinstance(result, ErrorReply) and self.role is Role.STARTING:
            self.become_follower("epoch_not_chosen")

    # ================================================================ client calls

    def _reply(self, client: NodeId, request_id: int, result: Message) -> None:
        if request_id < 0:
            self._reply_in_batch(-request_id, result)
            return
        self._out.append(ClientResult(client=client, request_id=request_id, result=result))

    def _on_call_batch(self, now_ms: float, source: NodeId, request_id: int, batch: LockCallBatch) -> None:
        """Take each entry as a call of its own; answer when all are answered."""
        self._counts["call_batches"] += 1
        if self.role is not Role.MASTER:
            self._not_master(source, request_id)
            return
        if not 1 <= len(batch.calls) <= CALL_BATCH_MAX:
            self._reply(source, request_id, ErrorReply(
                code="bad_request", detail=f"a call batch holds 1 to {CALL_BATCH_MAX} calls"))
            return
        number = self._call_batch_next
        self._call_batch_next += 1
        self._call_batches[number] = _CallBatch(client=source, request_id=request_id,
                                                replies=[None] * len(batch.calls), missing=len(batch.calls))
        for index, call in enumerate(batch.calls):
            self._on_call(now_ms, source, -(number * CALL_BATCH_MAX + index), call)

    def _reply_in_batch(self, entry: int, result: Message) -> None:
        number, index = divmod(entry, CALL_BATCH_MAX)
        batch = self._call_batches.get(number)
        if batch is None or batch.replies[index] is not None:
            self._counts["call_batch_reply_dropped"] += 1
            return
        invariant(isinstance(result, LockReply | ErrorReply), "a call answered with something else")
        assert isinstance(result, LockReply | ErrorReply)
        batch.replies[index] = result
        batch.missing -= 1
        if batch.missing == 0:
            del self._call_batches[number]
            replies = tuple(r for r in batch.replies if r is not None)
            self._out.append(ClientResult(client=batch.client, request_id=batch.request_id,
                                          result=LockCallBatchReply(replies=replies)))

    def _not_master(self, client: NodeId, request_id: int) -> None:
        leader = self.replica.leader if self.replica.leader not in (None, self.node) else ""
        self._reply(client, request_id, ErrorReply(code="not_master", detail="ask the master",
                                                   hint=leader or ""))

    def _on_call(self, now_ms: float, source: NodeId, request_id: int, call: LockCall) -> None:
        self._counts["calls"] += 1
        if self.role is not Role.MASTER:
            self._not_master(source, request_id)
            return
        op = call.op
        if not isinstance(op, OpenSession | OpenSessions) and call.epoch != self.epoch:
            self._reply(source, request_id, ErrorReply(code="stale_epoch", detail="the master failed over",
                                                       hint=str(self.epoch)))
            return
        session = getattr(op, "session", 0)
        if isinstance(op, ExpireSession | BeginEpoch) or not isinstance(
            op, OpenSession | OpenSessions | CloseSession | Write | Delete | Acquire | SetAcl | GetContents | Stat
            | ListChildren | CheckSequencer | Create | Release | Subscribe
        ):
            self._reply(source, request_id, LockReply(epoch=self.epoch, result=OpError(
                code="bad_request", detail=f"{type(op).__name__} is not a client operation")))
            return
        if not isinstance(op, OpenSession | OpenSessions | CheckSequencer):
            refusal = self._check_owner(source, session)
            if refusal is not None:
                self._reply(source, request_id, LockReply(epoch=self.epoch, result=refusal))
                return
        if isinstance(op, Subscribe):
            self._reply(source, request_id, LockReply(epoch=self.epoch, result=self._subscribe(op)))
            return
        entry = _Call(client=source, request_id=request_id, call=call, session=session)
        if isinstance(op, _READ_ONLY):
            if isinstance(op, GetContents) and call.cache and self._cacheable(op.path, session):
                entry.cache = True
                entry.mark = self.invalidation_next - 1
            self._read(op, entry)
            return
        stamped = self._stamped(op, source, now_ms)
        self._submit(stamped, entry, self._affected_paths(stamped))

    def _check_owner(self, source: NodeId, session: int) -> OpError | None:
        principal = self.namespace.principal_of(session)
        if principal is None or session not in self.sessions:
            return OpError(code="session_expired", detail=f"session {session} has ended")
        if principal != principal_of(source):
            return OpError(code="permission_denied", detail=f"session {session} is not {principal_of(source)}'s")
        return None

    def _stamped(self, op: Message, source: NodeId, now_ms: float) -> Message:
        stamp = self._stamp(now_ms)
        match op:
            case OpenSession():
                return OpenSession(principal=principal_of(source), now_ms=stamp)
            case OpenSessions():
                return OpenSessions(principal=principal_of(source), count=op.count, now_ms=stamp)
            case CloseSession() | Acquire():
                return dataclasses.replace(op, now_ms=stamp)
            case _:
                return op

    def _affected_paths(self, op: Message) -> tuple[str, ...]:
        match op:
            case Write() | Delete() | SetAcl():
                return (op.path,)
            case CloseSession() | ExpireSession():
                return self.namespace.ephemerals_of(op.session)
            case _:
                return ()

    def _cacheable(self, path: str, session: int) -> bool:
        state = self.sessions.get(session)
        if state is None or state.failover_pending or path in self.changing:
            return False
        return not any(path == p for parked in self.parked for p in self._affected_paths(parked.command))

    def _submit(self, command: Message, call: _Call | None, paths: tuple[str, ...]) -> None:
        """Propose ``command`` once every cache holding ``paths`` is invalidated."""
        if call is not None and isinstance(command, Write | Delete | SetAcl):
            self._drop_writer_copy(call.session, command.path)
        waiting: set[int] = set()
        if paths:
            for path in paths:
                waiting |= self.cached_by.get(path, set())
            waiting |= {s for s, state in self.sessions.items() if state.failover_pending}
        waiting = {s for s in waiting if s in self.sessions and not self.sessions[s].expiring}
        if not waiting or mutant(MUTANT_INVALIDATION_NOT_AWAITED):
            self._propose(command, call)
            return
        if len(self.parked) >= PARKED_CALLS_MAX:
            if call is not None:
                self._reply(call.client, call.request_id,
                            ErrorReply(code="overloaded", detail="too many changes waiting"))
            return
        self.parked.append(_Parked(call=call, command=command, waiting=waiting))
        for session in sorted(waiting):
            state = self.sessions[session]
            for path in paths:
                if session in self.cached_by.get(path, set()):
                    number = self.invalidation_next
                    self.invalidation_next += 1
                    state.invalidations[number] = path
                    self._counts["invalidations_sent"] += 1
            self._flush(session)

    def _drop_writer_copy(self, session: int, path: str) -> None:
        """The session changing ``path`` dropped its own copy before it sent the
        change, and caches no reply about ``path`` while that change is in
        flight (``ClientSession``), so the change does not wait for its
        acknowledgement: one KeepAlive round trip less for a writer of a file it
        reads. The invalidation counter moves on, so every read reply already
        given out carries a lower mark than the change's reply, below the floor
        the client sets from that reply."""
        holders = self.cached_by.get(path)
        if holders is None or session not in holders:
            return
        holders.discard(session)
        if not holders:
            del self.cached_by[path]
        self.invalidation_next += 1
        self._counts["writer_copies_dropped"] += 1

    def _release_parked(self) -> None:
        still: list[_Parked] = []
        ready: list[_Parked] = []
        for parked in self.parked:
            parked.waiting = {
                s for s in parked.waiting
                if s in self.sessions and not self.sessions[s].expiring and self._still_caches(s, parked)
            }
            (still if parked.waiting else ready).append(parked)
        self.parked = still
        for parked in ready:
            self._propose(parked.command, parked.call)

    def _still_caches(self, session: int, parked: _Parked) -> bool:
        state = self.sessions[session]
        if state.failover_pending:
            return True
        return any(session in self.cached_by.get(p, set()) for p in self._affected_paths(parked.command))

    def _on_call_result(self, call: _Call, result: Message) -> None:
        if isinstance(result, ErrorReply):
            self._reply(call.client, call.request_id, result)
            return
        op = call.call.op
        cacheable = False
        mark = call.mark
        if call.cache and not isinstance(result, OpError) and isinstance(op, GetContents):
            path = op.path
            state = self.sessions.get(call.session)
            if state is not None and self._cacheable(path, call.session):
                self.cached_by.setdefault(path, set()).add(call.session)
                cacheable = True
        if isinstance(op, Write | Delete | SetAcl):
            # The client raises its floor for the path to this mark.
            mark = self.invalidation_next - 1
        if isinstance(result, SessionOpened):
            self.sessions[result.session] = _SessionState(
                client=call.client, lease_end_ms=self._now_ms + self.config.lease_ms)
            self._watch_lease(result.session, self.sessions[result.session])
        if isinstance(result, SessionsOpened):
            for session in range(result.first, result.first + result.count):
                self.sessions[session] = _SessionState(
                    client=call.client, lease_end_ms=self._now_ms + self.config.lease_ms)
                self._watch_lease(session, self.sessions[session])
        if isinstance(op, CloseSession) and isinstance(result, Done):
            self._forget_session(op.session)
        self._reply(call.client, call.request_id, LockReply(
            epoch=self.epoch, result=result, cacheable=cacheable, invalidation_mark=mark))

    # ================================================================ sessions

    def _on_keepalive(self, now_ms: float, source: NodeId, request_id: int, keepalive: KeepAlive) -> None:
        self._counts["keepalives"] += 1
        if self.role is not Role.MASTER:
            self._not_master(source, request_id)
            return
        immediate = self._take_keepalive(now_ms, source, keepalive)
        if immediate is not None:
            self._reply(source, request_id, immediate)
            return
        session = keepalive.session
        state = self.sessions[session]
        state.held = (source, request_id)
        self._release_parked()
        hold_ms = state.lease_end_ms - self.config.keepalive_early_ms - now_ms
        if state.held is None:
            return  # answered while the parked changes went out
        if state.events or state.invalidations or hold_ms <= 0:
            self._answer_keepalive(now_ms, session, state)
        else:
            self._out.append(SetTimer(key=f"{TIMER_PREFIX}ka/{session}", delay_ms=hold_ms))

    def _take_keepalive(self, now_ms: float, source: NodeId, keepalive: KeepAlive) -> Message | None:
        """Check one session's KeepAlive and take in its acknowledgements. Returns
        the answer to give at once (a refusal, or the failover notice), or None
        when the KeepAlive is to be held (the caller records where)."""
        session = keepalive.session
        refusal = self._check_owner(source, session)
        if refusal is not None:
            return ErrorReply(code=refusal.code, detail=refusal.detail)
        state = self.sessions[session]
        if state.expiring:
            return ErrorReply(code="session_expired", detail="lease ran out")
        if keepalive.epoch != self.epoch:
            # The first KeepAlive since the failover: tell the client, which
            # flushes its cache and comes back with the new epoch.
            return KeepAliveReply(epoch=self.epoch, lease_ms=max(0.0, state.lease_end_ms - now_ms), failover=True)
        state.failover_pending = False
        if state.events and state.events[0].seq <= keepalive.events_acked:
            state.events = [e for e in state.events if e.seq > keepalive.events_acked]
        for number in keepalive.invalidations_acked:
            path = state.invalidations.pop(number, None)
            if path is not None:
                holders = self.cached_by.get(path)
                if holders is not None:
                    holders.discard(session)
                    if not holders:
                        del self.cached_by[path]
        if state.held is not None or state.held_batch:
            self._counts["keepalive_superseded"] += 1
            state.held = None
            state.held_batch = 0
        state.client = source
        state.held_since_ms = now_ms
        return None

    def _on_keepalive_batch(self, now_ms: float, source: NodeId, request_id: int, batch: KeepAliveBatch) -> None:
        """Hold many sessions' KeepAlives as one (see ``KeepAliveBatch``)."""
        self._counts["keepalive_batches"] += 1
        self._counts["keepalives"] += len(batch.keepalives)
        if self.role is not Role.MASTER:
            self._not_master(source, request_id)
            return
        if not batch.keepalives or len(batch.keepalives) > KEEPALIVE_BATCH_MAX:
            self._reply(source, request_id, ErrorReply(
                code="bad_request", detail=f"a KeepAlive batch holds 1 to {KEEPALIVE_BATCH_MAX} entries"))
            return
        number = self._batch_next
        self._batch_next += 1
        held = _HeldBatch(client=source, request_id=request_id)
        answer_now = False
        for keepalive in batch.keepalives:
            immediate = self._take_keepalive(now_ms, source, keepalive)
            held.sessions.append(keepalive.session)
            held.replies.append(immediate)
            if immediate is not None:
                answer_now = True
            else:
                self.sessions[keepalive.session].held_batch = number
        self._held_batches[number] = held
        self._release_parked()
        if number not in self._held_batches:
            return  # answered while the parked changes went out
        hold_ms = float("inf")
        for session, immediate in zip(held.sessions, held.replies, strict=True):
            if immediate is None:
                state = self.sessions[session]
                answer_now = answer_now or bool(state.events or state.invalidations)
                hold_ms = min(hold_ms, state.lease_end_ms - self.config.keepalive_early_ms - now_ms)
        if answer_now or hold_ms <= 0:
            self._answer_batch(now_ms, number)
        else:
            self._out.append(SetTimer(key=f"{TIMER_PREFIX}kab/{number}", delay_ms=hold_ms))

    def _answer_batch(self, now_ms: float, number: int) -> None:
        held = self._held_batches.pop(number, None)
        if held is None:
            return
        replies: list[KeepAliveReply | ErrorReply] = []
        for session, immediate in zip(held.sessions, held.replies, strict=True):
            if isinstance(immediate, KeepAliveReply | ErrorReply):
                replies.append(immediate)
                continue
            state = self.sessions.get(session)
            if state is None or state.expiring:
                replies.append(ErrorReply(code="session_expired", detail="the session ended"))
            elif state.held_batch != number:
                replies.append(ErrorReply(code="superseded", detail="a later KeepAlive is held"))
            else:
                state.held_batch = 0
                replies.append(self._keepalive_reply(now_ms, state))
        self._reply(held.client, held.request_id, KeepAliveBatchReply(replies=tuple(replies)))

    def _answer_keepalive(self, now_ms: float, session: int, state: _SessionState) -> None:
        invariant(state.held is not None, "answering a KeepAlive that is not held")
        assert state.held is not None
        client, request_id = state.held
        state.held = None
        self._reply(client, request_id, self._keepalive_reply(now_ms, state))

    def _keepalive_reply(self, now_ms: float, state: _SessionState) -> KeepAliveReply:
        # The lease is extended now, when the reply leaves. The reply states it
        # as a duration from when the KeepAlive ARRIVED: the client counts it
        # from when it sent the KeepAlive, which is earlier, so the client's
        # lease always ends first.
        state.lease_end_ms = max(state.lease_end_ms, now_ms + self.config.lease_ms)
        return KeepAliveReply(
            epoch=self.epoch, lease_ms=max(0.0, state.lease_end_ms - state.held_since_ms),
            events=tuple(state.events[:256]),
            invalidations=tuple(Invalidation(number=n, path=p) for n, p in sorted(state.invalidations.items())),
        )

    def _flush(self, session: int) -> None:
        state = self.sessions.get(session)
        if state is None:
            return
        if state.held is not None:
            self._answer_keepalive(self._now_ms, session, state)
        elif state.held_batch:
            self._answer_batch(self._now_ms, state.held_batch)

    def _subscribe(self, subscribe: Subscribe) -> Message:
        try:
            self.namespace.validate_path(subscribe.path)
        except LockError as error:
            return OpError(code=error.code, detail=str(error))
        count = sum(1 for subs in self.subscriptions.values() if subscribe.session in subs)
        if count >= SUBSCRIPTIONS_PER_SESSION_MAX:
            return OpError(code="limit", detail="too many subscriptions")
        self.subscriptions.setdefault(subscribe.path, {})[subscribe.session] = frozenset(subscribe.kinds)
        return Done(detail="subscribed")

    def _on_tick(self, now_ms: float) -> None:
        if self.role is Role.FOLLOWER and self.replica.is_leader:
            self.become_starting(now_ms)
            return
        if self.role is not Role.MASTER:
            return
        if len(self._deadlines) > 2 * len(self.sessions) + 512:
            # Entries of ended sessions wait for their time to come up; after
            # many closes, rebuild rather than let them pile up.
            self._deadlines = [(state.lease_end_ms, s) for s, state in self.sessions.items()]
            heapq.heapify(self._deadlines)
        # One heap entry per session, keyed by a lease end it had, so a tick
        # costs O(leases that may have ended), not O(sessions): a cell holds many
        # idle sessions. An entry whose lease was since extended goes back in.
        while self._deadlines and self._deadlines[0][0] < now_ms:
            _end, session = heapq.heappop(self._deadlines)
            state = self.sessions.get(session)
            if state is None or state.expiring:
                continue
            if now_ms <= state.lease_end_ms:
                heapq.heappush(self._deadlines, (state.lease_end_ms, session))
                continue
            state.expiring = True
            self._counts["sessions_expired"] += 1
            command = ExpireSession(session=session, now_ms=self._stamp(now_ms))
            self._submit(command, None, self._affected_paths(command))
        self._release_parked()

    def _watch_lease(self, session: int, state: _SessionState) -> None:
        heapq.heappush(self._deadlines, (state.lease_end_ms, session))

    def _forget_session(self, session: int) -> None:
        self.sessions.pop(session, None)
        for holders in self.cached_by.values():
            holders.discard(session)
        for subscribers in self.subscriptions.values():
            subscribers.pop(session, None)

    # ================================================================ events

    def _on_events(self, events: list[Event]) -> None:
        if self.event_observer is not None:
            self.event_observer(self.node, events)
        if self.role is not Role.MASTER:
            return
        for event in events:
            if event.kind is EventKind.SESSION_ENDED:
                self._forget_session(event.session)
                continue
            for session, kinds in sorted(self.subscriptions.get(event.path, {}).items()):
                state = self.sessions.get(session)
                if state is None or event.kind not in kinds:
                    continue
                state.event_seq += 1
                state.events.append(SessionEvent(seq=state.event_seq, event=event))
                if len(state.events) > self.config.events_per_session_max:
                    del state.events[0]
                    self._counts["events_dropped"] += 1
                self._flush(session)

    # ================================================================ inspection

    def statistics(self) -> LockServerStatistics:
        return LockServerStatistics(
            role=self.role.value, epoch=self.epoch, sessions=len(self.sessions),
            parked_calls=len(self.parked), cached_paths=len(self.cached_by),
            invalidations_sent=self._counts["invalidations_sent"],
            events_queued=sum(len(s.events) for s in self.sessions.values()),
            sessions_expired=self._counts["sessions_expired"], calls=self._counts["calls"],
            keepalives=self._counts["keepalives"],
        )

    def status(self) -> StatusReply:
        """What ``synod cluster status`` shows. The role is the master's
        ("leader" only once its epoch began, so tools that wait for a leader
        wait for a master)."""
        replica = self.replica
        role = "leader" if self.is_master else ("candidate" if replica.is_leader else "follower")
        leader = replica.leader or ""
        return StatusReply(
            node=self.node, role=role, leader=leader,
            ballot=str(replica.ballot if replica.is_leader else replica.leader_ballot),
            chosen_index=replica.chosen_index, members=tuple(replica.members_history[-1][1]),
            elections_started=replica.statistics().elections_started,
            leaderships=replica.statistics().leaderships, digest=self.namespace.digest(),
        )

    def status_line(self) -> str:
        return f"{self.node} {self.role.value} epoch={self.epoch} sessions={len(self.sessions)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LockServerFactory:
    """A ``synod.core.CoreFactory`` building the replicas of one cell."""

    members: tuple[NodeId, ...]
    config: LockConfig | None = None
    paxos: PaxosConfig | None = None
    observer: Callable[[NodeId, int, Value], None] | None = None
    event_observer: Callable[[NodeId, list[Event]], None] | None = None

    def __call__(self, node: NodeId, rng: random.Random) -> LockServer:
        return LockServer(node, rng, members=self.members, config=self.config, paxos=self.paxos,
                          observer=self.observer, event_observer=self.event_observer)



#: Paxos slots a cell's master keeps in flight. The replica proposes a command
#: at once while its window has room, one slot per command; once the window is
#: full, the commands that arrive meanwhile wait and go out together, many in
#: one slot. A lock cell's commands are small and come from many sessions at
#: once, so a narrow window turns a burst into a few large slots: one Accept,
#: one persist and one round of acknowledgements for many client calls on every
#: replica. Measured on the 3-node loopback cell (bench/lock.py write shape, 64
#: in flight, 2 cores shared with other work): server CPU per write 0.59 ms
#: with the Paxos default of 32, 0.45 ms with 8, 0.38 ms with 4.
CELL_WINDOW_SLOTS = 4


def cell_paxos(paxos: PaxosConfig) -> PaxosConfig:
    """``paxos`` with the narrow window a lock cell batches with (``CELL_WINDOW_SLOTS``)."""
    return dataclasses.replace(paxos, window_slots_max=min(paxos.window_slots_max, CELL_WINDOW_SLOTS))


def lock_factory(nodes: tuple[NodeId, ...]) -> LockServerFactory:
    """The core builder for ``synod cluster up --core synod.lock.server:lock_factory``:
    a cell ``/ls/local`` on processes of one machine (``LockConfig.local()``,
    ``PaxosConfig.local()`` with the cell's window)."""
    return LockServerFactory(members=tuple(sorted(nodes)), config=LockConfig.local(),
                             paxos=cell_paxos(PaxosConfig.local()))


def lock_lan_factory(nodes: tuple[NodeId, ...]) -> LockServerFactory:
    """As ``lock_factory`` with the LAN presets (Chubby's lease, lock-delay, grace)."""
    return LockServerFactory(members=tuple(sorted(nodes)), config=LockConfig.lan(),
                             paxos=cell_paxos(PaxosConfig.lan()))
