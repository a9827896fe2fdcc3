"""The transaction client library (asyncio, with a synchronous wrapper).

    client = TxnClient(shard_map_source, addresses, principal="alice", key=key)
    async with client.transaction() as t:
        balance = int(await t.get("alice") or 0)
        t.put("alice", str(balance - 10))
        t.put("bob", ...)
    # leaving the block commits (an exception aborts)

    await client.run(transfer)   # runs transfer(t) in a transaction, again on a
                                 # retryable abort, keeping its first timestamp

Reads go to the leader of the key's shard, which takes a shared lock; writes are
buffered here and sent with the commit to the coordinator (the leader of the
first shard written). A transaction moves ACTIVE -> COMMITTED | ABORTED, once;
anything after that is ``TxnStateError``. Refusals arrive as the ``TxnError``
subclasses of ``synod.txn.errors`` (``ConflictError`` names the key). A shard
answering ``wrong_shard`` makes the client refresh its shard map from the
``ShardMapSource``. This is glue, not a protocol core: it may use the clock and
the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import TypeVar

from synod.codec.kernel import ErrorReply
from synod.codec.registry import Message
from synod.core.errors import RemoteProtocolError, TimeoutError_
from synod.core.ids import NodeId
from synod.paxos.messages import Ballot
from synod.runtime.client import ClientConnection, connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import new_event_loop
from synod.runtime.transport import ConnectionClosed
from synod.txn.errors import TxnError, TxnStateError, UnavailableError, error_from_code
from synod.txn.messages import (
    Change,
    Part,
    TxnBatch,
    TxnBatchReply,
    TxnCommit,
    TxnGet,
    TxnOutcome,
    TxnRelease,
    TxnRows,
    TxnScan,
    TxnValue,
    Watch,
    WatchEvents,
    WatchWait,
    Write,
)
from synod.txn.shardmap import ShardMapSource

T = TypeVar("T")


class TxnState(enum.Enum):
    ACTIVE = "active"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ABORTED = "aborted"


#: A transaction's lifecycle: legal moves only.
TRANSITIONS: dict[TxnState, frozenset[TxnState]] = {
    TxnState.ACTIVE: frozenset({TxnState.COMMITTING, TxnState.ABORTED}),
    TxnState.COMMITTING: frozenset({TxnState.COMMITTED, TxnState.ABORTED}),
    TxnState.COMMITTED: frozenset(),
    TxnState.ABORTED: frozenset(),
}


class TxnClient:
    """An asyncio client of a sharded transactional store."""

    def __init__(
        self,
        shard_maps: ShardMapSource,
        addresses: Mapping[str, tuple[str, int]],
        *,
        principal: str,
        key: bytes | None,
        runtime_config: RuntimeConfig | None = None,
        request_timeout_s: float = 2.0,
        operation_timeout_s: float = 10.0,
        batch_items_max: int = 256,
    ) -> None:
        self.shard_maps = shard_maps
        self.shard_map = shard_maps.current()
        self.addresses = dict(addresses)
        self.principal = principal
        self.key = key
        self.runtime_config = runtime_config or RuntimeConfig()
        self.request_timeout_s = request_timeout_s
        self.operation_timeout_s = operation_timeout_s
        self._connections: dict[str, ClientConnection] = {}
        #: One batcher per connection AND coordinator group: a node may lead
        #: several groups (``synod node``), and a batch goes to one group.
        self._batchers: dict[tuple[ClientConnection, str], _Batcher] = {}
        #: Commits issued at once to one leader (for one coordinator group)
        #: leave in one ``TxnBatch`` of at most this many (1: no batching).
        self.batch_items_max = batch_items_max
        self._leader: dict[str, NodeId] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{principal}-{os.getpid()}-{random.getrandbits(32):08x}"

    # ------------------------------------------------------------ transactions

    def transaction(self, *, ts: int | None = None) -> Transaction:
        """A new interactive transaction; ``ts`` keeps a retried one's priority."""
        return Transaction(self, f"{self._prefix}-{next(self._ids)}", ts if ts is not None else time.time_ns() // 1000)

    async def run(self, body: Callable[[Transaction], Awaitable[T]], *, attempts_max: int = 10) -> T:
        """Run ``body`` in a transaction and commit; on a retryable abort run it
        again (with backoff) under its first timestamp, so wound-wait lets it win."""
        ts = time.time_ns() // 1000
        for attempt in range(attempts_max):
            txn = self.transaction(ts=ts)
            try:
                async with txn:
                    result = await body(txn)
                return result
            except TxnError as error:
                if not error.retryable or attempt == attempts_max - 1 or isinstance(error, UnavailableError):
                    raise
                await asyncio.sleep(min(0.2, 0.005 * 2 ** attempt) * random.random())
        raise AssertionError("unreachable")

    async def get(self, key: str) -> str | None:
        async def read(t: Transaction) -> str | None:
            return await t.get(key)
        return await self.run(read)

    async def put(self, key: str, value: str | None) -> None:
        async def write(t: Transaction) -> None:
            t.put(key, value)
        await self.run(write)

    async def delete(self, key: str) -> None:
        await self.put(key, None)

    async def scan(self, start: str, end: str, limit: int = 1000) -> list[tuple[str, str]]:
        async def read(t: Transaction) -> list[tuple[str, str]]:
            return await t.scan(start, end, limit)
        return await self.run(read)

    async def watch(self, start: str, end: str, from_revision: int) -> tuple[list[Change], int]:
        """Changes in ``[start, end)`` at or after ``from_revision``, from every
        shard the range covers, and the revision to ask from next (per shard
        revisions differ; the returned one is the first shard's)."""
        changes: list[Change] = []
        revision = 0
        for shard in self.shard_map.shards_overlapping(start, end):
            reply = await self.request(shard.group, Watch(start=start, end=end, from_revision=from_revision))
            assert isinstance(reply, WatchEvents)
            changes += reply.events
            revision = revision or reply.revision + 1
        return changes, revision

    async def watch_stream(self, start: str, end: str, from_revision: int, *,
                           wait_s: float = 10.0) -> AsyncIterator[tuple[str, Change]]:
        """Every change to a key in ``[start, end)`` from ``from_revision`` on, as
        ``(group, change)``, as it is applied, until the caller stops iterating.
        Each shard counts its own revisions, so ``from_revision`` applies to every
        shard the range covers. Long polls (``WatchWait``): a replica answers as
        soon as a change lands, or with nothing after ``wait_s``, and the poll is
        asked again from the next revision. ``CompactedError`` if the history from
        that revision is gone."""
        queue: asyncio.Queue[tuple[str, Change] | Exception] = asyncio.Queue(maxsize=1024)

        async def follow(group: str, low: str, high: str) -> None:
            revision = from_revision
            try:
                while True:
                    reply = await self.request(group, WatchWait(start=low, end=high, from_revision=revision,
                                                                wait_ms=wait_s * 1000.0),
                                               timeout_s=wait_s + self.request_timeout_s)
                    assert isinstance(reply, WatchEvents)
                    for change in reply.events:
                        await queue.put((group, change))
                        revision = max(revision, change.revision + 1)
            except Exception as error:   # handed to the consumer, which raises it
                await queue.put(error)

        tasks = []
        for shard in self.shard_map.shards_overlapping(start, end):
            low = max(start, shard.start)
            high = shard.end if not end or (shard.end and shard.end < end) else end
            tasks.append(asyncio.create_task(follow(shard.group, low or "\x00", high)))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # ------------------------------------------------------------ requests

    async def request(self, group: str, body: Message, *, timeout_s: float | None = None) -> Message:
        """Send ``body`` to ``group``'s leader, following redirects, until an
        answer or ``operation_timeout_s``. Refusals raise their ``TxnError``.
        ``timeout_s``: how long one attempt waits (default ``request_timeout_s``)."""
        deadline = time.monotonic() + max(self.operation_timeout_s, timeout_s or 0.0)
        replicas = self.shard_map.shard(group).replicas
        target = self._leader.get(group) or random.choice(replicas)
        while True:
            if time.monotonic() > deadline:
                raise UnavailableError(f"no answer from group {group}")
            try:
                connection = await self._connection(target)
                reply = await self._attempt(connection, body, timeout_s or self.request_timeout_s)
            except (OSError, ConnectionClosed, TimeoutError, TimeoutError_) as error:
                del error
                self._connections.pop(target, None)
                target = random.choice([r for r in replicas if r != target] or list(replicas))
                await asyncio.sleep(0.02)
                continue
            if isinstance(reply, ErrorReply):
                if reply.code == "not_leader":
                    target = NodeId(reply.hint) if reply.hint in replicas else random.choice(replicas)
                    if not reply.hint:
                        await asyncio.sleep(0.02)
                    continue
                if reply.code == "unavailable" and not isinstance(body, TxnCommit):
                    await asyncio.sleep(0.02)
                    continue
                if reply.code == "unavailable":
                    await asyncio.sleep(0.05)
                    continue   # ask again: the coordinator answers a duplicate commit
                if reply.code == "wrong_shard":
                    self.shard_map = await self.shard_maps.refresh(self.shard_map.version)
                raise error_from_code(reply.code, reply.detail, reply.hint)
            self._leader[group] = target
            return reply

    async def _attempt(self, connection: ClientConnection, body: Message, timeout_s: float) -> Message:
        """One try of ``body`` on ``connection``: commits go through the batcher
        of the connection and their coordinator group, everything else alone."""
        if self.batch_items_max > 1 and isinstance(body, TxnCommit) and body.parts:
            place = (connection, body.parts[0].group)
            batcher = self._batchers.get(place)
            if batcher is None:
                for stale in [key for key in self._batchers if key[0].closed]:
                    del self._batchers[stale]
                batcher = self._batchers[place] = _Batcher(connection, self.batch_items_max)
            if not batcher.refused:
                return await batcher.submit(body, timeout_s)
        return await connection.request(body, timeout_s)

    async def _connection(self, node: NodeId) -> ClientConnection:
        connection = self._connections.get(node)
        if connection is not None and not connection.closed:
            return connection
        address = self.addresses.get(node)
        if address is None:
            raise OSError(f"no address for node {node}")
        connection = await connect(address, self.principal, self.key, node=node, config=self.runtime_config)
        self._connections[node] = connection
        return connection

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
        for connection in self._connections.values():
            await connection.close()
        self._connections.clear()


class _Batcher:
    """Commits for one connection and one coordinator group, gathered into
    ``TxnBatch``es (single-shard and cross-shard ones alike).

    ``submit`` queues a commit and schedules a flush with ``call_soon``: every
    commit the caller's tasks issue before the event loop turns leaves in the
    same request (at most ``items_max``), so a closed loop of N clients sends
    about one frame per turn, not N. Its answer is split back to the callers;
    a failure of the request (timeout, lost connection) is every caller's, and
    each retries on its own (a commit is answered again from the shard's log).
    A node that does not take batches (``bad_request``: an older server, or a
    node whose router does not know them) gets the commits one by one, and
    this connection sends no batch again (``refused``)."""

    def __init__(self, connection: ClientConnection, items_max: int) -> None:
        self.connection = connection
        self.items_max = items_max
        self._queue: list[tuple[TxnCommit, float, asyncio.Future[Message]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = False

    def submit(self, commit: TxnCommit, timeout_s: float) -> asyncio.Future[Message]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._queue.append((commit, timeout_s, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        while self._queue:
            items, self._queue = self._queue[:self.items_max], self._queue[self.items_max:]
            task = asyncio.create_task(self._send(items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, items: list[tuple[TxnCommit, float, asyncio.Future[Message]]]) -> None:
        timeout_s = max(t for _, t, _ in items)
        try:
            if len(items) == 1:
                answers: list[Message] = [await self.connection.request(items[0][0], timeout_s)]
            else:
                reply = await self.connection.request(TxnBatch(items=tuple(c for c, _, _ in items)), timeout_s)
                if isinstance(reply, ErrorReply) and reply.code == "bad_request":
                    self.refused = True
                    answers = list(await asyncio.gather(
                        *(self.connection.request(commit, timeout_s) for commit, _, _ in items)))
                elif isinstance(reply, ErrorReply):
                    answers = [reply] * len(items)
                elif isinstance(reply, TxnBatchReply) and len(reply.items) == len(items):
                    answers = list(reply.items)
                else:
                    raise RemoteProtocolError(f"a batch of {len(items)} answered with {type(reply).__name__}")
        except BaseException as error:
            for _, _, future in items:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else ConnectionClosed("closed"))
            if not isinstance(error, Exception):
                raise
            return
        for (_, _, future), answer in zip(items, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class Transaction:
    """One interactive transaction (see ``TxnClient.transaction``)."""

    def __init__(self, client: TxnClient, txn: str, ts: int) -> None:
        self.client = client
        self.txn = txn
        self.ts = ts
        self.state = TxnState.ACTIVE
        self._reads: dict[str, list[str]] = {}
        self._ranges: dict[str, list[tuple[str, str]]] = {}
        self._writes: dict[str, str | None] = {}
        #: The ballots of the leaders that served the reads at each group: the
        #: commit carries them, and a shard accepts it only under that ballot (a
        #: read a deposed leader answered from its stale state cannot commit).
        self._read_ballots: dict[str, list[Ballot]] = {}

    def _served(self, group: str, ballot: Ballot | None) -> None:
        ballots = self._read_ballots.setdefault(group, [])
        if ballot is not None and ballot not in ballots:
            ballots.append(ballot)

    def _move(self, new: TxnState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise TxnStateError(f"transaction {self.txn} is {self.state.value}; cannot become {new.value}")
        self.state = new

    def _check_active(self) -> None:
        if self.state is not TxnState.ACTIVE:
            raise TxnStateError(f"transaction {self.txn} is {self.state.value}")

    async def get(self, key: str) -> str | None:
        self._check_active()
        if key in self._writes:
            return self._writes[key]
        group = self.client.shard_map.shard_for(key).group
        reply = await self._guarded(group, TxnGet(txn=self.txn, ts=self.ts, key=key))
        assert isinstance(reply, TxnValue)
        self._reads.setdefault(group, []).append(key)
        self._served(group, reply.ballot)
        return reply.value

    async def scan(self, start: str, end: str, limit: int = 1000) -> list[tuple[str, str]]:
        """Keys in ``[start, end)`` (``end`` "" = to the end), at most ``limit``,
        with this transaction's own writes applied."""
        self._check_active()
        rows: dict[str, str] = {}
        for shard in self.client.shard_map.shards_overlapping(start, end):
            low = max(start, shard.start)
            high = shard.end if not end or (shard.end and shard.end < end) else end
            reply = await self._guarded(shard.group, TxnScan(txn=self.txn, ts=self.ts, start=low or "\x00",
                                                             end=high, limit=limit))
            assert isinstance(reply, TxnRows)
            self._ranges.setdefault(shard.group, []).append((low or "\x00", high))
            self._served(shard.group, reply.ballot)
            rows.update(dict(reply.rows))
        for key, value in self._writes.items():
            if start <= key and (not end or key < end):
                if value is None:
                    rows.pop(key, None)
                else:
                    rows[key] = value
        return sorted(rows.items())[:limit]

    def put(self, key: str, value: str | None) -> None:
        self._check_active()
        self._writes[key] = value

    def delete(self, key: str) -> None:
        self.put(key, None)

    async def commit(self) -> None:
        self._move(TxnState.COMMITTING)
        shard_map = self.client.shard_map
        writes: dict[str, list[Write]] = {}
        for key, value in self._writes.items():
            writes.setdefault(shard_map.shard_for(key).group, []).append(Write(key=key, value=value))
        groups = list(writes) + [g for g in (*self._reads, *self._ranges) if g not in writes]
        groups = list(dict.fromkeys(groups))
        if not groups:
            self._move(TxnState.COMMITTED)
            return
        parts = tuple(Part(group=g, read_keys=tuple(dict.fromkeys(self._reads.get(g, []))),
                           read_ranges=tuple(self._ranges.get(g, [])), writes=tuple(writes.get(g, [])),
                           read_ballots=tuple(self._read_ballots.get(g, [])))
                      for g in groups)
        try:
            reply = await self.client.request(groups[0], TxnCommit(txn=self.txn, ts=self.ts, parts=parts))
        except TxnError as error:
            if not isinstance(error, UnavailableError):
                self.state = TxnState.ABORTED
            raise
        assert isinstance(reply, TxnOutcome)
        self._move(TxnState.COMMITTED if reply.committed else TxnState.ABORTED)

    async def abort(self) -> None:
        self._move(TxnState.ABORTED)
        for group in {*self._reads, *self._ranges}:
            # Best effort: the shard's idle timeout releases them anyway.
            with contextlib.suppress(TxnError):
                await self.client.request(group, TxnRelease(txn=self.txn))

    async def _guarded(self, group: str, body: Message) -> Message:
        try:
            return await self.client.request(group, body)
        except TxnError as error:
            if error.retryable:
                await self.abort()
            raise

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self.state is not TxnState.ACTIVE:
            return
        if error is not None:
            await self.abort()
            return
        await self.commit()


class SyncTxnClient:
    """The same client for code without an event loop: every call blocks."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._loop = new_event_loop()
        self.client = TxnClient(*args, **kwargs)  # type: ignore[arg-type]

    def _call(self, awaitable: Awaitable[T]) -> T:
        return self._loop.run_until_complete(awaitable)

    def get(self, key: str) -> str | None:
        return self._call(self.client.get(key))

    def put(self, key: str, value: str | None) -> None:
        self._call(self.client.put(key, value))

    def delete(self, key: str) -> None:
        self._call(self.client.delete(key))

    def scan(self, start: str, end: str, limit: int = 1000) -> list[tuple[str, str]]:
        return self._call(self.client.scan(start, end, limit))

    def run(self, body: Callable[[Transaction], Awaitable[T]], *, attempts_max: int = 10) -> T:
        return self._call(self.client.run(body, attempts_max=attempts_max))

    def close(self) -> None:
        self._call(self.client.close())
        self._loop.close()
