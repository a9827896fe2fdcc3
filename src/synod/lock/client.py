"""The lock service's client library: ``LockClient`` (async), ``SyncLockClient``,
and the recipes (lock, leader election, service discovery, configuration).

Theory of operation
-------------------
``LockClient`` drives one ``synod.lock.session.ClientSession`` (the sans-IO
session core: lease, jeopardy, grace period, cache) on asyncio: each ``Send``
the core returns becomes a request on an authenticated runtime connection to
that node (``synod.runtime.client.connect``), whose answer goes back to the core
as a ``ClientReply``; each ``SetTimer`` becomes a ``loop.call_later``. The core
does every retry, failover and cache decision; this module only moves bytes and
turns results into values or typed errors (``synod.lock.errors``).

Blocking acquire: try; on ``lock_busy``/``lock_delay``, wait for a
``LOCK_RELEASED`` event on the lock (subscribed once) or a short poll (a
lock-delay ends without an event), until the deadline.

Recipes: ``lock()`` (an async context manager that yields the sequencer, which
the holder passes to the servers it writes to), ``elect()`` (hold a lock, write
your identity into it, watch it), ``register()``/``discover()`` (ephemeral files
under a directory), ``watch_contents()`` (configuration distribution: the current
contents, then again after every change).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from synod.codec.kernel import ClientReply, ClientRequest, ErrorReply
from synod.codec.registry import Message
from synod.core.effects import CancelTimer, Effects, Send, SetTimer
from synod.core.errors import ConfigError, LocalProtocolError, TimeoutError_
from synod.core.ids import NodeId
from synod.lock.config import LockConfig
from synod.lock.errors import (
    ExistsError,
    LockBusyError,
    LockDelayError,
    LockError,
    SessionExpiredError,
    error_from_code,
)
from synod.lock.messages import (
    ANY_GENERATION,
    READ_ONLY,
    Acquire,
    Acquired,
    CheckSequencer,
    Children,
    Contents,
    Create,
    Delete,
    Done,
    Event,
    EventKind,
    KeepAlive,
    KeepAliveBatch,
    KeepAliveBatchReply,
    ListChildren,
    LockCall,
    LockCallBatch,
    LockCallBatchReply,
    LockReply,
    NodeMeta,
    OpenSessions,
    OpError,
    Release,
    SequencerValidity,
    SessionsOpened,
    SetAcl,
    Stat,
    Write,
)
from synod.lock.sequencer import LockMode, Sequencer
from synod.lock.session import ClientSession, SessionState
from synod.runtime.client import ClientConnection, connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import new_event_loop

T = TypeVar("T")

#: Events buffered per watcher, at most (the oldest are dropped beyond).
WATCH_QUEUE_MAX = 10_000
#: Calls of one ``LockCallBatch``, at most (the master's ``CALL_BATCH_MAX``).
CALL_BATCH_MAX = 1_024
#: How often a blocked acquire tries again without an event (lock-delay ends silently).
ACQUIRE_POLL_S = 0.05


class LockTimeout(TimeoutError_):
    """No answer, or no lock, within the deadline."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileData:
    contents: bytes
    meta: NodeMeta


