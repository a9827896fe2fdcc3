"""``AsyncioHost``: runs one protocol core on real sockets, timers and files.

Theory of operation
-------------------
The host is the runtime's implementation of ``synod.core.effects.Host``. It owns
a core and feeds it three kinds of input, always on the event loop thread, one at
a time: messages from authenticated connections, timers firing, and (at start)
the records its write-ahead log recovered. It carries out the effects each
handler returns, in list order, exactly as ``effects.py`` specifies:

``Send``
    to the ``PeerLink`` of that node (bounded queue; refused and counted when
    full), or straight back into the core, via the loop, when sent to itself.
``SetTimer`` / ``CancelTimer``
    ``loop.call_at`` at ``now + delay``. One handle per key; re-arming cancels the
    old handle, and a generation number per key makes sure a cancelled or
    replaced instance can never fire even if its callback was already queued.
``Persist``
    GROUP COMMIT, with ``synod.storage.GroupCommit`` (the same sans-IO helper
    the simulator uses). The Persist joins its FIFO with its ``then`` effects as
    token. When no fsync is in flight, the waiting Persists form a batch: their
    records are appended to the log on the loop thread and one ``sync`` (write +
    fsync) runs in a worker thread, so the loop keeps serving; when it returns,
    the batch's ``then`` effects run, oldest first. Persists arriving during that
    fsync wait for the next one, which starts at once: many Persists, one fsync,
    at most one in flight. A Persist with no records waits its turn too. Past
    half of ``group_commit_pending_bytes_max`` waiting, inbound connections stop
    being read until the fsyncs catch up.
``SaveSnapshot``
    joins the same FIFO (behind the Persists returned before it) with the log
    position of the first record after them. When its batch's fsync returns, the
    ``SnapshottingLog`` (``open_durable_store``) writes the snapshot file
    atomically in the worker thread, truncates the log below that position and
    deletes older snapshots; then its ``then`` effects run. A host given a plain
    ``WriteAheadLog`` (``open_durable_log``) drops the snapshot and truncates
    nothing, so the core recovers from all its records (``snapshots_dropped``).
``ClientResult``
    a ``ClientReply`` on the TCP connection the ``ClientRequest`` came from. Each
    client connection is given its own client id, ``"<principal>#<n>"``, which
    the core sees as the message source (``principal_of`` recovers the
    authenticated principal, for ACLs). A result for a node id goes to that node
    as a ``ClientReply`` message, which is what the simulator does too.

Node connections deliver their messages with the peer's authenticated node id as
the source. A client connection may only send ``ClientRequest``; anything else
closes it (``frames_unexpected_message``). An exception from the core is a bug: it
is logged, the node stops, and ``wait_stopped`` re-raises it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, assert_never

from synod.codec.kernel import ClientReply, ClientRequest
from synod.codec.registry import Message
from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Core,
    CoreFactory,
    Effect,
    Persist,
    Recovered,
    SaveSnapshot,
    Send,
    SetTimer,
    frame_chunks,
)
from synod.core.errors import LocalProtocolError, invariant
from synod.core.ids import NodeId, node_id
from synod.runtime.auth import (
    MODE_HMAC,
    MODE_INSECURE,
    MODE_TLS,
    AcceptorHandshake,
    AuthAccepted,
    AuthChallenge,
    AuthHello,
    AuthProof,
    InitiatorHandshake,
    Keyring,
    Mode,
    ReplayCache,
    client_tls_context,
    server_tls_context,
)
from synod.runtime.config import RuntimeConfig
from synod.runtime.stats import Counters, RuntimeStatistics
from synod.runtime.transport import Connection, Listener, MessageHandler, PeerLink
from synod.storage.group_commit import GroupCommit, GroupCommitConfig
from synod.storage.realfs import RealFileSystem
from synod.storage.snapshot import SnapshotStore
from synod.storage.snapshot_log import SNAPSHOT_DIRECTORY, PendingSnapshot, recover_snapshot
from synod.storage.wal import WalConfig, WriteAheadLog

log = logging.getLogger("synod.runtime.host")

T = TypeVar("T")

CLIENT_ID_SEPARATOR = "#"
#: A batch larger than this (bytes) always syncs in the worker thread: writing it
#: costs more than the thread hand-off saves.
_INLINE_SYNC_BYTES_MAX = 64 * 1024
_HANDSHAKE_MESSAGES = (AuthHello, AuthChallenge, AuthProof, AuthAccepted)


class DurableLog(Protocol):
    """What the host needs of a write-ahead log.

    ``synod.storage.wal.WriteAheadLog`` is one. ``append`` buffers a record;
    ``sync`` makes every appended record durable (group commit: one fsync). The
    host never calls them at the same time: ``append`` runs on the loop thread
    while no ``sync`` is in flight, ``sync`` in a worker thread.
    """

    def append(self, record: bytes) -> int: ...

    def sync(self) -> int: ...

    def close(self) -> None: ...




Token = tuple[Effect, ...] | PendingSnapshot


class SnapshottingLog:
    """A write-ahead log with a snapshot store beside it: the ``DurableLog`` that
    also carries out ``SaveSnapshot`` (see ``open_durable_store``)."""

    def __init__(self, wal: WriteAheadLog, store: SnapshotStore) -> None:
        self.wal = wal
        self.store = store
        self.snapshots_saved = 0

    @property
    def first_index(self) -> int:
        return self.wal.first_index

    @property
    def last_index(self) -> int:
        return self.wal.last_index

    def append(self, record: bytes) -> int:
        return self.wal.append(record)

    def sync(self) -> int:
        return self.wal.sync()

    def close(self) -> None:
        self.wal.close()

    def save_snapshot(self, pending: PendingSnapshot) -> int:
        """Write the snapshot (every record below its position is durable), then
        truncate the log; returns the log's new first index."""
        self.store.write(pending.position, frame_chunks(pending.effect.chunks))
        first = self.wal.truncate_prefix(pending.position)
        self.store.retain()
        self.snapshots_saved += 1
        return first


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a new (uvloop) event loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coroutine)


