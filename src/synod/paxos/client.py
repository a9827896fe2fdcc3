"""The Paxos client library: ``PaxosClient`` (async) and ``SyncPaxosClient``.

Theory of operation
-------------------
A client talks to one node at a time over one authenticated runtime connection
(``synod.runtime.client.connect``). It does not know who leads: it connects to any
node, and a ``not_leader`` answer (with the leader's id as hint when the node knows
it) sends it to the hinted node, or to the next one in turn.

*Exactly once.* Every command gets the next sequence number of this client
(``client_id`` is random per client object) and keeps it across every retry, on
any node: the replicas' exactly-once table answers a command already applied with
its first result instead of applying it again. Each command also carries
``seen_below``, the lowest sequence number whose answer this client has not yet
seen, so replicas may forget older results (a per-client window, never a single
"last seq", because many commands are in flight and answers come back in any
order).

*Pipelining and coalescing.* Calls do not wait for one another: each call puts its
item (a ``Command`` or a ``Read``) in a queue and waits for its own answer. One
sender task drains the queue: everything queued when it wakes (at most
``batch_items_max``) leaves as ONE ``ClientBatch`` frame, answered by one
``ClientBatchReply``; up to ``batches_in_flight_max`` batches are outstanding at
once. Under load, batches grow by themselves; with one call in flight each batch
holds one item and costs one round trip.

*Failure.* A lost connection or a batch with no answer within ``attempt_timeout_s``
sends every item of it back to the queue (same seq) and the client moves to
another node. An item not answered within its call's ``timeout_s`` fails with
``PaxosTimeout`` (a ``synod.core.errors.TimeoutError_``): the command may or may
not have been applied. Typed refusals the client cannot fix by retrying
(``too_large``, ``bad_request``) raise ``PaxosRequestError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from synod.codec.kernel import ErrorReply
from synod.codec.registry import Message
from synod.core.errors import ConfigError, LocalProtocolError, SynodError, TimeoutError_
from synod.paxos import kv
from synod.paxos.messages import Command, CommandResult, Read, ReadMode, ReadResult
from synod.paxos.server import ClientBatch, ClientBatchReply, StatusQuery, StatusReply
from synod.runtime.client import ClientConnection, connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import new_event_loop
from synod.runtime.transport import ConnectionClosed

log = logging.getLogger("synod.paxos.client")

T = TypeVar("T")

#: Call deadlines are grouped into buckets this long, one timer per bucket.
_EXPIRY_BUCKET_S = 0.05
#: Longest wait (s) for background tasks and the connection when a client closes.
_CLOSE_WAIT_S = 2.0

#: Answers after which an item is simply sent again (same seq), after a pause.
_RETRY_CODES = frozenset({"not_leader", "overloaded", "busy"})


class PaxosTimeout(TimeoutError_):
    """No answer in time: the cluster could not be reached or could not decide.
    For a command, the outcome is unknown (it may still be applied once)."""


class PaxosRequestError(SynodError):
    """The cluster refused the request in a way retrying cannot fix; ``code`` is
    the server's error code (``too_large``, ``bad_request``, ...)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Knobs of one client."""

    #: A call with no answer after this long raises ``PaxosTimeout``.
    timeout_s: float = 10.0
    #: A batch with no answer after this long counts as lost: its items go to
    #: another node. Short enough to get past a hung node well within ``timeout_s``.
    attempt_timeout_s: float = 1.0
    #: Items coalesced into one frame at most.
    batch_items_max: int = 256
    #: Batches outstanding on the connection at once.
    batches_in_flight_max: int = 8
    #: Calls waiting (queued or in flight) at most; more wait for room.
    calls_in_flight_max: int = 4096
    #: Pause before retrying after "not leader" without a hint, or "overloaded".
    retry_pause_s: float = 0.02
    #: Seconds to open a connection (TCP + handshake) to one node.
    connect_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("timeout_s", "attempt_timeout_s", "retry_pause_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ClientConfig.{name} must be positive")
        for name in ("batch_items_max", "batches_in_flight_max", "calls_in_flight_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ClientConfig.{name} must be positive")


