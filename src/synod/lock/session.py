"""The client library's core: one session, its lease, its cache (sans-IO).

Theory of operation
-------------------
Burrows, *The Chubby lock service*, sections 2.5 (caching) and 2.8 (sessions,
jeopardy, grace period). A ``ClientSession`` opens a session at the cell's
master and keeps one KeepAlive outstanding at all times. Its *local lease* ends
at the time it **sent** the KeepAlive whose reply granted it plus the lease the
reply carried, so it ends before the master's.

Lifecycle (``TRANSITIONS``)::

    NEW --open--> OPENING --opened--> SAFE --lease ends--> JEOPARDY
    JEOPARDY --reply--> SAFE      JEOPARDY --grace ends--> EXPIRED
    SAFE/JEOPARDY --close--> CLOSED    (any) --session_expired reply--> EXPIRED

In JEOPARDY the cache is disabled (emptied): the master may since have expired
the session and let others write. A KeepAlive reply that says ``failover`` makes
the client flush its cache and subscribe again (it may have missed events).

*Cache*: ``read(path, cache=True)`` answers from the cache without a round trip
while the session is SAFE; otherwise it asks the master for cacheable contents
-- from the file's ``cache_admission_reads``-th uncached read on (default the
second), since each cached copy makes the next write of the file wait for its
invalidation, which a file read only once between writes never repays.
Invalidations arrive on KeepAlive replies; the entry is dropped *before* the next
KeepAlive acknowledges it. A read reply carries the number of the last
invalidation the master had issued when it read; if an invalidation of the same
path numbered above that has already arrived, the contents are stale and are not
cached. Writes go through to the master (write-through) and drop the entry.

*Calls* are exactly-once: each carries ``(seq, seen_below)``; a call that times
out or meets a non-master is sent again, with the same seq, to the next server.
"""

from __future__ import annotations

import contextlib
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from synod.codec.kernel import ClientReply, ClientRequest, ErrorReply
from synod.codec.registry import Message
from synod.core.effects import CancelTimer, Effects, Send, SetTimer
from synod.core.errors import LocalProtocolError, invariant
from synod.core.ids import NodeId
from synod.lock.config import LockConfig
from synod.lock.messages import (
    CloseSession,
    Contents,
    Create,
    Delete,
    Event,
    EventKind,
    GetContents,
    KeepAlive,
    KeepAliveReply,
    LockCall,
    LockReply,
    OpenSession,
    OpError,
    SessionOpened,
    SetAcl,
    Subscribe,
    Write,
)

#: Timer keys of the client start with this.
TIMER_PREFIX = "ls/"
#: Calls in flight per session, at most.
CALLS_IN_FLIGHT_MAX = 1_000
#: Cached files per session, at most (the oldest entry goes first).
CACHE_ENTRIES_MAX = 10_000
#: Earlier attempts of one call whose late answer is still taken.
ATTEMPTS_REMEMBERED_MAX = 8
#: Invalidations remembered to refuse stale read replies.
INVALIDATIONS_REMEMBERED_MAX = 10_000


class SessionState(enum.Enum):
    NEW = "new"
    OPENING = "opening"
    SAFE = "safe"
    JEOPARDY = "jeopardy"
    EXPIRED = "expired"
    CLOSED = "closed"


TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.NEW: frozenset({SessionState.OPENING}),
    SessionState.OPENING: frozenset({SessionState.SAFE, SessionState.EXPIRED}),
    SessionState.SAFE: frozenset({SessionState.JEOPARDY, SessionState.EXPIRED, SessionState.CLOSED}),
    SessionState.JEOPARDY: frozenset({SessionState.SAFE, SessionState.EXPIRED, SessionState.CLOSED}),
    SessionState.EXPIRED: frozenset(),
    SessionState.CLOSED: frozenset(),
}


@dataclass(slots=True)
class _Pending:
    seq: int
    op: Message
    cache: bool
    done: Callable[[Message], None]
    request_id: int = 0
    attempts: int = 0
    #: Request ids of earlier attempts whose answer still completes the call.
    earlier: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStatistics:
    state: str
    session: int
    epoch: int
    cache_hits: int
    cache_misses: int
    calls: int
    retries: int
    events: int
    failovers: int


