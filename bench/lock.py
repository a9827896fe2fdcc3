"""Benchmark of the lock service (issue 5, item 11) against ZooKeeper 3.8 and etcd 3.4.

    uv run --with kazoo --with grpcio python -m bench.lock                # ~6 minutes
    uv run --with kazoo --with grpcio python -m bench.lock --seconds 2 --skip-sessions

Three systems, each 3 servers on 127.0.0.1, all started at the beginning of the
run and stopped by PID: a synod lock cell (``synod cluster up --core
synod.lock.server:lock_lan_factory``, the LAN preset: Chubby's 12 s lease, as the
ZooKeeper sessions here have 30 s and the etcd lock lease 60 s; ``--preset local``
for the 1.5 s test preset; WAL with fsync), a ZooKeeper ensemble (Debian
``zookeeper``, kazoo client), an etcd cluster (``bench/refs.py``, the gRPC client
of ``bench/etcd_client.py``). One load generator (``bench/loadgen.py``) drives
all of them with the same shapes, each shape on the three systems back to back
(so they meet the same load from the rest of the machine):

* ``write``: durable writes of 100-byte files over 100 keys (synod ``write``,
  ZooKeeper ``setData``, etcd ``put``);
* ``read``: uncached linearizable reads (synod ``read(cache=False)``, ZooKeeper
  ``getData`` (served by the connected server), etcd linearizable ``range``);
* ``mix``: 90 % reads / 10 % writes over 100 files from 128 sessions (64 per load
  process). synod reads go through its client cache (a file is cached from its
  second read, ``LockConfig.cache_admission_reads``); every write waits for the
  caches holding the file to be invalidated. Stale reads are counted as errors:
  each worker remembers, per file, the newest value whose write it saw
  complete, and a read that returns an older one is stale;
* ``mix-local``: the same 90/10 mix and sessions, with locality, the way Chubby
  and ZooKeeper caches are used (Burrows 2.5 and 4: a client re-reads the few
  files it works with -- its configuration, its lock files, the names it
  resolves -- far more often than anyone writes them). Each session owns a
  working set of ``WORKING_SET`` files; 10 % of its operations write one of them,
  and of its reads 90 % are of its own files and 10 % of a random other
  session's file (in the same load process), so writes still meet other
  sessions' cached copies and wait for their invalidation (the write p99 shows
  that cost). ZooKeeper runs exactly the same shape with ``getData``/``setData``.
  The uniform ``mix`` is the worst case for a cache; both are printed, with the
  share of reads the cache answered (hits / reads);
* ``lock``: acquire + release pairs (synod ``try_acquire``/``release``; etcd's
  ``Lock``/``Unlock`` API with a lease);
* ``sessions``: idle sessions one cell holds with KeepAlives (``--sessions``
  session cores multiplexed over one connection per node from one process,
  opened with ``OpenSessions`` commands of 1,024 sessions and their KeepAlives
  carried in ``KeepAliveBatch`` requests; how many are still SAFE
  after a hold of three leases), on the cell of the load shapes and, when that
  is the LAN preset, also on the local-preset cell (1.5 s lease);
* ``failover``: SIGKILL of the synod master, time until a client's write in its
  old session succeeds (on a second cell with the local preset, whose Paxos
  timeouts are the ones ``bench/paxos.py`` measures failover with).

Figures are printed with ratios; ``bench/RESULTS.md`` keeps the latest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.loadgen import LoadResult, run_load

LOAD_PROCESSES = 2
KEYS = 100
VALUE_BYTES = 100
MIX_SESSIONS_PER_PROCESS = 64
#: Files each session of the ``mix-local`` shape owns and mostly re-reads.
WORKING_SET = 4
#: Share of ``mix-local`` reads that go to another session's file.
FOREIGN_READS = 0.1
ROOT = "/ls/local/bench"


# ---------------------------------------------------------------- synod driver


class StaleReadError(RuntimeError):
    """A read returned a value that a completed write had already replaced."""


class _WriteHistory:
    """One worker's own writes per key, to find stale reads soundly: a read is
    stale if it returns the value of one of our writes W while another of our
    writes to that key started after W completed and completed before the read
    began (so W was certainly overwritten before the read)."""

    def __init__(self) -> None:
        self.writes: dict[str, list[tuple[int, float, float]]] = {}

    def note_write(self, key: str, stamp: int, started: float, ended: float) -> None:
        rows = self.writes.setdefault(key, [])
        rows.append((stamp, started, ended))
        del rows[:-64]

    def check_read(self, key: str, stamp: int, started: float) -> None:
        # Rows are in completion order, and a write that started after W
        # completed also completed after it: only rows after W's can show it
        # stale. Searched from the newest (the value read is usually recent).
        rows = self.writes.get(key, [])
        for index in range(len(rows) - 1, -1, -1):
            if rows[index][0] == stamp:
                ended = rows[index][2]
                if any(other[1] > ended and other[2] < started for other in rows[index + 1:]):
                    raise StaleReadError(f"stale read of key {key}")
                return


def mix_choice(rng: random.Random, ops: int, sessions: int, kind: str) -> tuple[int, str, bool]:
    """One operation of the mix shapes: (session, file name, is a write). The
    session rotates over all of them (the generator's ``i`` takes only a few
    values modulo the session count). ``mix``: uniform over ``KEYS`` files.
    ``mix-local``: writes go to the session's own working set; reads are of its
    own files, or with ``FOREIGN_READS`` of another session's."""
    session = ops % sessions
    write = rng.random() < 0.1
    if kind == "mix":
        return session, f"k{rng.randrange(KEYS)}", write
    owner = session
    if not write and sessions > 1 and rng.random() < FOREIGN_READS:
        owner = (session + 1 + rng.randrange(sessions - 1)) % sessions
    return session, f"w{owner}-{rng.randrange(WORKING_SET)}", write