class LockClient:
    """An async client of one lock cell. ``nodes`` maps node id to (host, port).
    Use as ``async with LockClient(...) as client``; the session opens on entry."""

    def __init__(
        self,
        nodes: Mapping[str, tuple[str, int]],
        *,
        principal: str,
        key: bytes | None,
        runtime: RuntimeConfig | None = None,
        config: LockConfig | None = None,
        call_timeout_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        batch_calls: bool = True,
    ) -> None:
        if not nodes:
            raise ConfigError("LockClient needs at least one node address")
        self.nodes = dict(nodes)
        self.principal = principal
        self.key = key
        self.runtime = runtime or RuntimeConfig()
        self.config = config or LockConfig.local()
        self.call_timeout_s = call_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.batch_calls = batch_calls
        self._queued_calls: dict[NodeId, list[ClientRequest]] = {}
        self._flush_scheduled = False
        self.session = ClientSession(
            NodeId(principal), random.Random(), servers=tuple(NodeId(n) for n in sorted(self.nodes)),
            config=self.config, call_timeout_ms=max(200.0, self.config.keepalive_early_ms),
            on_event=self._on_event,
        )
        self._t0 = time.monotonic()
        self._connections: dict[str, ClientConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchers: dict[str, list[asyncio.Queue[Event]]] = {}
        self._released: dict[str, asyncio.Event] = {}
        self._closed = False

    # ================================================================ driver

    def _now_ms(self) -> float:
        return (time.monotonic() - self._t0) * 1000.0

    def _execute(self, effects: Effects) -> None:
        loop = asyncio.get_running_loop()
        for effect in effects:
            match effect:
                case Send() if self.batch_calls and self._batchable(effect.message):
                    assert isinstance(effect.message, ClientRequest)
                    self._queued_calls.setdefault(effect.to, []).append(effect.message)
                    if not self._flush_scheduled:
                        self._flush_scheduled = True
                        loop.call_soon(self._flush_calls)
                case Send():
                    task = loop.create_task(self._deliver(effect))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                case SetTimer():
                    old = self._timers.pop(effect.key, None)
                    if old is not None:
                        old.cancel()
                    self._timers[effect.key] = loop.call_later(effect.delay_ms / 1000.0, self._fire, effect.key)
                case CancelTimer():
                    handle = self._timers.pop(effect.key, None)
                    if handle is not None:
                        handle.cancel()
                case _:
                    raise LocalProtocolError(f"a client core returned {type(effect).__name__}")

    @staticmethod
    def _batchable(message: Message) -> bool:
        """Changes go in call batches; reads (answered at once by the master)
        do not wait behind a change that waits for invalidations."""
        return (isinstance(message, ClientRequest) and isinstance(message.body, LockCall)
                and not isinstance(message.body.op, READ_ONLY))

    def _flush_calls(self) -> None:
        """Send the changes queued during this turn of the loop: one request per
        node, a ``LockCallBatch`` when there are several (one frame each way and
        one task instead of one per call)."""
        self._flush_scheduled = False
        queued, self._queued_calls = self._queued_calls, {}
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        for node, requests in queued.items():
            for first in range(0, len(requests), CALL_BATCH_MAX):
                chunk = requests[first:first + CALL_BATCH_MAX]
                work = (self._deliver(Send(to=node, message=chunk[0])) if len(chunk) == 1
                        else self._deliver_batch(node, chunk))
                task = loop.create_task(work)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver_batch(self, node: NodeId, requests: list[ClientRequest]) -> None:
        batch = LockCallBatch(calls=tuple(r.body for r in requests if isinstance(r.body, LockCall)))
        try:
            connection = await self._connection(node)
            # A change may wait up to a lease for a silent cache holder.
            reply = await connection.request(batch, max(self.call_timeout_s, 2 * self.config.lease_ms / 1000.0))
        except (TimeoutError_, TimeoutError):
            return  # the session core's own timers retry each call
        except Exception:  # closed, refused, unreachable
            reply = ErrorReply(code="not_master", detail=f"{node} unreachable")
        if self._closed:
            return
        if isinstance(reply, LockCallBatchReply) and len(reply.replies) == len(requests):
            answers: list[Message] = list(reply.replies)
        elif isinstance(reply, ErrorReply):
            answers = [reply] * len(requests)
        else:
            answers = [ErrorReply(code="bad_reply", detail=f"{type(reply).__name__} for a call batch")] * len(requests)
        for request, answer in zip(requests, answers, strict=True):
            self._execute(self.session.on_message(
                self._now_ms(), node, ClientReply(request_id=request.request_id, body=answer)))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        if not self._closed:
            self._execute(self.session.on_timer(self._now_ms(), key))

    async def _deliver(self, send: Send) -> None:
        request = send.message
        if not isinstance(request, ClientRequest):
            return
        # A KeepAlive is held up to a lease by the master.
        timeout_s = max(self.call_timeout_s, 2 * self.config.lease_ms / 1000.0)
        try:
            connection = await self._connection(send.to)
            reply = await connection.request(request.body, timeout_s)
        except (TimeoutError_, TimeoutError):
            return  # the session core's own timers retry elsewhere
        except Exception:  # closed, refused, unreachable: all the same here
            # Tell the core at once that this node cannot serve, so it moves on
            # to the next one instead of waiting out its timers.
            reply = ErrorReply(code="not_master", detail=f"{send.to} unreachable")
        if not self._closed:
            self._execute(self.session.on_message(
                self._now_ms(), send.to, ClientReply(request_id=request.request_id, body=reply)))

    async def _connection(self, node: str) -> ClientConnection:
        existing = self._connections.get(node)
        if existing is not None and not existing.closed:
            return existing
        lock = self._connecting.setdefault(node, asyncio.Lock())
        async with lock:
            existing = self._connections.get(node)
            if existing is not None and not existing.closed:
                return existing
            async with asyncio.timeout(self.connect_timeout_s):
                connection = await connect(self.nodes[node], self.principal, self.key, node=node,
                                           config=self.runtime)
            self._connections[node] = connection
            return connection

    def _on_event(self, event: Event) -> None:
        if event.kind in (EventKind.LOCK_RELEASED, EventKind.MASTER_FAILED_OVER):
            for path, flag in self._released.items():
                if event.kind is EventKind.MASTER_FAILED_OVER or path == event.path:
                    flag.set()
        targets = (list(self._watchers) if event.kind is EventKind.MASTER_FAILED_OVER
                   else [event.path])
        for path in targets:
            for queue in self._watchers.get(path, []):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(event)

    # ================================================================ life cycle

    async def __aenter__(self) -> LockClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the session (raises ``LockTimeout`` if no master answers)."""
        result = await self._wait(lambda done: self.session.open(self._now_ms(), done))
        if not self.session.usable:
            raise self._error(result)

    async def close(self) -> None:
        """Close the session (its locks are released at once, its ephemeral files
        deleted) and the connections."""
        if self._closed:
            return
        if self.session.usable:
            with contextlib.suppress(LockError, TimeoutError_):
                await self._wait(lambda done: self.session.close(self._now_ms(), done), timeout_s=2.0)
        await self.abandon()

    async def abandon(self) -> None:
        """Stop talking to the cell WITHOUT closing the session, as a crashed or
        frozen process would: the master expires the session when its lease
        runs out, and its locks then stay unavailable for their lock-delay."""
        if self._closed:
            return
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for connection in self._connections.values():
            with contextlib.suppress(Exception):
                await connection.close()
        self._connections.clear()

    @property
    def state(self) -> SessionState:
        return self.session.state

    def lease_safe(self) -> bool:
        """True while the session's local lease certainly holds: the moment to
        act on a lock (and, with a sequencer, on the servers it fences)."""
        return self.session.lease_safe(self._now_ms())

    async def _wait(self, start: Callable[[Callable[[Message], None]], Effects],
                    timeout_s: float | None = None) -> Message:
        if self._closed:
            raise LocalProtocolError("LockClient is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()

        def done(result: Message) -> None:
            if not future.done():
                future.set_result(result)

        self._execute(start(done))
        if future.done():
            return future.result()
        # A plain timer rather than ``asyncio.timeout``: this is every call's path.
        limit_s = timeout_s or self.call_timeout_s
        handle = loop.call_later(limit_s, self._expire_wait, future, limit_s)
        try:
            return await future
        finally:
            handle.cancel()

    @staticmethod
    def _expire_wait(future: asyncio.Future[Message], limit_s: float) -> None:
        if not future.done():
            future.set_exception(LockTimeout(f"no answer from the cell within {limit_s} s"))

    def _error(self, result: Message) -> LockError:
        if isinstance(result, OpError):
            return error_from_code(result.code, result.detail)
        if isinstance(result, ErrorReply):
            return error_from_code(result.code, result.detail)
        return LockError(f"unexpected answer {type(result).__name__}")

    async def _op(self, op: Message, *, cache: bool = False) -> Message:
        result = await self._wait(lambda done: self.session.call(self._now_ms(), op, done, cache=cache))
        if isinstance(result, OpError | ErrorReply):
            raise self._error(result)
        return result

    @property
    def _session_id(self) -> int:
        if not self.session.usable:
            raise SessionExpiredError(f"session is {self.session.state.value}")
        return self.session.session

    # ================================================================ files

    async def read(self, path: str, *, cache: bool = True) -> FileData:
        """A file's contents and metadata; from the cache (no round trip) when it
        holds them and the session is safe."""
        if cache and not self._closed:
            # A hit needs no call: no future, no timer.
            hit = self.session.cached(self._now_ms(), path)
            if hit is not None:
                return FileData(contents=hit.contents, meta=hit.meta)
        result = await self._wait(lambda done: self.session.read(self._now_ms(), path, done, cache=cache))
        if not isinstance(result, Contents):
            raise self._error(result)
        return FileData(contents=result.contents, meta=result.meta)

    async def create(self, path: str, contents: bytes = b"", *, directory: bool = False,
                     ephemeral: bool = False, sequential: bool = False) -> NodeMeta:
        result = await self._op(Create(session=self._session_id, path=path, directory=directory,
                                       ephemeral=ephemeral, sequential=sequential, contents=contents))
        assert isinstance(result, NodeMeta)
        return result

    async def ensure(self, path: str, *, directory: bool = False) -> None:
        """Create ``path`` unless it exists."""
        with contextlib.suppress(ExistsError):
            await self.create(path, directory=directory)

    async def write(self, path: str, contents: bytes, *, expected_generation: int = ANY_GENERATION) -> NodeMeta:
        result = await self._op(Write(session=self._session_id, path=path, contents=contents,
                                      expected_generation=expected_generation))
        assert isinstance(result, NodeMeta)
        return result

    async def delete(self, path: str, *, expected_generation: int = ANY_GENERATION) -> None:
        await self._op(Delete(session=self._session_id, path=path, expected_generation=expected_generation))

    async def list(self, path: str) -> tuple[str, ...]:
        result = await self._op(ListChildren(session=self._session_id, path=path))
        assert isinstance(result, Children)
        return result.names

    async def stat(self, path: str) -> NodeMeta:
        result = await self._op(Stat(session=self._session_id, path=path))
        assert isinstance(result, NodeMeta)
        return result

    async def set_acl(self, path: str, *, read: tuple[str, ...], write: tuple[str, ...],
                      change: tuple[str, ...]) -> NodeMeta:
        result = await self._op(SetAcl(session=self._session_id, path=path, read=read, write=write, change=change))
        assert isinstance(result, NodeMeta)
        return result

    # ================================================================ locks

    async def try_acquire(self, path: str, mode: LockMode = LockMode.EXCLUSIVE) -> Sequencer:
        result = await self._op(Acquire(session=self._session_id, path=path, mode=mode, now_ms=0.0))
        assert isinstance(result, Acquired)
        return result.sequencer

    async def acquire(self, path: str, mode: LockMode = LockMode.EXCLUSIVE, *,
                      timeout_s: float | None = None) -> Sequencer:
        """Take the lock, waiting up to ``timeout_s`` (None: forever) for it."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        flag = self._released.setdefault(path, asyncio.Event())
        subscribed = False
        try:
            while True:
                flag.clear()
                try:
                    return await self.try_acquire(path, mode)
                except (LockBusyError, LockDelayError):
                    pass
                if not subscribed:
                    await self.subscribe(path, (EventKind.LOCK_RELEASED,))
                    subscribed = True
                    continue
                wait_s = ACQUIRE_POLL_S * 10
                if deadline is not None:
                    wait_s = min(wait_s, deadline - time.monotonic())
                    if wait_s <= 0:
                        raise LockTimeout(f"{path} not acquired within {timeout_s} s")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait_s, ACQUIRE_POLL_S)):
                        await flag.wait()
        finally:
            self._released.pop(path, None)

    async def release(self, path: str) -> None:
        await self._op(Release(session=self._session_id, path=path))

    async def check_sequencer(self, sequencer: Sequencer) -> bool:
        result = await self._op(CheckSequencer(sequencer=sequencer))
        assert isinstance(result, SequencerValidity)
        return result.valid

    # ================================================================ events

    async def subscribe(self, path: str, kinds: tuple[EventKind, ...]) -> None:
        merged = tuple(sorted(set(self.session.subscriptions.get(path, ())) | set(kinds)))
        result = await self._wait(lambda done: self.session.subscribe(self._now_ms(), path, merged, done))
        if not isinstance(result, Done):
            raise self._error(result)

    async def watch(self, path: str, kinds: tuple[EventKind, ...] = (EventKind.CONTENTS_MODIFIED,)
                    ) -> AsyncGenerator[Event, None]:
        """Events about ``path`` (and ``MASTER_FAILED_OVER``, after which the
        caller should re-read: events may have been missed), as they come."""
        queue: asyncio.Queue[Event] = asyncio.Queue(WATCH_QUEUE_MAX)
        self._watchers.setdefault(path, []).append(queue)
        try:
            await self.subscribe(path, kinds)
            while True:
                yield await queue.get()
        finally:
            self._watchers[path].remove(queue)

    # ================================================================ recipes

    @contextlib.asynccontextmanager
    async def lock(self, path: str, mode: LockMode = LockMode.EXCLUSIVE, *,
                   timeout_s: float | None = None) -> AsyncIterator[Sequencer]:
        """Hold the lock on ``path`` (created if missing) for the ``async with``
        body; yields the sequencer to pass to the servers the body writes to."""
        await self.ensure(path)
        sequencer = await self.acquire(path, mode, timeout_s=timeout_s)
        try:
            yield sequencer
        finally:
            if self.session.usable:
                with contextlib.suppress(LockError, TimeoutError_):
                    await self.release(path)

    async def elect(self, path: str, identity: str, *, timeout_s: float | None = None) -> Sequencer:
        """Become the leader named by ``path``: hold its lock and write
        ``identity`` into it. Returns the sequencer (the leadership's fencing
        token). Others learn the leader with ``leader(path)`` or ``watch``."""
        await self.ensure(path)
        sequencer = await self.acquire(path, timeout_s=timeout_s)
        await self.write(path, identity.encode())
        return sequencer

    async def leader(self, path: str) -> str | None:
        """The identity written by the current leader, or None if nobody holds it."""
        meta = await self.stat(path)
        if meta.lock_mode is LockMode.FREE:
            return None
        data = await self.read(path, cache=False)
        return data.contents.decode(errors="replace") or None

    async def register(self, directory: str, name: str, address: str) -> NodeMeta:
        """Announce a service instance: an ephemeral file ``directory/name`` holding
        ``address``, gone when this session ends."""
        await self.ensure(directory, directory=True)
        return await self.create(f"{directory}/{name}", address.encode(), ephemeral=True)

    async def discover(self, directory: str) -> dict[str, str]:
        """The service instances registered under ``directory``: name -> address."""
        found: dict[str, str] = {}
        for name in await self.list(directory):
            with contextlib.suppress(LockError):
                data = await self.read(f"{directory}/{name}")
                found[name] = data.contents.decode(errors="replace")
        return found

    async def watch_contents(self, path: str) -> AsyncGenerator[bytes, None]:
        """Configuration distribution: the contents of ``path`` now, then again
        after every change (and after a failover, since events may be missed)."""
        events = self.watch(path, (EventKind.CONTENTS_MODIFIED, EventKind.HANDLE_INVALID))
        try:
            first = asyncio.ensure_future(events.__anext__())
            await asyncio.sleep(0)
            last: bytes | None = None
            data = await self.read(path, cache=False)
            last = data.contents
            yield last
            pending = first
            while True:
                await pending
                data = await self.read(path, cache=False)
                if data.contents != last:
                    last = data.contents
                    yield last
                pending = asyncio.ensure_future(events.__anext__())
        finally:
            await events.aclose()