@dataclass(slots=True)
class _Cache:
    entries: dict[str, Contents] = field(default_factory=dict)
    invalidated: dict[str, int] = field(default_factory=dict)
    #: Uncached reads of files not yet admitted (``LockConfig.cache_admission_reads``).
    reads: dict[str, int] = field(default_factory=dict)


class ClientSession:
    """One session of one client with one cell (no I/O: effects out)."""

    def __init__(
        self,
        node: NodeId,
        rng: random.Random,
        *,
        servers: tuple[NodeId, ...],
        config: LockConfig | None = None,
        call_timeout_ms: float = 200.0,
        on_event: Callable[[Event], None] | None = None,
        on_state: Callable[[SessionState], None] | None = None,
    ) -> None:
        if not servers:
            raise LocalProtocolError("a lock client needs at least one server")
        self.node = node
        self.rng = rng
        self.servers = servers
        self.config = config or LockConfig()
        self.call_timeout_ms = call_timeout_ms
        self.on_event = on_event
        self.on_state = on_state
        self.state = SessionState.NEW
        self.session = 0
        self.epoch = 0
        self.server_index = rng.randrange(len(servers))
        self.incarnation = rng.getrandbits(62)
        self.lease_end_ms = float("-inf")
        self.jeopardy_since_ms = 0.0
        self.cache = _Cache()
        self.subscriptions: dict[str, tuple[EventKind, ...]] = {}
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._request_next = 1
        self._by_request: dict[int, int] = {}
        self._keepalive_request = 0
        self._keepalive_sent_ms = 0.0
        self._keepalive_server = 0
        self._events_acked = 0
        self._invalidations_to_ack: list[int] = []
        self._counts: dict[str, int] = {}

    # ================================================================ lifecycle

    def become(self, state: SessionState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"session cannot go from {self.state.value} to {state.value}")
        self.state = state
        if state is not SessionState.SAFE:
            self.cache.entries.clear()
        if self.on_state is not None:
            self.on_state(state)

    @property
    def usable(self) -> bool:
        return self.state in (SessionState.SAFE, SessionState.JEOPARDY)

    def lease_safe(self, now_ms: float) -> bool:
        """True while the local lease holds: the session is certainly alive."""
        return self.state is SessionState.SAFE and now_ms < self.lease_end_ms

    def open(self, now_ms: float, done: Callable[[Message], None] | None = None) -> Effects:
        self.become(SessionState.OPENING)

        def opened(result: Message) -> None:
            if isinstance(result, SessionOpened):
                self.session = result.session
                self.lease_end_ms = now_ms + self.config.lease_ms - self.config.keepalive_early_ms
                self.become(SessionState.SAFE)
            elif self.state is SessionState.OPENING:
                self.become(SessionState.EXPIRED)
            if done is not None:
                done(result)

        out: Effects = []
        self._submit(now_ms, OpenSession(principal=str(self.node), now_ms=0.0), False, opened, out)
        out.append(SetTimer(key=f"{TIMER_PREFIX}tick", delay_ms=self._tick_ms))
        return out

    def adopt(self, now_ms: float, session: int, epoch: int, opened_ms: float,
              master: NodeId | None = None) -> Effects:
        """Take over ``session``, opened for this core by a batched open
        (``OpenSessions``, see ``synod.lock.client.open_sessions``) whose call
        left at ``opened_ms`` in the master's ``epoch`` (at ``master``, where
        the first KeepAlive goes): the core is then SAFE exactly as if its own
        ``open`` had been answered, and keeps the session alive from here on."""
        invariant(session > 0, "adopting session 0")
        if master is not None and master in self.servers:
            self.server_index = self.servers.index(master)
        self.become(SessionState.OPENING)
        self.session = session
        self.epoch = epoch
        self.lease_end_ms = opened_ms + self.config.lease_ms - self.config.keepalive_early_ms
        self.become(SessionState.SAFE)
        return [SetTimer(key=f"{TIMER_PREFIX}tick", delay_ms=self._tick_ms)]

    @property
    def _tick_ms(self) -> float:
        return max(1.0, self.config.keepalive_early_ms / 4)

    # ================================================================ calls

    def call(self, now_ms: float, op: Message, done: Callable[[Message], None], *, cache: bool = False) -> Effects:
        """Send ``op`` (a ``synod.lock.messages`` operation of this session) to the
        master; ``done`` gets the result (``OpError`` for refusals, ``ErrorReply``
        if the session ended). Writes drop the path from the cache first."""
        out: Effects = []
        if not self.usable:
            done(OpError(code="session_expired", detail=f"session is {self.state.value}"))
            return out
        if isinstance(op, Write | Delete | SetAcl | Create):
            held = self.cache.entries.pop(op.path, None) is not None
            # A writer that held the file has it admitted again (``_on_change_reply``).
            cache = cache or (held and isinstance(op, Write))
        self._submit(now_ms, op, cache, done, out)
        return out

    def read(self, now_ms: float, path: str, done: Callable[[Message], None], *, cache: bool = True) -> Effects:
        """Read a file; from the cache (no round trip) when possible."""
        if cache:
            hit = self.cached(now_ms, path)
            if hit is not None:
                done(hit)
                return []
        self._count("cache_misses")
        return self.call(now_ms, GetContents(session=self.session, path=path), done,
                         cache=cache and self._admit(path))

    def cached(self, now_ms: float, path: str) -> Contents | None:
        """The cached contents of ``path`` if the session may answer from its
        cache now (it is SAFE), counted as a hit; None otherwise (not counted:
        the caller goes on with ``read``, which counts the miss)."""
        if not self.lease_safe(now_ms):
            return None
        hit = self.cache.entries.get(path)
        if hit is not None:
            self._count("cache_hits")
        return hit

    def _admit(self, path: str) -> bool:
        """Ask for cacheable contents only from the file's
        ``cache_admission_reads``-th read since its entry was last dropped."""
        reads = self.cache.reads.pop(path, 0) + 1
        if reads >= self.config.cache_admission_reads:
            return True
        self.cache.reads[path] = reads
        while len(self.cache.reads) > CACHE_ENTRIES_MAX:
            del self.cache.reads[next(iter(self.cache.reads))]
        return False

    def subscribe(self, now_ms: float, path: str, kinds: tuple[EventKind, ...],
                  done: Callable[[Message], None] | None = None) -> Effects:
        """Ask for events of ``kinds`` about ``path``; renewed after a failover."""
        self.subscriptions[path] = kinds
        return self._send_subscribe(now_ms, path, kinds, done)

    def _send_subscribe(self, now_ms: float, path: str, kinds: tuple[EventKind, ...],
                        done: Callable[[Message], None] | None) -> Effects:
        return self.call(now_ms, Subscribe(session=self.session, epoch=self.epoch, path=path, kinds=kinds),
                         done or (lambda result: None))

    def close(self, now_ms: float, done: Callable[[Message], None] | None = None) -> Effects:
        def closed(result: Message) -> None:
            if self.usable:
                self.become(SessionState.CLOSED)
            if done is not None:
                done(result)

        return self.call(now_ms, CloseSession(session=self.session, now_ms=0.0), closed)

    def _submit(self, now_ms: float, op: Message, cache: bool, done: Callable[[Message], None], out: Effects) -> None:
        if len(self._pending) >= CALLS_IN_FLIGHT_MAX:
            done(ErrorReply(code="overloaded", detail="too many calls in flight"))
            return
        self._seq += 1
        pending = _Pending(seq=self._seq, op=op, cache=cache, done=done)
        self._pending[pending.seq] = pending
        self._count("calls")
        self._send(now_ms, pending, out)

    def _forget(self, pending: _Pending) -> None:
        """Drop a finished call and every request id that could answer it."""
        del self._pending[pending.seq]
        for request_id in (*pending.earlier, pending.request_id):
            self._by_request.pop(request_id, None)

    def _seen_below(self) -> int:
        # Calls enter ``_pending`` in increasing seq and a dict keeps insertion
        # order, so its first key is its smallest.
        return next(iter(self._pending)) if self._pending else self._seq + 1

    def _send(self, now_ms: float, pending: _Pending, out: Effects) -> None:
        pending.attempts += 1
        if pending.request_id:
            # A late answer to an earlier attempt still completes the call (the
            # command is exactly-once): under load an answer can take longer
            # than the call timer, and a call that only took the newest answer
            # could chase its own retries forever.
            pending.earlier.append(pending.request_id)
            while len(pending.earlier) > ATTEMPTS_REMEMBERED_MAX:
                self._by_request.pop(pending.earlier.pop(0), None)
        pending.request_id = self._new_request(pending.seq)
        call = LockCall(epoch=self.epoch, incarnation=self.incarnation, seq=pending.seq, seen_below=self._seen_below(), op=pending.op,
                        cache=pending.cache)
        out.append(Send(to=self.servers[self.server_index],
                        message=ClientRequest(request_id=pending.request_id, body=call)))
        out.append(SetTimer(key=f"{TIMER_PREFIX}call/{pending.seq}", delay_ms=self.call_timeout_ms))

    def _new_request(self, seq: int) -> int:
        request_id = self._request_next
        self._request_next += 1
        self._by_request[request_id] = seq
        return request_id

    def _next_server(self) -> None:
        self.server_index = (self.server_index + 1) % len(self.servers)

    # ================================================================ inputs

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        out: Effects = []
        if not isinstance(message, ClientReply):
            self._count("ignored_messages")
            return out
        if message.request_id == self._keepalive_request:
            self._on_keepalive_reply(now_ms, source, message.body, out)
            return out
        seq = self._by_request.pop(message.request_id, None)
        if seq is None or seq == 0:
            return out
        pending = self._pending.get(seq)
        if pending is None:
            return out
        body = message.body
        if isinstance(body, ErrorReply):
            if message.request_id == pending.request_id:
                self._on_call_error(now_ms, source, pending, body, out)
            return out  # a refusal of an earlier attempt: the newest is on its way
        if not isinstance(body, LockReply):
            return out
        self._forget(pending)
        out.append(CancelTimer(key=f"{TIMER_PREFIX}call/{seq}"))
        result = body.result
        if self.state is SessionState.OPENING and body.epoch > self.epoch:
            # The epoch the session starts in: not a failover.
            self.epoch = body.epoch
        if isinstance(result, Contents) and body.cacheable and body.epoch == self.epoch and self.lease_safe(now_ms):
            path = result.meta.path
            if self.cache.invalidated.get(path, 0) <= body.invalidation_mark and (
                    not self._changing(path)):
                self._cache_put(path, result)
        if isinstance(pending.op, Write | Delete | SetAcl) and body.epoch == self.epoch:
            self._on_change_reply(now_ms, pending.op, body, held=pending.cache)
        if isinstance(result, OpError) and result.code == "session_expired" and self.usable:
            self.become(SessionState.EXPIRED)
        pending.done(result)
        return out

    def _changing(self, path: str) -> bool:
        """A change of ``path`` by this session is in flight: the master does not
        wait for this session's copy of it (the copy was dropped when the change
        was sent), so no reply about ``path`` may be cached until it is done."""
        return any(isinstance(p.op, Write | Delete | SetAcl) and p.op.path == path for p in self._pending.values())

    def _on_change_reply(self, now_ms: float, op: Write | Delete | SetAcl, body: LockReply, *, held: bool) -> None:
        """The answer to this session's change of ``op.path``. Every read reply
        the master gave out before it took the change carries a lower mark
        than this one: raise the path's floor to it, so none of them is cached.
        The writer keeps no copy of what it wrote (see docs/lock.md); a write of
        a file the session ``held`` leaves the file admitted, so the next read
        asks for a cacheable copy."""
        path = op.path
        floor = self.cache.invalidated.get(path, 0)
        self.cache.entries.pop(path, None)
        self.cache.invalidated[path] = max(floor, body.invalidation_mark)
        while len(self.cache.invalidated) > INVALIDATIONS_REMEMBERED_MAX:
            del self.cache.invalidated[next(iter(self.cache.invalidated))]
        if held and isinstance(op, Write):
            self.cache.reads[path] = self.config.cache_admission_reads - 1
            while len(self.cache.reads) > CACHE_ENTRIES_MAX:
                del self.cache.reads[next(iter(self.cache.reads))]

    def _on_call_error(self, now_ms: float, source: NodeId, pending: _Pending, error: ErrorReply, out: Effects) -> None:
        if error.code in ("not_master", "not_leader"):
            if error.hint and NodeId(error.hint) in self.servers:
                self.server_index = self.servers.index(NodeId(error.hint))
            else:
                self._next_server()
        elif error.code == "stale_epoch":
            epoch = self.epoch
            with contextlib.suppress(ValueError):
                epoch = int(error.hint)
            if epoch > self.epoch:
                self._on_failover(now_ms, epoch, out)
        elif error.code in ("overloaded", "result_forgotten", "too_large", "bad_request"):
            self._forget(pending)
            out.append(CancelTimer(key=f"{TIMER_PREFIX}call/{pending.seq}"))
            pending.done(error)
            return
        self._count("retries")
        out.append(SetTimer(key=f"{TIMER_PREFIX}retry/{pending.seq}", delay_ms=self._backoff_ms()))

    def _backoff_ms(self) -> float:
        return self.rng.uniform(5.0, 20.0)

    def on_timer(self, now_ms: float, key: str) -> Effects:
        out: Effects = []
        name = key.removeprefix(TIMER_PREFIX)
        if name == "tick":
            self._on_tick(now_ms, out)
            if self.state not in (SessionState.EXPIRED, SessionState.CLOSED):
                out.append(SetTimer(key=key, delay_ms=self._next_tick_ms(now_ms)))
        elif name.startswith("call/") or name.startswith("retry/"):
            seq = int(name.split("/", 1)[1])
            pending = self._pending.get(seq)
            if pending is not None:
                if name.startswith("call/"):
                    self._next_server()
                    self._count("retries")
                self._send(now_ms, pending, out)
        elif name == "keepalive":
            if self._keepalive_request:
                # No answer in time: the master may be gone; try the next one.
                self._keepalive_request = 0
                self._next_server()
            self._send_keepalive(now_ms, out)
        return out

    # ================================================================ lease

    def _next_tick_ms(self, now_ms: float) -> float:
        """When the tick must look again: soon while opening (to send the first
        KeepAlive), else at the next deadline (lease end, grace end). Idle
        sessions then cost one timer per lease, not one per tick interval."""
        if self.state is SessionState.SAFE and self._keepalive_request:
            return max(self._tick_ms, self.lease_end_ms - now_ms)
        if self.state is SessionState.JEOPARDY:
            return max(1.0, self.jeopardy_since_ms + self.config.grace_ms - now_ms)
        return self._tick_ms

    def _on_tick(self, now_ms: float, out: Effects) -> None:
        if self.state is SessionState.SAFE and now_ms >= self.lease_end_ms:
            self.jeopardy_since_ms = now_ms
            self.become(SessionState.JEOPARDY)
        if self.state is SessionState.JEOPARDY and now_ms >= self.jeopardy_since_ms + self.config.grace_ms:
            self.become(SessionState.EXPIRED)
            self._fail_all(out)
            return
        if self.usable and not self._keepalive_request:
            self._send_keepalive(now_ms, out)

    def _fail_all(self, out: Effects) -> None:
        pending = sorted(self._pending.items())
        self._pending.clear()
        for seq, call in pending:
            out.append(CancelTimer(key=f"{TIMER_PREFIX}call/{seq}"))
            call.done(OpError(code="session_expired", detail="the session expired"))

    def _send_keepalive(self, now_ms: float, out: Effects) -> None:
        acks = tuple(self._invalidations_to_ack)
        body = KeepAlive(session=self.session, epoch=self.epoch, events_acked=self._events_acked,
                         invalidations_acked=acks)
        self._keepalive_request = self._new_request(0)
        self._keepalive_sent_ms = now_ms
        self._keepalive_server = self.server_index
        out.append(Send(to=self.servers[self.server_index],
                        message=ClientRequest(request_id=self._keepalive_request, body=body)))
        # The master holds it up to lease_ms - keepalive_early_ms; wait a little
        # longer. In jeopardy, hunt for the new master quickly.
        wait_ms = self.config.lease_ms
        if self.state is SessionState.JEOPARDY:
            wait_ms = self.call_timeout_ms
        out.append(SetTimer(key=f"{TIMER_PREFIX}keepalive", delay_ms=wait_ms))

    def _on_keepalive_reply(self, now_ms: float, source: NodeId, body: Message, out: Effects) -> None:
        self._keepalive_request = 0
        out.append(CancelTimer(key=f"{TIMER_PREFIX}keepalive"))
        if isinstance(body, ErrorReply):
            if body.code == "session_expired" or body.code == "permission_denied":
                if self.usable:
                    self.become(SessionState.EXPIRED)
                    self._fail_all(out)
                return
            if body.code == "not_master":
                if body.hint and NodeId(body.hint) in self.servers:
                    self.server_index = self.servers.index(NodeId(body.hint))
                else:
                    self._next_server()
            out.append(SetTimer(key=f"{TIMER_PREFIX}keepalive", delay_ms=self._backoff_ms()))
            return
        if not isinstance(body, KeepAliveReply) or not self.usable:
            return
        if body.failover or body.epoch != self.epoch:
            if body.epoch > self.epoch:
                self._on_failover(now_ms, body.epoch, out)
        else:
            # Drop invalidated entries BEFORE the next KeepAlive acknowledges them.
            self._invalidations_to_ack = []
            for invalidation in body.invalidations:
                self.cache.entries.pop(invalidation.path, None)
                seen = self.cache.invalidated.get(invalidation.path, 0)
                self.cache.invalidated[invalidation.path] = max(seen, invalidation.number)
                self._invalidations_to_ack.append(invalidation.number)
            while len(self.cache.invalidated) > INVALIDATIONS_REMEMBERED_MAX:
                del self.cache.invalidated[next(iter(self.cache.invalidated))]
            for item in body.events:
                if item.seq > self._events_acked:
                    self._events_acked = item.seq
                    self._count("events")
                    if self.on_event is not None:
                        self.on_event(item.event)
        self.lease_end_ms = max(self.lease_end_ms, self._keepalive_sent_ms + body.lease_ms)
        if self.state is SessionState.JEOPARDY and now_ms < self.lease_end_ms:
            self.become(SessionState.SAFE)
            out.append(SetTimer(key=f"{TIMER_PREFIX}tick", delay_ms=self._next_tick_ms(now_ms)))
        if self.usable:
            self._send_keepalive(now_ms, out)

    def _on_failover(self, now_ms: float, epoch: int, out: Effects) -> None:
        """A new master: flush the cache (it cannot know what we hold), forget
        event numbering, tell the application, and subscribe again."""
        self._count("failovers")
        self.epoch = epoch
        self.cache.entries.clear()
        # The new master numbers invalidations afresh, and nothing it hands
        # out as cacheable predates the failover the client acknowledges.
        self.cache.invalidated.clear()
        self._invalidations_to_ack.clear()
        self._events_acked = 0
        if self.on_event is not None:
            self.on_event(Event(kind=EventKind.MASTER_FAILED_OVER, path=self.config.root))
        for path, kinds in sorted(self.subscriptions.items()):
            out.extend(self._send_subscribe(now_ms, path, kinds, None))

    def _cache_put(self, path: str, contents: Contents) -> None:
        self.cache.entries[path] = contents
        while len(self.cache.entries) > CACHE_ENTRIES_MAX:
            del self.cache.entries[next(iter(self.cache.entries))]

    def _count(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    # ================================================================ inspection

    def check_invariants(self) -> None:
        invariant(self.state is SessionState.SAFE or not self.cache.entries,
                  f"cache in use while {self.state.value}")
        invariant(len(self._pending) <= CALLS_IN_FLIGHT_MAX, "too many calls in flight")

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            state=self.state.value, session=self.session, epoch=self.epoch,
            cache_hits=self._counts.get("cache_hits", 0), cache_misses=self._counts.get("cache_misses", 0),
            calls=self._counts.get("calls", 0), retries=self._counts.get("retries", 0),
            events=self._counts.get("events", 0), failovers=self._counts.get("failovers", 0),
        )