def mix_files(kind: str, index: int, sessions: int) -> list[str]:
    """The file names a load process's mix shape uses (``index``: the process)."""
    if kind == "mix-local":
        return [f"p{index}-w{s}-{j}" for s in range(sessions) for j in range(WORKING_SET)]
    return [f"k{i}" for i in range(KEYS)]


class SynodLockDriver:
    """``kind``: write, read, mix, lock (see the module comment)."""

    def __init__(self, index: int, *, nodes: dict[str, list[Any]], principal: str, key_hex: str | None,
                 insecure: bool = False, kind: str = "write", sessions: int = 1, preset: str = "local",
                 batch_calls: bool = True) -> None:
        self.index = index
        self.nodes = {name: (str(a[0]), int(a[1])) for name, a in nodes.items()}
        self.principal = principal
        self.key = bytes.fromhex(key_hex) if key_hex else None
        self.insecure = insecure
        self.kind = kind
        self.session_count = sessions
        self.preset = preset
        self.batch_calls = batch_calls
        self.clients: list[Any] = []
        self.rng = random.Random(index)
        self.history = _WriteHistory()
        self.counter = 0
        self.ops = 0
        self.failures: dict[str, int] = {}
        self.write_ms: list[float] = []

    async def setup(self) -> None:
        from synod.lock.client import LockClient
        from synod.lock.config import LockConfig
        from synod.runtime.config import RuntimeConfig

        config = LockConfig.lan() if self.preset == "lan" else LockConfig.local()

        async def one() -> Any:
            client = LockClient(self.nodes, principal=self.principal, key=self.key, config=config,
                                runtime=RuntimeConfig(insecure=self.insecure), call_timeout_s=30.0,
                                batch_calls=self.batch_calls)
            await client.open()
            return client

        self.clients = list(await asyncio.gather(*(one() for _ in range(self.session_count))))
        first = self.clients[0]
        await first.ensure(ROOT, directory=True)
        if self.kind == "lock":
            await first.ensure(f"{ROOT}/locks-{self.index}", directory=True)
            await asyncio.gather(*(first.ensure(f"{ROOT}/locks-{self.index}/l{i}") for i in range(KEYS)))
        else:
            await asyncio.gather(*(first.ensure(f"{ROOT}/{name}")
                                   for name in mix_files(self.kind, self.index, len(self.clients))))

    def _value(self) -> tuple[int, bytes]:
        self.counter += 1
        stamp = time.time_ns() * 16 + self.index
        return stamp, str(stamp).encode().ljust(VALUE_BYTES, b".")

    async def op(self, i: int) -> None:
        try:
            await self._op(i)
        except Exception as error:
            name = f"{type(error).__name__}: {str(error)[:60]}"
            self.failures[name] = self.failures.get(name, 0) + 1
            raise

    async def _op(self, i: int) -> None:
        # The generator's i is the same modulo 100 within one worker: draw our own key.
        self.ops += 1
        key = self.ops % KEYS
        path = f"{ROOT}/k{key}"
        if self.kind == "write":
            await self.clients[0].write(path, self._value()[1])
        elif self.kind == "read":
            await self.clients[0].read(path, cache=False)
        elif self.kind in ("mix", "mix-local"):
            session, name, write = mix_choice(self.rng, self.ops, len(self.clients), self.kind)
            if self.kind == "mix-local":
                name = f"p{self.index}-{name}"
            client = self.clients[session]
            path = f"{ROOT}/{name}"
            if write:
                stamp, value = self._value()
                started = time.monotonic()
                await client.write(path, value)
                self.history.note_write(name, stamp, started, time.monotonic())
                self.write_ms.append((time.monotonic() - started) * 1000.0)
            else:
                started = time.monotonic()
                data = await client.read(path, cache=True)
                self.history.check_read(name, int(data.contents.split(b".")[0] or b"0"), started)
        elif self.kind == "lock":
            lock = f"{ROOT}/locks-{self.index}/l{key}"
            await self.clients[0].try_acquire(lock)
            await self.clients[0].release(lock)
        else:
            raise ValueError(self.kind)

    async def close(self) -> None:
        hits = sum(c.session.statistics().cache_hits for c in self.clients)
        misses = sum(c.session.statistics().cache_misses for c in self.clients)
        if self.kind in ("mix", "mix-local"):
            ordered = sorted(self.write_ms) or [float("nan")]
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            share = hits / (hits + misses) if hits + misses else 0.0
            print(f"    [synod worker {self.index} {self.kind}] cache hits {hits} of {hits + misses} reads "
                  f"({share:.1%} of the read load removed); writes (each waits for invalidations) "
                  f"p50 {ordered[len(ordered) // 2]:.1f} ms p99 {p99:.1f} ms", flush=True)
        if self.failures:
            print(f"    [synod worker {self.index}] failures {self.failures}", flush=True)
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