class KeepAliveBatcher:
    """Carries the KeepAlives of many sessions of one client host to the cell as
    ``KeepAliveBatch`` requests: every KeepAlive submitted for a node during one
    turn of the event loop goes in one request (at most ``batch_max`` entries).

    Sessions opened together have leases that end together, so after the first
    round their KeepAlives keep arriving together and the master answers them
    together: a host with ten thousand idle sessions costs the master and itself
    a few requests per lease instead of ten thousand. Each session's core sees
    its own reply exactly as if it had sent its KeepAlive alone; a batch that
    times out gives no reply, and each core's own KeepAlive timer tries again."""

    def __init__(self, connection_for: Callable[[str], Awaitable[ClientConnection]], *,
                 timeout_s: float, batch_max: int = 1_024) -> None:
        if batch_max < 1:
            raise ConfigError("KeepAliveBatcher.batch_max must be at least 1")
        self.connection_for = connection_for
        self.timeout_s = timeout_s
        self.batch_max = batch_max
        self.batches_sent = 0
        self._queued: dict[str, list[tuple[KeepAlive, Callable[[Message], None]]]] = {}
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def submit(self, node: str, keepalive: KeepAlive, on_reply: Callable[[Message], None]) -> None:
        """Queue ``keepalive`` for ``node``; ``on_reply`` gets this session's
        answer (a ``KeepAliveReply`` or an ``ErrorReply``). Ignored once closed."""
        if self._closed:
            return
        self._queued.setdefault(node, []).append((keepalive, on_reply))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queued = self._queued, {}
        loop = asyncio.get_running_loop()
        for node, items in queued.items():
            for first in range(0, len(items), self.batch_max):
                task = loop.create_task(self._send(node, items[first:first + self.batch_max]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, node: str, items: list[tuple[KeepAlive, Callable[[Message], None]]]) -> None:
        self.batches_sent += 1
        try:
            connection = await self.connection_for(node)
            reply = await connection.request(KeepAliveBatch(keepalives=tuple(k for k, _ in items)), self.timeout_s)
        except (TimeoutError_, TimeoutError):
            return  # each session's own timer tries again
        except Exception:  # closed, refused, unreachable: all the same here
            reply = ErrorReply(code="not_master", detail=f"{node} unreachable")
        if isinstance(reply, KeepAliveBatchReply) and len(reply.replies) == len(items):
            for (_, on_reply), answer in zip(items, reply.replies, strict=True):
                on_reply(answer)
            return
        if not isinstance(reply, ErrorReply):
            reply = ErrorReply(code="bad_reply", detail=f"{type(reply).__name__} for a KeepAlive batch")
        for _, on_reply in items:
            on_reply(reply)

    async def close(self) -> None:
        self._closed = True
        self._queued.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


#: Sessions per ``OpenSessions`` call of ``open_sessions`` (the cell takes 4,096).
OPEN_SESSIONS_BATCH = 1_024


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedSession:
    """One session of ``open_sessions``: hand it to a core with
    ``ClientSession.adopt(now, session, epoch, opened_ms, master)``."""

    session: int
    epoch: int
    opened_ms: float
    master: NodeId


async def open_sessions(connection_for: Callable[[str], Awaitable[ClientConnection]], nodes: Sequence[str],
                        count: int, *, now_ms: Callable[[], float], rng: random.Random,
                        timeout_s: float = 60.0, batch: int = OPEN_SESSIONS_BATCH) -> list[OpenedSession]:
    """Open ``count`` sessions of this connection's principal with one
    ``OpenSessions`` command per ``batch`` of them (one Paxos command opens a
    thousand sessions), for a host that keeps many sessions on one connection
    and carries their KeepAlives with a ``KeepAliveBatcher``. Each call is
    exactly-once (its own incarnation), so a retry after a lost answer opens
    nothing twice. ``opened_ms`` (in ``now_ms``'s clock) is when the call that
    got the answer left: the sessions' leases count from then."""
    if count < 0 or not 1 <= batch <= 4_096:
        raise ConfigError("open_sessions: count >= 0, batch in 1..4096")
    if not nodes:
        raise ConfigError("open_sessions needs at least one node")

    async def one(size: int) -> list[OpenedSession]:
        call = LockCall(epoch=0, incarnation=rng.getrandbits(62), seq=1, seen_below=1,
                        op=OpenSessions(principal="", count=size, now_ms=0.0))
        deadline = time.monotonic() + timeout_s
        node = nodes[rng.randrange(len(nodes))]
        while time.monotonic() < deadline:
            sent_ms = now_ms()
            try:
                connection = await connection_for(node)
                reply = await connection.request(call, max(0.1, min(10.0, deadline - time.monotonic())))
            except Exception:  # timed out, closed, refused: the next node (the call is exactly-once)
                node = nodes[(list(nodes).index(node) + 1) % len(nodes)]
                await asyncio.sleep(0.05)
                continue
            if isinstance(reply, LockReply) and isinstance(reply.result, SessionsOpened):
                opened = reply.result
                return [OpenedSession(session=opened.first + i, epoch=reply.epoch, opened_ms=sent_ms,
                                      master=NodeId(node)) for i in range(opened.count)]
            if isinstance(reply, LockReply) and isinstance(reply.result, OpError):
                raise error_from_code(reply.result.code, reply.result.detail)
            if isinstance(reply, ErrorReply) and reply.code in ("not_master", "not_leader") and reply.hint in nodes:
                node = reply.hint
            else:
                node = nodes[(list(nodes).index(node) + 1) % len(nodes)]
                await asyncio.sleep(0.05)
        raise LockTimeout(f"no master opened {size} sessions within {timeout_s} s")

    sizes = [min(batch, count - first) for first in range(0, count, batch)]
    opened: list[OpenedSession] = []
    for part in await asyncio.gather(*(one(size) for size in sizes)):
        opened.extend(part)
    return opened


class SyncLockClient:
    """A blocking wrapper of ``LockClient``. Its event loop runs in a daemon
    thread so that KeepAlives continue between calls (the session stays alive
    while the caller does other work). One caller at a time."""

    def __init__(self, nodes: Mapping[str, tuple[str, int]], **options: Any) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="synod-lock-client", daemon=True)
        self._thread.start()
        self._client = LockClient(nodes, **options)
        try:
            self._run(self._client.open())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        self._loop.close()

    @property
    def client(self) -> LockClient:
        return self._client

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> SyncLockClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, path: str, *, cache: bool = True) -> FileData:
        return self._run(self._client.read(path, cache=cache))

    def create(self, path: str, contents: bytes = b"", **flags: bool) -> NodeMeta:
        return self._run(self._client.create(path, contents, **flags))

    def write(self, path: str, contents: bytes, *, expected_generation: int = ANY_GENERATION) -> NodeMeta:
        return self._run(self._client.write(path, contents, expected_generation=expected_generation))

    def delete(self, path: str, *, expected_generation: int = ANY_GENERATION) -> None:
        self._run(self._client.delete(path, expected_generation=expected_generation))

    def list(self, path: str) -> tuple[str, ...]:
        return self._run(self._client.list(path))

    def stat(self, path: str) -> NodeMeta:
        return self._run(self._client.stat(path))

    def acquire(self, path: str, mode: LockMode = LockMode.EXCLUSIVE, *, timeout_s: float | None = None) -> Sequencer:
        return self._run(self._client.acquire(path, mode, timeout_s=timeout_s))

    def release(self, path: str) -> None:
        self._run(self._client.release(path))

    def check_sequencer(self, sequencer: Sequencer) -> bool:
        return self._run(self._client.check_sequencer(sequencer))

    def elect(self, path: str, identity: str, *, timeout_s: float | None = None) -> Sequencer:
        return self._run(self._client.elect(path, identity, timeout_s=timeout_s))

    def leader(self, path: str) -> str | None:
        return self._run(self._client.leader(path))

    def register(self, directory: str, name: str, address: str) -> NodeMeta:
        return self._run(self._client.register(directory, name, address))

    def discover(self, directory: str) -> dict[str, str]:
        return self._run(self._client.discover(directory))
