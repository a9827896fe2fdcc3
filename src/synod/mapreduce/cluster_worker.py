"""``synod mr worker``: a MapReduce worker of a running cluster (I/O glue).

Theory of operation
-------------------
A worker process does three things, all on one asyncio loop:

* it joins the cluster's gossip (``synod.gossip.agent``) with the metadata
  ``{"role": "mr-worker", "rpc": "HOST:PORT"}``, so a master finds it by the
  ``JOINED`` event and learns of its death by ``FAILED`` (the paper's master
  pings workers; SWIM does it for us, without a central pinger);
* it listens for authenticated runtime connections (``synod.runtime``'s HMAC
  handshake, the cluster's client key) and serves ``RunAttempt``: the attempt
  runs in a thread with the same data path as the local runner
  (``synod.mapreduce.worker.run_attempt``), and the reply is its
  ``TaskCompleted``/``TaskFailed``;
* it serves ``FetchMapOutput`` from its scratch directory, where its map
  attempts left their output, so that reducers on other machines read their
  bucket over the authenticated runtime. Paths outside the scratch directory
  are refused: a peer cannot read other files through it.

A reduce attempt first copies each of its buckets that lives on another worker
into a local file (bounded chunks of ``FETCH_CHUNK_BYTES``), then runs as the
local runner's would over local files. If a map worker cannot be reached the
attempt fails (not the job's fault): the master retries it, and gossip's
verdict on the dead worker makes the master re-execute its map tasks.

Attempts run one at a time (the master assigns one per worker), in a thread so
the loop keeps answering gossip probes and fetches while the job's code runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgpack

from synod.codec.kernel import ClientReply, ClientRequest, ErrorReply
from synod.codec.registry import Message
from synod.core.errors import ConfigError, SynodError
from synod.core.ids import NodeId
from synod.gossip.agent import GossipAgent
from synod.gossip.config import GossipConfig
from synod.mapreduce.cluster_messages import (
    DropJob,
    FetchMapOutput,
    MapOutputChunk,
    RunAttempt,
    WorkerAck,
)
from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.job import Job
from synod.mapreduce.messages import (
    AssignMap,
    AssignReduce,
    MapOutputRef,
    TaskCompleted,
    TaskFailed,
    TaskKind,
)
from synod.mapreduce.runner import load_job
from synod.mapreduce.worker import FetchFailed, run_attempt
from synod.runtime.auth import MODE_HMAC, MODE_INSECURE, AcceptorHandshake, Keyring, ReplayCache
from synod.runtime.client import ClientConnection, connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.stats import Counters, RuntimeStatistics
from synod.runtime.transport import Connection, Listener

log = logging.getLogger("synod.mapreduce.cluster_worker")

ROLE_WORKER = "mr-worker"
ROLE_MASTER = "mr-master"
#: Largest map-output chunk served per request: well under the frame bound, large
#: enough that a fetch is a few round trips per MB-sized bucket.
FETCH_CHUNK_BYTES = 1 << 20
#: Seconds a fetch request may take before the reduce attempt gives up on it.
FETCH_TIMEOUT_S = 30.0
#: Under the scratch directory: each attempt's log, per job.
LOGS_DIR = "logs"
#: Jobs whose attempt logs a worker keeps (the oldest are pruned).
LOG_JOBS_MAX = 100
#: Lines of an attempt's log shown with its failure.
LOG_LINES_SHOWN = 40
#: Job classes kept loaded per worker (one per job file version), at most.
JOBS_CACHED_MAX = 16


def encode_meta(role: str, rpc: tuple[str, int] | None = None) -> bytes:
    fields: dict[str, str] = {"role": role}
    if rpc is not None:
        fields["rpc"] = f"{rpc[0]}:{rpc[1]}"
    return json.dumps(fields, sort_keys=True).encode()


def decode_meta(meta: bytes) -> dict[str, str]:
    """A gossip member's metadata as a dict; empty when it is not ours."""
    try:
        fields = json.loads(meta.decode())
    except (UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(fields, dict):
        return {}
    return {str(k): str(v) for k, v in fields.items()}


def encode_config(config: MapReduceConfig) -> bytes:
    packed: bytes = msgpack.packb(dataclasses.asdict(config), use_bin_type=True)
    return packed


def decode_config(data: bytes) -> MapReduceConfig:
    fields = msgpack.unpackb(data, raw=False) if data else {}
    known = {f.name for f in dataclasses.fields(MapReduceConfig)}
    return MapReduceConfig(**{k: v for k, v in fields.items() if k in known})


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {text!r} is not HOST:PORT")
    return host, int(port)


def parse_seed(text: str) -> tuple[NodeId, tuple[str, int]]:
    """``ID@HOST:PORT`` (a gossip member's id and UDP address)."""
    node, sep, address = text.partition("@")
    if not sep or not node:
        raise ConfigError(f"seed {text!r} is not ID@HOST:PORT")
    return NodeId(node), parse_hostport(address)


#: Under a cluster directory: one file per worker started with ``--cluster``,
#: holding its gossip seed ``ID@HOST:PORT`` (how local submitters find one).
WORKERS_DIR = "mr-workers"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClusterLayout:
    """What ``synod cluster up --data DIR`` wrote: secrets, principal, nodes."""

    cluster_secret: bytes | None
    principal: str
    key: bytes | None
    nodes: dict[str, tuple[str, int]]


def read_layout(data_dir: Path) -> ClusterLayout:
    """Read ``DIR/cluster.json`` and the key files it names."""
    path = data_dir / "cluster.json"
    try:
        layout = json.loads(path.read_text())
        insecure = bool(layout.get("insecure", False))
        secret = key = None
        if not insecure:
            secret = (data_dir / "cluster.key").read_bytes().rstrip(b"\r\n")
            key = (data_dir / layout["key_file"]).read_bytes().rstrip(b"\r\n")
        nodes = {str(n): (str(a[0]), int(a[1])) for n, a in layout["nodes"].items()}
        return ClusterLayout(cluster_secret=secret, principal=str(layout["principal"]), key=key,
                             nodes=nodes)
    except FileNotFoundError as error:
        raise ConfigError(f"no cluster in {data_dir}: {error.filename} does not exist "
                          f"(start one with `synod cluster up --data {data_dir}`)") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise ConfigError(f"cannot read the cluster layout in {data_dir}: {error}") from None


def announced_seeds(data_dir: Path) -> tuple[tuple[NodeId, tuple[str, int]], ...]:
    seeds = []
    folder = data_dir / WORKERS_DIR
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            with contextlib.suppress(OSError, ConfigError):
                seeds.append(parse_seed(entry.read_text().strip()))
    return tuple(seeds)


class ClusterWorker:
    """One worker process's state: listener, gossip agent, attempt thread."""

    def __init__(self, node: NodeId, *, cluster_secret: bytes | None, principal: str,
                 key: bytes | None, scratch_dir: Path, listen: tuple[str, int] = ("127.0.0.1", 0),
                 gossip_bind: tuple[str, int] = ("127.0.0.1", 0),
                 seeds: tuple[tuple[NodeId, tuple[str, int]], ...] = (),
                 gossip_config: GossipConfig | None = None) -> None:
        self.node = node
        self.principal = principal
        self.key = key
        self.insecure = cluster_secret is None
        self.runtime = RuntimeConfig(insecure=self.insecure)
        users = {principal: key} if key is not None else {}
        self.keyring = Keyring.from_secret(cluster_secret, users) if cluster_secret else Keyring()
        self.scratch_dir = scratch_dir.resolve()
        self.listen = listen
        self.gossip_bind = gossip_bind
        self.seeds = seeds
        self.gossip_config = gossip_config or GossipConfig.local()
        self.counters: Counters[RuntimeStatistics] = Counters(RuntimeStatistics)
        self.address: tuple[str, int] | None = None
        self.agent: GossipAgent | None = None
        self._listener: Listener | None = None
        self._replay_cache = ReplayCache(self.runtime.replay_cache_max)
        self._attempt_lock = asyncio.Lock()
        self._jobs: dict[tuple[str, str, float], type[Job]] = {}
        self._fetch_connections: dict[str, ClientConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.attempts_run = 0
        self.chunks_served = 0

    async def start(self) -> None:
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self._listener = Listener(
            config=self.runtime, counters=self.counters, make_handshake=self._handshake,
            ssl_context=None, on_connection=self._on_connection, on_closed=lambda conn: None,
        )
        self.address = await self._listener.start(*self.listen)
        if self.insecure:
            log.warning("worker %s runs INSECURE (development only)", self.node)
        gossip_keyring = self.keyring if not self.insecure else Keyring.from_secret(b"insecure-gossip-key!")
        self.agent = GossipAgent(self.node, keyring=gossip_keyring, bind=self.gossip_bind,
                                 seeds=self.seeds, config=self.gossip_config,
                                 meta=encode_meta(ROLE_WORKER, self.address))
        await self.agent.start()

    async def stop(self) -> None:
        if self.agent is not None:
            with contextlib.suppress(Exception):
                await self.agent.leave(wait_s=1.0)
            self.agent.stop()
        if self._listener is not None:
            await self._listener.stop()
        for connection in self._fetch_connections.values():
            await connection.close()
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ serving

    def _handshake(self, tls_peer: str | None) -> AcceptorHandshake:
        del tls_peer
        return AcceptorHandshake(mode=MODE_INSECURE if self.insecure else MODE_HMAC,
                                 principal=self.node, keyring=self.keyring,
                                 replay_cache=self._replay_cache)

    def _on_connection(self, connection: Connection) -> Any:
        def on_message(conn: Connection, msg: Message) -> None:
            if not isinstance(msg, ClientRequest):
                conn.refuse("frames_unexpected_message", f"sent {type(msg).__name__}")
                return
            task = asyncio.create_task(self._answer(conn, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return on_message

    async def _answer(self, conn: Connection, request: ClientRequest) -> None:
        body = request.body
        reply: Message
        match body:
            case RunAttempt():
                reply = await self._run(body)
            case FetchMapOutput():
                reply = self._fetch_local(body)
            case DropJob():
                shutil.rmtree(self._job_dir(body.job_id).parent, ignore_errors=True)
                reply = WorkerAck()
            case _:
                reply = ErrorReply(code="bad_request", detail=f"unexpected {type(body).__name__}")
        with contextlib.suppress(Exception):
            await conn.send(ClientReply(request_id=request.request_id, body=reply))

    def _job_dir(self, job_id: str) -> Path:
        """``job@epoch`` -> SCRATCH/job/epoch: each master of a job (a new one after
        a failover) numbers attempts afresh, so each gets its own directory."""
        job, _, epoch = job_id.partition("@")
        def safe(text: str) -> str:
            return "".join(c for c in text if c.isalnum() or c in "-_.") or "0"
        return self.scratch_dir / safe(job) / safe(epoch)

    def _fetch_local(self, fetch: FetchMapOutput) -> MapOutputChunk:
        path = Path(os.path.realpath(fetch.path))
        if not path.is_relative_to(self.scratch_dir):
            return MapOutputChunk(data=b"", error=f"{fetch.path} is not map output of this worker")
        if fetch.offset < 0 or not 0 <= fetch.length <= FETCH_CHUNK_BYTES:
            return MapOutputChunk(data=b"", error=f"bad range ({fetch.offset}, {fetch.length})")
        try:
            with open(path, "rb") as handle:
                handle.seek(fetch.offset)
                data = handle.read(fetch.length)
        except OSError as error:
            return MapOutputChunk(data=b"", error=f"cannot read {fetch.path}: {error.strerror}")
        if len(data) != fetch.length:
            return MapOutputChunk(data=b"", error=f"{fetch.path} is shorter than asked")
        self.chunks_served += 1
        return MapOutputChunk(data=data)

    # ----------------------------------------------------------------- attempts

    def _load(self, job_path: str, job_class: str) -> type[Job]:
        mtime = os.path.getmtime(job_path)
        cache_key = (job_path, job_class, mtime)
        job = self._jobs.get(cache_key)
        if job is None:
            if len(self._jobs) >= JOBS_CACHED_MAX:
                self._jobs.pop(next(iter(self._jobs)))
            job = load_job(job_path, job_class or None)
            self._jobs[cache_key] = job
        return job

    async def _run(self, run: RunAttempt) -> TaskCompleted | TaskFailed:
        assign = run.assign
        kind = TaskKind.MAP if isinstance(assign, AssignMap) else TaskKind.REDUCE
        async with self._attempt_lock:
            self.attempts_run += 1
            scratch = self._job_dir(run.job_id)
            scratch.mkdir(parents=True, exist_ok=True)
            try:
                job = self._load(run.job_path, run.job_class)
                config = decode_config(run.config)
            except (SynodError, OSError, TypeError, ValueError) as error:
                return TaskFailed(attempt=assign.attempt, kind=kind, task=assign.task,
                                  error=f"worker {self.node} cannot load the job: {error}", user_error=True)
            fetched: list[Path] = []
            try:
                if isinstance(assign, AssignReduce):
                    try:
                        assign = await self._localize(run, assign, scratch, fetched)
                    except FetchFailed as error:
                        return TaskFailed(attempt=assign.attempt, kind=kind, task=assign.task,
                                          error=f"worker {self.node}: {error}",
                                          lost_map_attempts=tuple(ref.attempt for ref in error.refs))
                    except (SynodError, OSError) as error:
                        return TaskFailed(attempt=assign.attempt, kind=kind, task=assign.task,
                                          error=f"worker {self.node}: {error}")
                return await asyncio.to_thread(self._logged_attempt, job, assign, scratch, config,
                                               self._log_path(run.job_id, assign))
            finally:
                for path in fetched:
                    path.unlink(missing_ok=True)

    def _log_path(self, job_id: str, assign: AssignMap | AssignReduce) -> Path:
        """Where attempt ``assign`` keeps its log: ``SCRATCH/logs/<job>/...``. The
        logs outlive the job's map output (``DropJob``); the oldest jobs' logs are
        pruned beyond ``LOG_JOBS_MAX``."""
        job = self._job_dir(job_id).parent.name
        folder = self.scratch_dir / LOGS_DIR / job
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            jobs = sorted((p for p in folder.parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
            for old in jobs[:-LOG_JOBS_MAX]:
                shutil.rmtree(old, ignore_errors=True)
        kind = "m" if isinstance(assign, AssignMap) else "r"
        return folder / f"s{assign.step}-{kind}{assign.task}-a{assign.attempt}.log"

    def _logged_attempt(self, job: type[Job], assign: AssignMap | AssignReduce, scratch: Path,
                        config: MapReduceConfig, log_path: Path) -> TaskCompleted | TaskFailed:
        """Run the attempt (on the attempt thread) with the job's prints going to
        its log; a failure's report carries the end of that log."""
        with open(log_path, "w", encoding="utf-8", errors="replace") as log_file:
            # One attempt runs at a time, and the loop thread prints nothing: the
            # process-wide redirection captures this attempt's output only.
            with contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
                result = run_attempt(job, assign, scratch_dir=str(scratch), config=config)
            if isinstance(result, TaskFailed):
                log_file.write(f"\n{result.error}\n{result.detail}")
        if not isinstance(result, TaskFailed):
            return result
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-LOG_LINES_SHOWN:])
        return dataclasses.replace(result, detail=(
            f"{result.detail.rstrip()}\n--- attempt log, worker {self.node}: {log_path} "
            f"(last {min(len(lines), LOG_LINES_SHOWN)} lines) ---\n{tail}"))

    async def _localize(self, run: RunAttempt, assign: AssignReduce, scratch: Path,
                        fetched: list[Path]) -> AssignReduce:
        """The same assignment with every remote bucket copied to a local file."""
        own = f"{self.address[0]}:{self.address[1]}" if self.address else ""
        refs: list[MapOutputRef] = []
        for ref in assign.inputs:
            location = run.locations.get(ref.attempt, "")
            if ref.length == 0 or location == own:
                refs.append(ref)
                continue
            if not location:
                raise FetchFailed((ref,), f"no address for map worker {ref.worker}")
            local = scratch / f"fetch-r{assign.task}-a{assign.attempt}-m{ref.map_task}"
            fetched.append(local)
            try:
                await self._fetch_remote(location, ref, local)
            except SynodError:
                # One retry on a fresh connection before reporting a fetch failure,
                # which makes the master re-execute the map task.
                stale = self._fetch_connections.pop(location, None)
                if stale is not None:
                    await stale.close()
                try:
                    await self._fetch_remote(location, ref, local)
                except SynodError as error:
                    raise FetchFailed((ref,), str(error)) from None
            refs.append(dataclasses.replace(ref, path=str(local), offset=0))
        return dataclasses.replace(assign, inputs=tuple(refs))

    async def _fetch_remote(self, location: str, ref: MapOutputRef, local: Path) -> None:
        connection = self._fetch_connections.get(location)
        if connection is None or connection.closed:
            try:
                connection = await asyncio.wait_for(
                    connect(parse_hostport(location), self.principal, self.key, config=self.runtime),
                    FETCH_TIMEOUT_S)
            except (OSError, TimeoutError) as error:
                raise SynodError(f"cannot reach map worker {ref.worker} at {location}: {error}") from None
            self._fetch_connections[location] = connection
        with open(local, "wb") as handle:
            done = 0
            while done < ref.length:
                size = min(FETCH_CHUNK_BYTES, ref.length - done)
                try:
                    reply = await connection.request(
                        FetchMapOutput(path=ref.path, offset=ref.offset + done, length=size), FETCH_TIMEOUT_S)
                except (SynodError, OSError) as error:
                    raise SynodError(f"fetch of map task {ref.map_task}'s output from {ref.worker} "
                                     f"failed: {error}") from None
                if not isinstance(reply, MapOutputChunk) or reply.error or len(reply.data) != size:
                    detail = reply.error if isinstance(reply, MapOutputChunk) else type(reply).__name__
                    raise SynodError(f"map worker {ref.worker} refused the fetch: {detail}")
                handle.write(reply.data)
                done += size


async def serve_worker(worker: ClusterWorker, stop: asyncio.Event, ready: Any = None) -> None:
    """Run ``worker`` until ``stop`` is set."""
    await worker.start()
    if ready is not None:
        ready(worker)
    try:
        await stop.wait()
    finally:
        await worker.stop()


def default_scratch(node: str) -> Path:
    return Path(tempfile.gettempdir()) / f"synod-mr-{node}-{os.getpid()}"


def run_worker_process(data_dir: Path, *, node: str, seeds: tuple[str, ...] = (),
                       scratch_dir: Path | None = None, host: str = "127.0.0.1") -> None:
    """``synod mr worker``: serve until SIGTERM/SIGINT. Prints one line
    ``READY <node> <rpc host:port> <gossip host:port> <pid>`` once serving, and
    announces its gossip address under ``DIR/mr-workers/<node>``."""
    import signal

    from synod.runtime.host import run

    layout = read_layout(data_dir)
    parsed = tuple(parse_seed(seed) for seed in seeds) or tuple(
        seed for seed in announced_seeds(data_dir) if seed[0] != node)
    scratch = scratch_dir or default_scratch(node)
    announce = data_dir / WORKERS_DIR / node
    worker = ClusterWorker(NodeId(node), cluster_secret=layout.cluster_secret, principal=layout.principal,
                           key=layout.key, scratch_dir=scratch, listen=(host, 0), gossip_bind=(host, 0),
                           seeds=parsed)

    def ready(worker: ClusterWorker) -> None:
        assert worker.address is not None and worker.agent is not None and worker.agent.address
        gossip = worker.agent.address
        announce.parent.mkdir(parents=True, exist_ok=True)
        temp = announce.with_suffix(".tmp")
        temp.write_text(f"{node}@{gossip[0]}:{gossip[1]}\n")
        temp.replace(announce)
        print(f"READY {node} {worker.address[0]}:{worker.address[1]} {gossip[0]}:{gossip[1]} "
              f"{os.getpid()}", flush=True)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_worker(worker, stop, ready)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            run(serve())
    finally:
        with contextlib.suppress(OSError):
            if announce.read_text().startswith(f"{node}@"):
                announce.unlink()
        if scratch_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