def synod_lock_driver(index: int, **options: Any) -> SynodLockDriver:
    return SynodLockDriver(index, **options)


# ---------------------------------------------------------------- ZooKeeper


class ZooKeeperDriver:
    """kazoo, with its async calls bridged to asyncio. Same shapes as synod's."""

    def __init__(self, index: int, *, hosts: str, kind: str = "write", sessions: int = 1) -> None:
        self.index = index
        self.hosts = hosts
        self.kind = kind
        self.session_count = sessions
        self.clients: list[Any] = []
        self.rng = random.Random(index)
        self.history = _WriteHistory()
        self.ops = 0
        self.failures: dict[str, int] = {}

    async def setup(self) -> None:
        from kazoo.client import KazooClient

        loop = asyncio.get_running_loop()

        def start() -> Any:
            client = KazooClient(hosts=self.hosts, timeout=30.0)
            client.start(timeout=30)
            return client

        self.clients = [await loop.run_in_executor(None, start) for _ in range(self.session_count)]
        first = self.clients[0]
        await loop.run_in_executor(None, first.ensure_path, "/bench")
        for name in mix_files(self.kind, self.index, len(self.clients)):
            if not await loop.run_in_executor(None, first.exists, f"/bench/{name}"):
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(None, first.create, f"/bench/{name}", b"0")
        self.write_ms: list[float] = []

    async def _call(self, method: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(result: Any) -> None:
            def settle() -> None:
                if future.done():
                    return
                try:
                    future.set_result(result.get_nowait())
                except Exception as error:
                    future.set_exception(error)
            loop.call_soon_threadsafe(settle)

        method(*args).rawlink(done)
        return await future

    async def op(self, i: int) -> None:
        try:
            await self._op(i)
        except Exception as error:
            name = f"{type(error).__name__}: {str(error)[:60]}"
            self.failures[name] = self.failures.get(name, 0) + 1
            raise

    async def _op(self, i: int) -> None:
        self.ops += 1
        key = self.ops % KEYS
        if self.kind == "write":
            stamp = time.time_ns() * 16 + self.index
            await self._call(self.clients[0].set_async, f"/bench/k{key}", str(stamp).encode().ljust(VALUE_BYTES, b"."))
        elif self.kind == "read":
            await self._call(self.clients[0].get_async, f"/bench/k{key}")
        elif self.kind in ("mix", "mix-local"):
            session, name, write = mix_choice(self.rng, self.ops, len(self.clients), self.kind)
            if self.kind == "mix-local":
                name = f"p{self.index}-{name}"
            client = self.clients[session]
            if write:
                stamp = time.time_ns() * 16 + self.index
                started = time.monotonic()
                await self._call(client.set_async, f"/bench/{name}", str(stamp).encode().ljust(VALUE_BYTES, b"."))
                self.history.note_write(name, stamp, started, time.monotonic())
                self.write_ms.append((time.monotonic() - started) * 1000.0)
            else:
                started = time.monotonic()
                data, _stat = await self._call(client.get_async, f"/bench/{name}")
                self.history.check_read(name, int(data.split(b".")[0] or b"0"), started)
        else:
            raise ValueError(self.kind)

    async def close(self) -> None:
        if self.kind in ("mix", "mix-local"):
            ordered = sorted(self.write_ms) or [float("nan")]
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            print(f"    [zookeeper worker {self.index} {self.kind}] writes p50 {ordered[len(ordered) // 2]:.1f} ms "
                  f"p99 {p99:.1f} ms", flush=True)
        if self.failures:
            print(f"    [zookeeper worker {self.index}] failures {self.failures}", flush=True)
        loop = asyncio.get_running_loop()
        for client in self.clients:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, client.stop)
                await loop.run_in_executor(None, client.close)