def principal_of(source: NodeId) -> str:
    """The authenticated principal behind a message source (a node id, or a
    client id ``"<principal>#<n>"``)."""
    return source.partition(CLIENT_ID_SEPARATOR)[0]


class AsyncioHost:
    """Hosts one core on one node: listener, peer links, timers, group commit."""

    def __init__(
        self,
        *,
        node: NodeId,
        core_factory: CoreFactory,
        config: RuntimeConfig,
        keyring: Keyring,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        durable_log: DurableLog | None = None,
        recovered: Recovered | None = None,
        seed: int | None = None,
    ) -> None:
        self._node = node
        self.config = config
        self.keyring = keyring
        self.listen_address = listen
        self.durable_log = durable_log
        self.recovered = recovered or Recovered()
        self.seed = seed if seed is not None else secrets.randbits(64)
        self.counters: Counters[RuntimeStatistics] = Counters(RuntimeStatistics)
        self.core: Core = core_factory(node, self.rng("core"))
        self.address: tuple[str, int] | None = None
        self.failure: BaseException | None = None
        self._mode: Mode = MODE_INSECURE if config.insecure else MODE_TLS if config.tls_enabled else MODE_HMAC
        self._replay_cache = ReplayCache(config.replay_cache_max)
        self._peers: dict[str, tuple[str, int]] = dict(config.peers)
        self._links: dict[NodeId, PeerLink] = {}
        self._clients: dict[NodeId, Connection] = {}
        self._client_sequence = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._timer_generation: dict[str, int] = {}
        #: Log index the next submitted record gets (where a SaveSnapshot starts).
        self._next_position = (durable_log.last_index + 1
                               if isinstance(durable_log, SnapshottingLog) else 1)
        self._commit: GroupCommit[Token] = GroupCommit(
            GroupCommitConfig(
                pending_bytes_max=config.group_commit_pending_bytes_max,
                batch_bytes_max=config.group_commit_batch_bytes_max,
            )
        )
        self._sync_task: asyncio.Task[None] | None = None
        #: Moving average of recent syncs' durations (ms); see ``fsync_inline_ms_max``.
        #: Starts pessimistic so the first syncs go to the thread and are measured.
        self._sync_ms_average = 10.0
        self.snapshots_dropped = 0
        self._fsync_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._read_open = asyncio.Event()
        self._read_open.set()
        self._stopped = asyncio.Event()
        self._listener: Listener | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ Host interface

    @property
    def node(self) -> NodeId:
        return self._node

    def now_ms(self) -> float:
        return time.monotonic() * 1000.0

    def rng(self, name: str) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}/{self._node}/{name}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def execute(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send():
                    self._send(effect)
                case SetTimer():
                    self._set_timer(effect.key, effect.delay_ms)
                case CancelTimer():
                    self._cancel_timer(effect.key)
                case Persist():
                    self._persist(effect)
                case SaveSnapshot():
                    self._save_snapshot(effect)
                case ClientResult():
                    self._client_result(effect)
                case _:
                    assert_never(effect)

    # ------------------------------------------------------------ life cycle

    async def start(self) -> tuple[str, int]:
        """Listen, start the core with what the log recovered; returns the address."""
        self._loop = asyncio.get_running_loop()
        if self.config.insecure:
            log.warning("node %s runs INSECURE: peers are not authenticated (development only)", self._node)
        server_ssl = None
        if self.config.tls_enabled:
            server_ssl = server_tls_context(
                str(self.config.tls_cert_file), str(self.config.tls_key_file), str(self.config.tls_ca_file)
            )
        self._listener = Listener(
            config=self.config,
            counters=self.counters,
            make_handshake=self._acceptor_handshake,
            ssl_context=server_ssl,
            on_connection=self._on_connection,
            on_closed=self._on_closed,
            read_gate=self._read_open,
        )
        self.address = await self._listener.start(*self.listen_address)
        if self.durable_log is not None:
            self._fsync_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"fsync-{self._node}"
            )
        self._step(lambda now: self.core.start(now, self.recovered))
        log.info("node %s listening on %s:%d", self._node, *self.address)
        return self.address

    async def stop(self) -> None:
        """Stop serving: timers, connections, links; wait for the fsync in flight."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._listener is not None:
            await self._listener.stop()
        for link in list(self._links.values()):
            await link.stop()
        self._links.clear()
        if self._sync_task is not None and self.failure is None:
            try:
                await asyncio.wait_for(asyncio.shield(self._sync_task), 30.0)
            except (TimeoutError, Exception) as error:
                log.warning("node %s: fsync at stop did not finish: %r", self._node, error)
        if self._fsync_executor is not None:
            self._fsync_executor.shutdown(wait=True)
            self._fsync_executor = None
        if self.durable_log is not None:
            self.durable_log.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        """Wait until the node stops; re-raise the core's failure if that was why."""
        await self._stopped.wait()
        if self.failure is not None:
            raise self.failure

    def statistics(self) -> RuntimeStatistics:
        return self.counters.snapshot()

    def peers(self) -> dict[str, tuple[str, int]]:
        """The TCP address of every other node this host knows."""
        return dict(self._peers)

    async def set_peer(self, peer: str, address: tuple[str, int] | None) -> None:
        """Learn (or, with None, forget) the address of node ``peer``, for example
        from gossip membership or when a local cluster has bound its ports. A
        changed address drops the old link; the next ``Send`` dials the new one."""
        if address is None:
            self._peers.pop(peer, None)
        else:
            self._peers[peer] = (address[0], address[1])
        link = self._links.get(NodeId(peer))
        if link is not None and link.address != address:
            del self._links[NodeId(peer)]
            await link.stop()

    def client_ids(self) -> list[NodeId]:
        """Client ids of the client connections open now."""
        return list(self._clients)

    # ------------------------------------------------------------ core steps

    def _step(self, handler: Callable[[float], list[Effect]]) -> None:
        if self.failure is not None:
            return
        try:
            effects = handler(self.now_ms())
            self.execute(effects)
        except Exception as error:  # a bug in the core: stop the node, loudly
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = error
        log.critical("node %s: core failed, stopping: %r", self._node, error, exc_info=error)
        self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    # ------------------------------------------------------------ connections

    def _acceptor_handshake(self, tls_peer: str | None) -> AcceptorHandshake:
        return AcceptorHandshake(
            mode=self._mode,
            principal=self._node,
            keyring=self.keyring,
            replay_cache=self._replay_cache,
            tls_peer_principal=tls_peer,
            tls_node_names=frozenset(self._peers),
        )

    def _initiator_handshake(self, peer: NodeId) -> InitiatorHandshake:
        return InitiatorHandshake(
            mode=self._mode,
            kind="node",
            principal=self._node,
            key=self.keyring.primary if self._mode == MODE_HMAC else None,
            expected_acceptor=peer,
        )

    def _on_connection(self, connection: Connection) -> MessageHandler:
        if connection.peer.kind == "node":
            return self._on_node_message
        self._client_sequence += 1
        client = NodeId(f"{connection.peer.principal}{CLIENT_ID_SEPARATOR}{self._client_sequence}")
        self._clients[client] = connection
        connection.client_id = client

        def on_client_message(conn: Connection, msg: Message) -> None:
            if not isinstance(msg, ClientRequest):
                conn.refuse("frames_unexpected_message", f"client sent {type(msg).__name__}")
                return
            self._step(lambda now: self.core.on_message(now, client, msg))

        return on_client_message

    def _on_closed(self, connection: Connection) -> None:
        client = connection.client_id
        if client is not None and self._clients.get(NodeId(client)) is connection:
            del self._clients[NodeId(client)]

    def _on_node_message(self, connection: Connection, msg: Message) -> None:
        if isinstance(msg, _HANDSHAKE_MESSAGES):
            connection.refuse("frames_unexpected_message", f"{type(msg).__name__} after handshake")
            return
        source = NodeId(connection.peer.principal)
        self._step(lambda now: self.core.on_message(now, source, msg))

    # ------------------------------------------------------------ effects

    def _link(self, peer: NodeId) -> PeerLink | None:
        link = self._links.get(peer)
        if link is None:
            address = self._peers.get(peer)
            if address is None:
                return None
            client_ssl = None
            if self.config.tls_enabled:
                client_ssl = client_tls_context(
                    str(self.config.tls_cert_file), str(self.config.tls_key_file), str(self.config.tls_ca_file)
                )
            link = PeerLink(
                peer=peer,
                address=address,
                make_handshake=lambda: self._initiator_handshake(peer),
                config=self.config,
                counters=self.counters,
                ssl_context=client_ssl,
                handler=self._on_node_message,
                rng=self.rng(f"backoff/{peer}"),
            )
            self._links[peer] = link
        return link

    def _send(self, effect: Send) -> None:
        if effect.to == self._node:
            message = effect.message
            self._call_soon(lambda: self._step(lambda now: self.core.on_message(now, self._node, message)))
            return
        link = self._link(effect.to)
        if link is None:
            self.counters.add("send_to_unknown_peer")
            log.debug("node %s: no address for peer %s; message dropped", self._node, effect.to)
            return
        link.offer(effect.message)

    def _call_soon(self, callback: Callable[[], None]) -> None:
        assert self._loop is not None
        self._loop.call_soon(callback)

    def _set_timer(self, key: str, delay_ms: float) -> None:
        invariant(delay_ms >= 0, f"timer {key!r} with negative delay {delay_ms}")
        self._cancel_timer(key)
        generation = self._timer_generation.get(key, 0) + 1
        self._timer_generation[key] = generation
        assert self._loop is not None
        when = self._loop.time() + delay_ms / 1000.0
        self._timers[key] = self._loop.call_at(when, self._fire_timer, key, generation)

    def _cancel_timer(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()
            self._timer_generation[key] = self._timer_generation.get(key, 0) + 1

    def _fire_timer(self, key: str, generation: int) -> None:
        if self._timer_generation.get(key) != generation:
            return  # cancelled or re-armed after this instance was queued
        del self._timers[key]
        self.counters.add("timers_fired")
        self._step(lambda now: self.core.on_timer(now, key))

    def _client_result(self, effect: ClientResult) -> None:
        self.counters.add("client_results")
        reply = ClientReply(request_id=effect.request_id, body=effect.result)
        connection = self._clients.get(effect.client)
        if connection is not None:
            if not connection.offer(reply) and connection.closed:
                self.counters.add("reply_to_gone_client")
            return
        if CLIENT_ID_SEPARATOR not in effect.client and effect.client in self._peers:
            self._send(Send(to=effect.client, message=reply))
            return
        self.counters.add("reply_to_gone_client")

    # ------------------------------------------------------------ group commit

    def _persist(self, effect: Persist) -> None:
        self.counters.add("persists")
        if self.durable_log is None:
            raise LocalProtocolError(f"node {self._node}: core persisted but the host has no log")
        # StorageFull here means the read gate below did not hold the load back:
        # the Persist cannot be dropped (the core moved on), so the node stops.
        self._commit.submit(effect.records, effect.then)
        self._next_position += len(effect.records)
        over_half = self._commit.pending_bytes > self.config.group_commit_pending_bytes_max // 2
        if over_half and self._read_open.is_set():
            self.counters.add("reads_paused")
            self._read_open.clear()
        if self._sync_task is None:
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop())

    def _save_snapshot(self, effect: SaveSnapshot) -> None:
        self.counters.add("persists")
        if self.durable_log is None:
            raise LocalProtocolError(f"node {self._node}: core saved a snapshot but the host has no log")
        if isinstance(self.durable_log, SnapshottingLog):
            self._commit.submit((), PendingSnapshot(self._next_position, effect))
        else:
            # A plain log cannot store snapshots: drop it and keep every record
            # (nothing is truncated, so the records still hold the whole state).
            self.snapshots_dropped += 1
            self._commit.submit((), effect.then)
        if self._sync_task is None:
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop())

    def _timed_sync(self) -> float:
        """``durable_log.sync()``; returns how long it took (ms), hand-off excluded."""
        assert self.durable_log is not None
        started = time.perf_counter()
        self.durable_log.sync()
        return (time.perf_counter() - started) * 1000.0

    async def _sync_loop(self) -> None:
        """Run fsyncs, one at a time, until every Persist is durable.

        The log is touched by one thread at a time: records are appended here on
        the loop thread while no fsync runs; ``sync`` (write + fsync) runs in the
        worker thread while Persists arriving meanwhile wait in the queue.
        """
        assert self.durable_log is not None and self._fsync_executor is not None
        loop = asyncio.get_running_loop()
        try:
            while self.failure is None:
                batch = self._commit.next_batch()
                if batch is None:
                    break
                batch_bytes = 0
                for record in batch.records:
                    self.durable_log.append(record)
                    batch_bytes += len(record)
                if (batch_bytes <= _INLINE_SYNC_BYTES_MAX
                        and self._sync_ms_average <= self.config.fsync_inline_ms_max):
                    # Let the sends queued in the same step go out first: a
                    # leader's Accepts must not wait for its own fsync.
                    await asyncio.sleep(0)
                    elapsed_ms = self._timed_sync()
                    self.counters.add("fsyncs_inline")
                else:
                    elapsed_ms = await loop.run_in_executor(self._fsync_executor, self._timed_sync)
                self._sync_ms_average += (elapsed_ms - self._sync_ms_average) / 8
                self.counters.add("fsyncs")
                self.counters.add("records_persisted", len(batch.records))
                for token in self._commit.batch_durable(batch):
                    if isinstance(token, PendingSnapshot):
                        assert isinstance(self.durable_log, SnapshottingLog)
                        await loop.run_in_executor(self._fsync_executor, self.durable_log.save_snapshot,
                                                   token)
                        token = token.effect.then
                    if self.failure is None:
                        self.execute(token)
                if self._commit.pending_bytes <= self.config.group_commit_pending_bytes_max // 2:
                    self._read_open.set()
        except Exception as error:
            # A failed fsync leaves the log's state unknown (fsyncgate): stop
            # rather than answer; a restart recovers from what is durable.
            self._fail(error)
        finally:
            self._sync_task = None