@dataclass(slots=True)
class _Item:
    """One call waiting for its answer."""

    seq: int           # 0 for reads (they need no exactly-once)
    op: bytes
    mode: ReadMode | None  # None: a command
    future: asyncio.Future[bytes]
    deadline: float
    attempts: int = 0

    def body(self, seen_below: int, client_id: str) -> Message:
        if self.mode is None:
            return Command(client=client_id, seq=self.seq, seen_below=seen_below, op=self.op)
        return Read(op=self.op, mode=self.mode)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStatistics:
    commands: int
    reads: int
    batches_sent: int
    items_sent: int
    retries: int
    redirects: int
    reconnects: int
    timeouts: int


class PaxosClient:
    """An async client of a Paxos KV cluster (see the module comment).

    ``nodes`` maps node id to (host, port). ``key`` is the client principal's key
    (None with ``runtime.insecure``). Use as ``async with PaxosClient(...) as c``.
    """

    def __init__(
        self,
        nodes: Mapping[str, tuple[str, int]],
        *,
        principal: str,
        key: bytes | None,
        runtime: RuntimeConfig | None = None,
        config: ClientConfig | None = None,
        client_id: str | None = None,
    ) -> None:
        if not nodes:
            raise ConfigError("PaxosClient needs at least one node address")
        self.nodes = dict(nodes)
        self.principal = principal
        self.key = key
        self.runtime = runtime or RuntimeConfig()
        self.config = config or ClientConfig()
        self.client_id = client_id or f"{principal}-{secrets.token_hex(6)}"
        self._order = sorted(self.nodes)
        self._target = self._order[0]
        self._hint: str | None = None
        self._connection: ClientConnection | None = None
        self._connecting: asyncio.Lock | None = None
        self._queue: deque[_Item] = deque()
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._calls_active = 0
        self._calls_room: deque[asyncio.Future[None]] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._next_seq = 1
        self._unanswered: dict[int, None] = {}   # insertion order == seq order
        self._expiry: dict[int, list[_Item]] = {}
        self._closed = False
        self._counts = dict.fromkeys(ClientStatistics.__slots__, 0)

    # ------------------------------------------------------------ life cycle

    async def __aenter__(self) -> PaxosClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _ensure_started(self) -> None:
        if self._closed:
            raise LocalProtocolError("PaxosClient is closed")
        if self._sender is None:
            self._wake = asyncio.Event()
            self._slots = asyncio.Semaphore(self.config.batches_in_flight_max)
            self._connecting = asyncio.Lock()
            self._sender = asyncio.create_task(self._send_loop())

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._sender, *self._batches) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that swallowed its cancellation (on Python 3.11 an
            # ``asyncio.wait_for`` racing with its inner future can) must not hang
            # close(); it is cancelled once more and left behind.
            _done, pending = await asyncio.wait(tasks, timeout=_CLOSE_WAIT_S)
            for task in pending:
                log.warning("client %s: a task ignored cancellation at close", self.client_id)
                task.cancel()
        for items in (self._queue, *self._expiry.values()):
            for item in items:
                if not item.future.done():
                    item.future.set_exception(LocalProtocolError("PaxosClient closed"))
        self._queue.clear()
        self._expiry.clear()
        try:
            await asyncio.wait_for(self._drop_connection(), _CLOSE_WAIT_S)
        except TimeoutError:
            log.warning("client %s: the connection did not close within %.0f s", self.client_id, _CLOSE_WAIT_S)

    # ------------------------------------------------------------ KV API

    async def get(self, key: str, *, mode: ReadMode = ReadMode.LEASE, timeout_s: float | None = None) -> str | None:
        """The value of ``key`` (None if absent), read in ``mode``."""
        result = _checked(kv.decode_result(await self.read(kv.op_get(key), mode=mode, timeout_s=timeout_s)))
        if result is not None and not isinstance(result, str):
            raise PaxosRequestError("bad_reply", f"get returned {type(result).__name__}")
        return result

    async def put(self, key: str, value: str, *, timeout_s: float | None = None) -> None:
        _checked(kv.decode_result(await self.command(kv.op_put(key, value), timeout_s=timeout_s)))

    async def delete(self, key: str, *, timeout_s: float | None = None) -> bool:
        """Delete ``key``; True if it existed."""
        return bool(_checked(kv.decode_result(await self.command(kv.op_delete(key), timeout_s=timeout_s))))

    async def cas(self, key: str, expected: str | None, new: str, *,
                  timeout_s: float | None = None) -> tuple[bool, str | None]:
        """Set ``key`` to ``new`` if it holds ``expected`` (None: if absent).
        Returns (swapped, the value now)."""
        result = _checked(kv.decode_result(await self.command(kv.op_cas(key, expected, new), timeout_s=timeout_s)))
        swapped, current = result
        return bool(swapped), current

    # ------------------------------------------------------------ generic API

    async def command(self, op: bytes, *, timeout_s: float | None = None) -> bytes:
        """Apply ``op`` through the replicated log exactly once; its result bytes."""
        self._ensure_started()
        seq = self._next_seq
        self._next_seq += 1
        self._unanswered[seq] = None
        self._counts["commands"] += 1
        try:
            return await self._call(seq, op, None, timeout_s)
        finally:
            self._unanswered.pop(seq, None)

    async def read(self, op: bytes, *, mode: ReadMode = ReadMode.LEASE, timeout_s: float | None = None) -> bytes:
        """Run the read-only ``op`` in ``mode`` (LEASE and QUORUM are linearizable;
        STALE may return old state)."""
        self._ensure_started()
        self._counts["reads"] += 1
        return await self._call(0, op, mode, timeout_s)

    async def status(self, node: str, *, timeout_s: float = 2.0) -> StatusReply:
        """Ask ``node`` for its status (one connection, closed after)."""
        connection = await self._open(node, timeout_s)
        try:
            reply = await connection.request(StatusQuery(), timeout_s)
        finally:
            await connection.close()
        if not isinstance(reply, StatusReply):
            raise PaxosRequestError("bad_reply", f"{node} answered {type(reply).__name__}")
        return reply

    async def wait_leader(self, *, timeout_s: float = 10.0) -> str:
        """Wait until some node reports itself leader; return its id."""
        deadline = time.monotonic() + timeout_s
        while True:
            for node in self._order:
                with contextlib.suppress(OSError, SynodError, ConnectionClosed):
                    status = await self.status(node, timeout_s=0.5)
                    if status.role == "leader":
                        self._target = node
                        return node
            if time.monotonic() >= deadline:
                raise PaxosTimeout(f"no leader among {', '.join(self._order)} within {timeout_s} s")
            await asyncio.sleep(0.05)

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(**self._counts)

    @property
    def seen_below(self) -> int:
        """The lowest seq whose answer this client has not seen (see module comment)."""
        for seq in self._unanswered:
            return seq
        return self._next_seq

    # ------------------------------------------------------------ internals

    async def _call(self, seq: int, op: bytes, mode: ReadMode | None, timeout_s: float | None) -> bytes:
        assert self._wake is not None
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if timeout <= 0:
            raise LocalProtocolError("timeout_s must be positive")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._calls_active >= self.config.calls_in_flight_max:
            room: asyncio.Future[None] = loop.create_future()
            self._calls_room.append(room)
            await room   # back-pressure: wait for a call to finish
        self._calls_active += 1
        try:
            future: asyncio.Future[bytes] = loop.create_future()
            item = _Item(seq=seq, op=op, mode=mode, future=future, deadline=deadline)
            self._queue.append(item)
            self._wake.set()
            self._arm_expiry(loop, item)
            return await future
        finally:
            self._calls_active -= 1
            while self._calls_room:
                waiter = self._calls_room.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break

    def _arm_expiry(self, loop: asyncio.AbstractEventLoop, item: _Item) -> None:
        """Fail ``item`` with ``PaxosTimeout`` at its deadline. Deadlines share one
        timer per ``_EXPIRY_BUCKET_S`` (a timer per call would cost more than the
        call's own work under load), so a call may end up to that much late."""
        bucket = math.ceil(item.deadline / _EXPIRY_BUCKET_S)
        items = self._expiry.get(bucket)
        if items is None:
            items = self._expiry[bucket] = []
            loop.call_at(bucket * _EXPIRY_BUCKET_S, self._expire, bucket)
        items.append(item)

    def _expire(self, bucket: int) -> None:
        for item in self._expiry.pop(bucket, ()):
            if not item.future.done():
                self._counts["timeouts"] += 1
                item.future.set_exception(PaxosTimeout(
                    "no answer from the cluster in time (the outcome is unknown)"))

    async def _send_loop(self) -> None:
        assert self._wake is not None and self._slots is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._slots.acquire()
            try:
                connection = await self._connection_now()
            except BaseException:
                self._slots.release()
                raise
            batch: list[_Item] = []
            while self._queue and len(batch) < self.config.batch_items_max:
                item = self._queue.popleft()
                if not item.future.done():   # done: it expired or was cancelled
                    batch.append(item)
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run_batch(connection, batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run_batch(self, connection: ClientConnection | None, batch: list[_Item]) -> None:
        assert self._slots is not None
        try:
            if connection is None:
                self._requeue(batch, pause=True)
                return
            seen_below = self.seen_below
            bodies = tuple(item.body(seen_below, self.client_id) for item in batch)
            self._counts["batches_sent"] += 1
            self._counts["items_sent"] += len(batch)
            for item in batch:
                item.attempts += 1
            try:
                reply = await connection.request(ClientBatch(items=bodies), self.config.attempt_timeout_s)
            except (TimeoutError_, ConnectionClosed, OSError) as error:
                log.debug("client %s: batch to %s lost: %r", self.client_id, connection.node, error)
                self._forget_connection(connection, advance=True)
                self._requeue(batch, pause=False)
                return
            self._on_reply(connection, batch, reply)
        finally:
            self._slots.release()

    def _on_reply(self, connection: ClientConnection, batch: list[_Item], reply: Message) -> None:
        if isinstance(reply, ErrorReply):
            self._requeue_or_fail(connection, batch, reply)
            return
        if not isinstance(reply, ClientBatchReply) or len(reply.items) != len(batch):
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(PaxosRequestError("bad_reply", type(reply).__name__))
            return
        retry: list[_Item] = []
        for item, answer in zip(batch, reply.items, strict=True):
            if item.future.done():
                continue
            match answer:
                case CommandResult() if item.mode is None and answer.seq == item.seq:
                    item.future.set_result(answer.result)
                case ReadResult() if item.mode is not None:
                    item.future.set_result(answer.result)
                case ErrorReply() if answer.code in _RETRY_CODES:
                    retry.append(item)
                    self._note_refusal(connection, answer)
                case ErrorReply():
                    item.future.set_exception(PaxosRequestError(answer.code, answer.detail))
                case _:
                    item.future.set_exception(PaxosRequestError("bad_reply", type(answer).__name__))
        if retry:
            self._requeue(retry, pause=True)

    def _requeue_or_fail(self, connection: ClientConnection, batch: list[_Item], reply: ErrorReply) -> None:
        if reply.code in _RETRY_CODES:
            self._note_refusal(connection, reply)
            self._requeue(batch, pause=True)
            return
        for item in batch:
            if not item.future.done():
                item.future.set_exception(PaxosRequestError(reply.code, reply.detail))

    def _note_refusal(self, connection: ClientConnection, reply: ErrorReply) -> None:
        if reply.code != "not_leader" or connection is not self._connection:
            return
        self._counts["redirects"] += 1
        hint = reply.hint if reply.hint in self.nodes and reply.hint != connection.node else None
        self._hint = hint
        self._target = hint or self._next_node(connection.node)
        self._forget_connection(connection, advance=False)

    def _requeue(self, items: list[_Item], *, pause: bool) -> None:
        assert self._wake is not None
        self._counts["retries"] += len(items)
        if not pause:
            self._queue.extendleft(reversed(items))
            self._wake.set()
            return

        def back() -> None:
            assert self._wake is not None
            if not self._closed:
                self._queue.extendleft(reversed(items))
                self._wake.set()

        asyncio.get_running_loop().call_later(self.config.retry_pause_s, back)

    def _forget_connection(self, connection: ClientConnection, *, advance: bool) -> None:
        """Stop using ``connection`` now (later batches open another); close it
        in the background."""
        if connection is not self._connection:
            return
        self._connection = None
        if advance:
            self._target = self._next_node(connection.node)
        task = asyncio.create_task(self._close_quietly(connection))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    @staticmethod
    async def _close_quietly(connection: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await connection.close()

    def _next_node(self, node: str) -> str:
        index = self._order.index(node) if node in self._order else -1
        return self._order[(index + 1) % len(self._order)]

    async def _connection_now(self) -> ClientConnection | None:
        """The open connection, or a new one to the target (None if it failed:
        the caller pauses and the next attempt goes to the next node)."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        assert self._connecting is not None
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            target = self._target
            try:
                self._connection = await self._open(target, self.config.connect_timeout_s)
                self._counts["reconnects"] += 1
                return self._connection
            except (OSError, SynodError, ConnectionClosed) as error:
                log.debug("client %s: cannot reach %s: %r", self.client_id, target, error)
                self._target = self._next_node(target)
                return None

    async def _open(self, node: str, timeout_s: float) -> ClientConnection:
        address = self.nodes.get(node)
        if address is None:
            raise LocalProtocolError(f"unknown node {node!r}")
        try:
            async with asyncio.timeout(timeout_s):
                return await connect(address, self.principal, self.key, node=node, config=self.runtime,
                                     requests_in_flight_max=4 * self.config.batches_in_flight_max)
        except TimeoutError:
            raise PaxosTimeout(f"connecting to {node} took over {timeout_s} s") from None

    async def _drop_connection(self) -> None:
        current, self._connection = self._connection, None
        if current is not None:
            await self._close_quietly(current)


def _checked(result: Any) -> Any:
    if isinstance(result, dict) and "error" in result:
        raise PaxosRequestError("bad_request", str(result["error"]))
    return result


class SyncPaxosClient:
    """A blocking wrapper: the same API as ``PaxosClient`` without ``await``.

    It owns an event loop that runs only while a call runs (so the client's
    background tasks advance during calls). Not thread-safe: one caller at a time.
    """

    def __init__(self, nodes: Mapping[str, tuple[str, int]], **options: Any) -> None:
        self._runner = asyncio.Runner(loop_factory=new_event_loop)
        self._client = PaxosClient(nodes, **options)

    def _run(self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable
        return self._runner.run(wrapped())

    def get(self, key: str, *, mode: ReadMode = ReadMode.LEASE, timeout_s: float | None = None) -> str | None:
        result: str | None = self._run(self._client.get(key, mode=mode, timeout_s=timeout_s))
        return result

    def put(self, key: str, value: str, *, timeout_s: float | None = None) -> None:
        self._run(self._client.put(key, value, timeout_s=timeout_s))

    def delete(self, key: str, *, timeout_s: float | None = None) -> bool:
        return self._run(self._client.delete(key, timeout_s=timeout_s))

    def cas(self, key: str, expected: str | None, new: str, *,
            timeout_s: float | None = None) -> tuple[bool, str | None]:
        return self._run(self._client.cas(key, expected, new, timeout_s=timeout_s))

    def command(self, op: bytes, *, timeout_s: float | None = None) -> bytes:
        return self._run(self._client.command(op, timeout_s=timeout_s))

    def read(self, op: bytes, *, mode: ReadMode = ReadMode.LEASE, timeout_s: float | None = None) -> bytes:
        return self._run(self._client.read(op, mode=mode, timeout_s=timeout_s))

    def status(self, node: str, *, timeout_s: float = 2.0) -> StatusReply:
        return self._run(self._client.status(node, timeout_s=timeout_s))

    def wait_leader(self, *, timeout_s: float = 10.0) -> str:
        return self._run(self._client.wait_leader(timeout_s=timeout_s))

    def statistics(self) -> ClientStatistics:
        return self._client.statistics()

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncPaxosClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "ClientConfig",
    "ClientStatistics",
    "PaxosClient",
    "PaxosRequestError",
    "PaxosTimeout",
    "SyncPaxosClient",
]