def zookeeper_driver(index: int, **options: Any) -> ZooKeeperDriver:
    return ZooKeeperDriver(index, **options)


class EtcdLockDriver:
    """etcd's Lock/Unlock API, the same shape as synod's ``lock``: uncontended
    acquire + release pairs over ``KEYS`` lock names per worker, with a lease."""

    def __init__(self, index: int, *, endpoints: list[str]) -> None:
        self.index = index
        self.endpoint = endpoints[0]
        self.client: Any = None
        self.lease = 0
        self.ops = 0

    async def setup(self) -> None:
        from bench.etcd_client import EtcdClient

        self.client = EtcdClient(self.endpoint)
        self.lease = await self.client.lease_grant(60)

    async def op(self, i: int) -> None:
        self.ops += 1
        held = await self.client.lock(b"bench-lock-%d-%d" % (self.index, self.ops % KEYS), self.lease)
        await self.client.unlock(held)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def etcd_lock_driver(index: int, **options: Any) -> EtcdLockDriver:
    return EtcdLockDriver(index, **options)


class ZooKeeperEnsemble:
    """``members`` ZooKeeper servers on 127.0.0.1, each its own JVM, stopped by PID."""

    def __init__(self, members: int = 3, base_port: int = 22181) -> None:
        self.members = members
        self.base_port = base_port
        self.root = Path(tempfile.mkdtemp(prefix="synod-bench-zk-"))
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{self.base_port + i}" for i in range(self.members))

    def start(self) -> ZooKeeperEnsemble:
        from bench.refs import ensure_apt, wait_port

        ensure_apt("java", "default-jre-headless")
        if not Path("/usr/share/java/zookeeper.jar").exists():
            ensure_apt("zkCli", "zookeeper")
        servers = "\n".join(
            f"server.{i + 1}=127.0.0.1:{self.base_port + 100 + i}:{self.base_port + 200 + i}"
            for i in range(self.members))
        for i in range(self.members):
            data = self.root / f"d{i + 1}"
            data.mkdir(parents=True)
            (data / "myid").write_text(f"{i + 1}\n")
            config = self.root / f"zoo{i + 1}.cfg"
            config.write_text(
                f"tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir={data}\n"
                f"clientPort={self.base_port + i}\nclientPortAddress=127.0.0.1\n"
                f"admin.enableServer=false\nmaxClientCnxns=0\n{servers}\n")
            log = open(self.root / f"zk{i + 1}.log", "ab")  # noqa: SIM115 - the child keeps it
            self.processes.append(subprocess.Popen(
                ["java", "-Xmx512m", "-cp", "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
                 "-Dzookeeper.root.logger=WARN,CONSOLE", "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                 str(config)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True))
            log.close()
        for i in range(self.members):
            wait_port(self.base_port + i, timeout_s=60)
        return self

    def stop(self) -> None:
        from bench.refs import stop_pids

        stop_pids([p.pid for p in self.processes if p.poll() is None])
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def __enter__(self) -> ZooKeeperEnsemble:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


# ---------------------------------------------------------------- measurements


def synod_options(cluster: Any) -> dict[str, Any]:
    info = cluster.connection()
    return {"nodes": {n: list(a) for n, a in info.nodes.items()}, "principal": info.principal,
            "key_hex": info.key.hex() if info.key else None, "insecure": info.insecure}


def held_sessions(cluster: Any, count: int, hold_s: float, *, batched: bool = True,
                  preset: str = "local") -> tuple[int, int, float]:
    """Open ``count`` sessions from this process, each a ``ClientSession`` core
    (the library's session state machine) multiplexed over ONE authenticated
    connection per node, as a client host with many sessions would; hold them
    idle for ``hold_s`` (several leases) and count those still SAFE. With
    ``batched`` they are opened together (``open_sessions``: one
    ``OpenSessions`` command per 1,024) and their KeepAlives travel together
    (``KeepAliveBatcher``), else one open and one KeepAlive request per session.
    Returns (opened, safe at the end, seconds to open them all)."""
    from synod.codec.kernel import ClientReply, ClientRequest
    from synod.core.effects import CancelTimer, Send, SetTimer
    from synod.core.ids import NodeId
    from synod.lock.client import KeepAliveBatcher, open_sessions
    from synod.lock.config import LockConfig
    from synod.lock.messages import KeepAlive
    from synod.lock.session import ClientSession, SessionState
    from synod.runtime.client import connect
    from synod.runtime.host import run

    info = cluster.connection()
    config = LockConfig.lan() if preset == "lan" else LockConfig.local()

    async def body() -> tuple[int, int, float]:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        connections = {node: await connect(address, info.principal, info.key, node=node, config=info.runtime,
                                           requests_in_flight_max=count + 1024)
                       for node, address in info.nodes.items()}
        timers: dict[tuple[int, str], asyncio.TimerHandle] = {}
        tasks: set[asyncio.Task[None]] = set()
        sessions = [ClientSession(NodeId(f"{info.principal}"), random.Random(i),
                                  servers=tuple(NodeId(n) for n in sorted(info.nodes)), config=config,
                                  call_timeout_ms=2000.0) for i in range(count)]

        def now_ms() -> float:
            return (time.monotonic() - t0) * 1000.0

        async def connection_for(node: str) -> Any:
            return connections[node]

        batcher = KeepAliveBatcher(connection_for, timeout_s=30.0) if batched else None

        def keepalive_reply(index: int, node: str, request_id: int) -> Any:
            def on_reply(answer: Any) -> None:
                execute(index, sessions[index].on_message(now_ms(), NodeId(node),
                                                          ClientReply(request_id=request_id, body=answer)))
            return on_reply

        def execute(index: int, effects: Any) -> None:
            for effect in effects:
                if (batcher is not None and isinstance(effect, Send) and isinstance(effect.message, ClientRequest)
                        and isinstance(effect.message.body, KeepAlive)):
                    batcher.submit(effect.to, effect.message.body,
                                   keepalive_reply(index, effect.to, effect.message.request_id))
                elif isinstance(effect, Send):
                    task = loop.create_task(deliver(index, effect))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif isinstance(effect, SetTimer):
                    old = timers.pop((index, effect.key), None)
                    if old is not None:
                        old.cancel()
                    timers[(index, effect.key)] = loop.call_later(effect.delay_ms / 1000.0, fire, index, effect.key)
                elif isinstance(effect, CancelTimer):
                    handle = timers.pop((index, effect.key), None)
                    if handle is not None:
                        handle.cancel()

        def fire(index: int, key: str) -> None:
            timers.pop((index, key), None)
            execute(index, sessions[index].on_timer(now_ms(), key))

        async def deliver(index: int, send: Any) -> None:
            request = send.message
            assert isinstance(request, ClientRequest)
            try:
                reply = await connections[send.to].request(request.body, 30.0)
            except Exception:
                return
            execute(index, sessions[index].on_message(now_ms(), send.to,
                                                      ClientReply(request_id=request.request_id, body=reply)))

        started = time.monotonic()
        if batched:
            # One OpenSessions command per 1,024 sessions; each core adopts its own.
            opened = await open_sessions(connection_for, sorted(info.nodes), count, now_ms=now_ms,
                                         rng=random.Random(count))
            for index, one in enumerate(opened):
                execute(index, sessions[index].adopt(now_ms(), one.session, one.epoch, one.opened_ms,
                                                           one.master))
        else:
            batch = 500
            for first in range(0, count, batch):
                futures = [loop.create_future() for _ in range(first, min(count, first + batch))]
                for offset, future in enumerate(futures):
                    execute(first + offset, sessions[first + offset].open(
                        now_ms(), lambda result, f=future: f.done() or f.set_result(result)))
                await asyncio.wait(futures, timeout=60.0)
        opened_s = time.monotonic() - started
        opened_count = sum(1 for s in sessions if s.state is not SessionState.OPENING and s.session)
        await asyncio.sleep(hold_s)
        safe = sum(1 for s in sessions if s.lease_safe(now_ms()))
        for handle in timers.values():
            handle.cancel()
        for task in list(tasks):
            task.cancel()
        if batcher is not None:
            await batcher.close()
        for connection in connections.values():
            with contextlib.suppress(Exception):
                await connection.close()
        return opened_count, safe, opened_s

    return run(body())


def synod_failover(cluster: Any) -> float:
    """SIGKILL the master; seconds until a write in an existing session succeeds."""
    from synod.lock.client import LockClient
    from synod.runtime.host import run

    info = cluster.connection()
    master = cluster.wait_leader()
    killed_node: list[str] = []

    async def body() -> float:
        async with LockClient(info.nodes, call_timeout_s=60.0, **info.client_options()) as client:
            await client.ensure(ROOT, directory=True)
            await client.ensure(f"{ROOT}/failover")
            await client.write(f"{ROOT}/failover", b"before")
            killed = time.monotonic()
            cluster.kill(master)
            killed_node.append(master)
            while True:
                try:
                    await client.write(f"{ROOT}/failover", b"after")
                    return time.monotonic() - killed
                except Exception:  # the session may be in jeopardy: keep trying
                    await asyncio.sleep(0.01)

    try:
        return run(body())
    finally:
        if killed_node:
            cluster.restart(master)


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b else "   n/a"


#: The load shapes, in the order they run, with the sessions per load process.
SHAPES = (("write", 1), ("read", 1), ("mix", MIX_SESSIONS_PER_PROCESS), ("mix-local", MIX_SESSIONS_PER_PROCESS),
          ("lock", 1))

CELL_CORES = {"lan": "synod.lock.server:lock_lan_factory", "local": "synod.lock.server:lock_factory"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--preset", choices=("lan", "local"), default="lan",
                        help="the synod cell's preset for the load shapes (lan: Chubby's 12 s lease, as "
                             "ZooKeeper's 30 s session and etcd's 60 s lease here; local: 1.5 s)")
    parser.add_argument("--sessions", type=int, default=10_000, help="idle sessions to hold")
    parser.add_argument("--shapes", default=",".join(kind for kind, _ in SHAPES),
                        help="comma-separated load shapes to run (default: all)")
    parser.add_argument("--skip-sessions", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--skip-zookeeper", action="store_true")
    parser.add_argument("--skip-etcd", action="store_true")
    parser.add_argument("--zk-port", type=int, default=22181)
    parser.add_argument("--etcd-port", type=int, default=23890)
    args = parser.parse_args()

    from bench.refs import EtcdCluster

    from synod.cli.cluster import LocalCluster
    from synod.lock.config import LockConfig

    presets = {"lan": LockConfig.lan(), "local": LockConfig.local()}
    rows: dict[str, dict[str, LoadResult]] = {"synod": {}}
    seconds = args.seconds

    def load(system: str, spec: str, kind: str, options: dict[str, Any]) -> None:
        result = run_load(spec, in_flight=args.in_flight, processes=LOAD_PROCESSES, duration_s=seconds,
                          options=options)
        rows.setdefault(system, {})[kind] = result
        print(f"  {system:9s} {kind:9s} {result.summary()}", flush=True)

    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="synod-bench-lock-")))
        cluster = stack.enter_context(LocalCluster(root / "cell", 3, core=CELL_CORES[args.preset]))
        cluster.wait_leader()
        zk = None if args.skip_zookeeper else stack.enter_context(ZooKeeperEnsemble(3, args.zk_port))
        etcd = None if args.skip_etcd else stack.enter_context(EtcdCluster(members=3, base_port=args.etcd_port))
        time.sleep(2.0)
        base = {**synod_options(cluster), "preset": args.preset}
        print(f"synod cell (3 nodes, fsync, {args.preset} preset), ZooKeeper 3.8 (3 servers), etcd 3.4 "
              f"(3 members); each shape runs on the three systems back to back:", flush=True)
        for kind, sessions in SHAPES:
            if kind not in args.shapes.split(","):
                continue
            load("synod", "bench.lock:synod_lock_driver", kind, {**base, "kind": kind, "sessions": sessions})
            if zk is not None and kind != "lock":
                load("zookeeper", "bench.lock:zookeeper_driver", kind,
                     {"hosts": zk.hosts, "kind": kind, "sessions": sessions})
            if etcd is not None and kind == "lock":
                load("etcd", "bench.lock:etcd_lock_driver", kind, {"endpoints": etcd.client_endpoints})
            elif etcd is not None and kind in ("write", "read"):
                load("etcd", "bench.drivers_etcd:etcd_driver", kind,
                     {"endpoints": etcd.client_endpoints, "kind": {"write": "put", "read": "get"}[kind],
                      "keys": KEYS})
        if zk is not None:
            zk.stop()
        if etcd is not None:
            etcd.stop()
        if not args.skip_sessions:
            config = presets[args.preset]
            hold_s = 3 * config.lease_ms / 1000.0
            opened, safe, open_s = held_sessions(cluster, args.sessions, hold_s=hold_s, preset=args.preset)
            print(f"  sessions ({args.preset} preset, {config.lease_ms / 1000:.1f} s lease, batched KeepAlives): "
                  f"{opened} opened in {open_s:.1f} s, {safe} safe after holding {hold_s:.1f} s idle", flush=True)
        cluster.stop()
        # Failover on a local-preset cell (its short Paxos timeouts, as
        # bench/paxos measures them); the local-preset sessions on a fresh cell
        # of their own, so neither run meets the other's aftermath.
        if not args.skip_failover:
            with LocalCluster(root / "cell-local", 3, core=CELL_CORES["local"]) as local:
                local.wait_leader()
                failover_s = synod_failover(local)
                print(f"  master failover (local preset): first write in the old session {failover_s * 1000:.0f} "
                      f"ms after SIGKILL", flush=True)
        if not args.skip_sessions and args.preset != "local":
            with LocalCluster(root / "cell-local-sessions", 3, core=CELL_CORES["local"]) as local:
                config = presets["local"]
                hold_s = 3 * config.lease_ms / 1000.0
                local.wait_leader()
                opened, safe, open_s = held_sessions(local, args.sessions, hold_s=hold_s, preset="local")
                print(f"  sessions (local preset, {config.lease_ms / 1000:.1f} s lease, batched KeepAlives): "
                      f"{opened} opened in {open_s:.1f} s, {safe} safe after holding {hold_s:.1f} s idle",
                      flush=True)

    synod = rows["synod"]
    print("\nratios (synod / reference):")
    for other in ("zookeeper", "etcd"):
        for kind, result in rows.get(other, {}).items():
            if kind not in synod:
                continue
            print(f"  {kind:9s} vs {other:9s} {ratio(synod[kind].ops_per_s, result.ops_per_s)}"
                  f"  ({synod[kind].ops_per_s:.0f} vs {result.ops_per_s:.0f} ops/s)")
    for kind in ("mix", "mix-local"):
        if kind in synod:
            print(f"  {kind} errors (stale reads are counted among them, and named StaleReadError in the worker "
                  f"lines): synod {synod[kind].errors}"
                  + (f", zookeeper {rows['zookeeper'][kind].errors}" if kind in rows.get("zookeeper", {}) else ""))


if __name__ == "__main__":
    sys.exit(main())