def open_durable_log(data_dir: Path, directory: str = "wal") -> tuple[WriteAheadLog, Recovered]:
    """Open (or create) the node's write-ahead log under ``data_dir`` on real files
    and return it with what it recovered (with the snapshot saved beside it, if
    any). A host given this log cannot save snapshots: use ``open_durable_store``
    for a core that returns ``SaveSnapshot``."""
    log, recovered = open_durable_store(data_dir, directory)
    return log.wal, recovered


def open_durable_store(data_dir: Path, directory: str = "wal", *,
                       wal_config: WalConfig | None = None) -> tuple[SnapshottingLog, Recovered]:
    """Open (or create) the node's write-ahead log and snapshot store under
    ``data_dir`` on real files; return them with what they recovered: the newest
    usable snapshot and the records after it (``StorageCorruption`` if records a
    snapshot covered are gone and no snapshot covering them is readable)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fs = RealFileSystem(data_dir)
    wal, found_records = WriteAheadLog.open(fs, directory, wal_config)
    records = tuple(found_records)
    log = SnapshottingLog(wal, SnapshotStore(fs, SNAPSHOT_DIRECTORY))
    found = recover_snapshot(log.store, wal.first_index, wal.last_index)
    if found is None:
        return log, Recovered(records=records)
    position, chunks = found
    return log, Recovered(records=records[position - wal.first_index:], snapshot=chunks)


async def start_local_cluster(
    nodes: Sequence[str],
    core_factory: CoreFactory,
    *,
    keyring: Keyring,
    config: RuntimeConfig | None = None,
    data_root: Path | None = None,
    host: str = "127.0.0.1",
) -> list[AsyncioHost]:
    """Start one ``AsyncioHost`` per node in this process, each on a free port of
    ``host``, and tell each the others' addresses (for demos and tests; a real
    deployment runs one ``serve`` process per node). With ``data_root`` each node
    keeps its write-ahead log in ``data_root/<node>``. Stop them with ``stop()``."""
    hosts: list[AsyncioHost] = []
    try:
        for name in nodes:
            durable_log, recovered = (None, None)
            if data_root is not None:
                durable_log, recovered = open_durable_log(data_root / name)
            node_host = AsyncioHost(
                node=node_id(name),
                core_factory=core_factory,
                config=config or RuntimeConfig.local(),
                keyring=keyring,
                listen=(host, 0),
                durable_log=durable_log,
                recovered=recovered,
            )
            hosts.append(node_host)
            await node_host.start()
        for node_host in hosts:
            for other in hosts:
                if other is not node_host:
                    assert other.address is not None
                    await node_host.set_peer(other.node, other.address)
    except BaseException:
        for node_host in hosts:
            await node_host.stop()
        raise
    return hosts
