"""The ``cluster`` runner: drive the sans-IO ``Master`` over gossip-found workers.

Theory of operation
-------------------
``ClusterDriver`` runs the same ``synod.mapreduce.master.Master`` core, one per
step, as the inline and local runners do; only the way effects reach workers
and events reach the core differ (Dean & Ghemawat section 3.1 and 3.3):

* **Finding workers.** The driver joins the cluster's gossip as a member with
  the metadata role ``mr-master``. Every ``synod mr worker`` advertises role
  ``mr-worker`` and its runtime address. A worker seen alive becomes a core
  worker (``WorkerReady``); a ``FAILED`` or ``LEFT`` verdict becomes
  ``WorkerLost``, so the core re-executes its running attempt and the map
  tasks whose output lived on it. The core never reuses a worker id, so a
  worker that comes back (gossip refutes, or a new incarnation) is registered
  under a fresh id ``node#generation``.
* **Assignments.** A ``Send(AssignMap|AssignReduce)`` becomes a ``RunAttempt``
  request on an authenticated runtime connection to that worker; its reply,
  ``TaskCompleted`` or ``TaskFailed``, goes back to the core as if the worker
  had sent it. A connection that breaks during a request makes the driver
  declare that core id lost (gossip will usually say so too; the core ignores
  the second word). ``CancelAttempt`` is dropped: attempts run to the end and
  their late reports are ignored by the core, as in the local runner.
* **Map output.** A reduce assignment names, per map task, the core id of the
  worker holding the committed attempt's bucket; the driver adds the runtime
  address of each, and the reduce worker fetches the buckets itself
  (``synod.mapreduce.cluster_worker``).
* **Input and output** are paths on storage every worker reaches (a shared
  filesystem): the driver plans splits from the paths, workers read them and
  commit ``part-NNNNN`` into the output directory by rename.

What this module does not do yet: elect the master through the lock service and
checkpoint the committed-task table there (the submitting process is the
master; if it dies the job dies with it). See docs/mapreduce.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Effects,
    Persist,
    Recovered,
    Send,
    SetTimer,
)
from synod.core.errors import ConfigError, SynodError, invariant
from synod.core.ids import NodeId
from synod.gossip.agent import GossipAgent
from synod.gossip.config import GossipConfig
from synod.gossip.messages import MemberStatus
from synod.gossip.view import EventKind
from synod.mapreduce.cluster_messages import CheckpointEntry, DropJob, RunAttempt
from synod.mapreduce.cluster_worker import (
    ROLE_MASTER,
    ROLE_WORKER,
    WORKERS_DIR,
    announced_seeds,
    decode_meta,
    encode_config,
    encode_meta,
    parse_hostport,
    parse_seed,
    read_layout,
)
from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.master import Master, MasterStatistics
from synod.mapreduce.messages import (
    AssignMap,
    AssignReduce,
    TaskCompleted,
    TaskFailed,
    TaskKind,
    WorkerLost,
    WorkerReady,
)
from synod.mapreduce.runner import DRIVER, JobFailed, _Driver
from synod.runtime.auth import Keyring
from synod.runtime.client import ClientConnection, connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import new_event_loop

log = logging.getLogger("synod.mapreduce.cluster")
T = TypeVar("T")

#: Longest one attempt may run before the driver gives up on its worker, seconds.
ATTEMPT_TIMEOUT_S = 3600.0
#: A worker whose connection broke is not used again for this long, doubling
#: per consecutive failure up to ``QUARANTINE_MS_MAX``: longer than gossip takes
#: to declare a dead worker failed (``GossipConfig.local()``: about 2-3 s).
QUARANTINE_MS = 5_000.0
QUARANTINE_MS_MAX = 60_000.0
#: How long a step waits for its first worker before the job fails, seconds.
WORKER_WAIT_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterTarget:
    """Where the workers are and how to talk to them."""

    #: Gossip seeds, ``(node id, (host, port))``: any member of the cluster.
    seeds: tuple[tuple[NodeId, tuple[str, int]], ...]
    #: The cluster secret (gossip and node keys); None runs insecure (development).
    cluster_secret: bytes | None
    #: The client principal and key the workers accept.
    principal: str
    key: bytes | None
    gossip: GossipConfig = dataclasses.field(default_factory=GossipConfig.local)
    #: How long a step waits for a live worker before the job fails, seconds.
    worker_wait_s: float = WORKER_WAIT_S
    #: The lock cell's nodes (``cluster.json``), for election and checkpoints.
    lock_nodes: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dir(cls, data_dir: Path, seeds: tuple[str, ...] = ()) -> ClusterTarget:
        """The target described by a ``synod cluster up --data DIR`` directory: its
        secret, client key and nodes; gossip seeds as given (``ID@HOST:PORT``), else
        the workers that announced themselves under ``DIR/mr-workers/``."""
        layout = read_layout(data_dir)
        parsed = tuple(parse_seed(seed) for seed in seeds) or announced_seeds(data_dir)
        if not parsed:
            raise ConfigError(f"no MapReduce worker known in {data_dir}/{WORKERS_DIR}: start some with "
                              f"`synod mr worker --cluster {data_dir}` or give --seed ID@HOST:PORT")
        return cls(seeds=parsed, cluster_secret=layout.cluster_secret, principal=layout.principal,
                   key=layout.key, lock_nodes=layout.nodes)


class Checkpoint(Protocol):
    """Where a master keeps its committed-task table (``cluster_master`` keeps it
    in the lock cell). Called on the driver's loop thread."""

    def recall(self, step: int, kind: TaskKind, task: int) -> CheckpointEntry | None:
        """The committed completion of that task found when this master took over."""
        ...

    def record(self, entry: CheckpointEntry) -> None:
        """Keep ``entry`` (written behind, in commit order)."""
        ...


class LoopThread:
    """An asyncio loop on its own thread, so that gossip probes and lock-session
    KeepAlives go on while the runner's synchronous code runs between steps."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="synod-mr-loop", daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    @staticmethod
    def run_once(coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on a loop thread of its own, then stop it."""
        thread = LoopThread()
        try:
            return thread.call(coroutine)
        finally:
            thread.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterRun:
    """A job run by an elected master (``synod mr master``): a fixed job id, the
    master's epoch (its election's lock generation), its checkpoint, its loop."""

    target: ClusterTarget
    job_id: str
    epoch: int
    checkpoint: Checkpoint | None
    loop: LoopThread
    #: True once someone asked to kill the job (called on the loop thread).
    killed: Callable[[], bool] | None = None
    #: True while the master must not act (its lock session is in jeopardy).
    paused: Callable[[], bool] | None = None


@dataclass(slots=True, kw_only=True)
class _Worker:
    node: NodeId
    rpc: str
    core_id: NodeId | None = None
    generation: int = 0
    #: Not registered again before this time (ms) after its connection broke:
    #: gossip may still show it alive for a while after it died.
    quarantine_until_ms: float = 0.0
    #: Consecutive connection failures (the quarantine doubles with each).
    connection_failures: int = 0


class ClusterDriver(_Driver):
    """Drives each step's ``Master`` on workers found through gossip."""

    def __init__(self, job_path: str, job_class: str, cluster: ClusterTarget | ClusterRun,
                 config: MapReduceConfig) -> None:
        self._job_path = str(Path(job_path).resolve())
        self._job_class = job_class
        self._config = config
        self._encoded_config = encode_config(config)
        if isinstance(cluster, ClusterRun):
            self._target = cluster.target
            self.job_id = cluster.job_id
            self._epoch = cluster.epoch
            self._checkpoint = cluster.checkpoint
            self._loop_thread = cluster.loop
            self._owns_loop = False
            self._killed = cluster.killed
            self._paused = cluster.paused
        else:
            self._target = cluster
            self.job_id = f"job-{uuid.uuid4().hex[:12]}"
            self._epoch = 0
            self._checkpoint = None
            self._loop_thread = LoopThread()
            self._owns_loop = True
            self._killed = None
            self._paused = None
        self._worker_wait_s = self._target.worker_wait_s
        self._runtime = RuntimeConfig(insecure=self._target.cluster_secret is None)
        self._workers: dict[NodeId, _Worker] = {}
        self._by_core_id: dict[NodeId, _Worker] = {}
        self._connections: dict[str, ClientConnection] = {}
        #: Committed (or recalled) map attempt -> the worker holding its output.
        self._holders: dict[int, _Worker] = {}
        #: Recalled map attempts -> the core id the new core credits them to.
        self._credited: dict[int, NodeId] = {}
        #: Recalled map attempts -> (step, task), and the map tasks never to recall
        #: again because a reducer could not read their checkpointed output.
        self._recalled_maps: dict[int, tuple[int, int]] = {}
        self._unrecallable: set[tuple[int, int]] = set()
        self.recalled = 0
        #: The step of each attempt assigned (attempt ids are unique over a job).
        self._steps: dict[int, int] = {}
        self._agent: GossipAgent | None = None
        self._loop_thread.call(self._start_agent())

    # -------------------------------------------------------------- gossip

    async def _start_agent(self) -> None:
        secret = self._target.cluster_secret or b"insecure-gossip-key!"
        node = NodeId(f"mr-master-{self.job_id}-e{self._epoch}")
        self._agent = GossipAgent(node, keyring=Keyring.from_secret(secret),
                                  bind=("127.0.0.1", 0), seeds=self._target.seeds,
                                  config=self._target.gossip, meta=encode_meta(ROLE_MASTER))
        await self._agent.start()

    def workers(self) -> dict[str, str]:
        """Known live workers: node id -> runtime address."""
        return {w.node: w.rpc for w in self._workers.values() if w.core_id is not None}

    def _refresh(self, master: Master) -> Effects:
        """Turn gossip's word into ``WorkerReady``/``WorkerLost`` for the core."""
        agent = self._agent
        assert agent is not None and agent.member is not None
        effects: Effects = []
        lost: set[NodeId] = set()
        while not agent.events.empty():
            event = agent.events.get_nowait()
            if event.kind in (EventKind.FAILED, EventKind.LEFT):
                lost.add(event.node)
        view = agent.member.view(agent.now_ms())
        for info in view.members:
            meta = decode_meta(info.meta)
            if meta.get("role") != ROLE_WORKER or "rpc" not in meta:
                continue
            alive = info.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)
            worker = self._workers.setdefault(info.node, _Worker(node=info.node, rpc=meta["rpc"]))
            if worker.core_id is not None and (not alive or info.node in lost or worker.rpc != meta["rpc"]):
                effects += self._lose(master, worker, "gossip")
            if (alive and info.node not in lost and worker.core_id is None
                    and _now_ms() >= worker.quarantine_until_ms):
                worker.rpc = meta["rpc"]
                worker.generation += 1
                worker.core_id = NodeId(f"{info.node}#{worker.generation}")
                self._by_core_id[worker.core_id] = worker
                effects += master.on_message(_now_ms(), worker.core_id, WorkerReady())
        return effects

    def _lose(self, master: Master, worker: _Worker, why: str) -> Effects:
        core_id = worker.core_id
        if core_id is None:
            return []
        log.warning("worker %s lost (%s)", core_id, why)
        worker.core_id = None
        effects = master.on_message(_now_ms(), DRIVER, WorkerLost(worker=core_id))
        # Output recalled from before a failover is credited by the core to another
        # worker: declare that one lost too, so the core re-executes those maps; the
        # next refresh registers it again under a new id.
        for attempt, holder in list(self._holders.items()):
            credited = self._credited.get(attempt)
            if holder is worker and credited is not None:
                other = self._by_core_id.get(credited)
                if other is not None and other.core_id == credited:
                    effects += self._lose(master, other, f"holds no output of recalled attempt {attempt}")
        return effects

    # -------------------------------------------------------------- steps

    def run_step(self, master: Master, report: Callable[[MasterStatistics], None]) -> None:
        self._loop_thread.call(self._run_step(master, report))

    async def _run_step(self, master: Master, report: Callable[[MasterStatistics], None]) -> None:
        inbox: asyncio.Queue[tuple[NodeId, TaskCompleted | TaskFailed | None]] = asyncio.Queue()
        timers: dict[str, float] = {}
        running: set[asyncio.Task[None]] = set()
        effects = master.start(_now_ms(), Recovered())
        waited_since = time.monotonic()
        try:
            while True:
                if self._paused is not None and self._paused():
                    # Act on nothing (no sends, no deliveries, no timers) until the
                    # master's lease is safe again; replies wait in the inbox.
                    await asyncio.sleep(0.05)
                    continue
                effects += self._refresh(master)
                for effect in effects:
                    match effect:
                        case Send(to=to, message=AssignMap() | AssignReduce() as assign):
                            self._steps[assign.attempt] = assign.step
                            recalled = self._recall(to, assign)
                            if recalled is not None:
                                inbox.put_nowait((to, recalled))
                                continue
                            task = asyncio.create_task(self._attempt(to, assign, inbox))
                            running.add(task)
                            task.add_done_callback(running.discard)
                        case Send():
                            continue  # CancelAttempt: attempts run to the end
                        case SetTimer(key=key, delay_ms=delay_ms):
                            timers[key] = _now_ms() + delay_ms
                        case CancelTimer(key=key):
                            timers.pop(key, None)
                        case Persist() | ClientResult():
                            invariant(False, "the master core returns no Persist or ClientResult")
                effects = []
                master.check_invariants()
                report(master.statistics())
                if master.finished:
                    return
                if self._killed is not None and self._killed():
                    raise JobFailed("the job was killed (synod mr kill)")
                if self.workers():
                    waited_since = time.monotonic()
                elif time.monotonic() - waited_since > self._worker_wait_s:
                    raise JobFailed(f"no live MapReduce worker found through gossip for "
                                    f"{self._worker_wait_s:.0f} s")
                timeout_s = 0.2
                if timers:
                    timeout_s = min(timeout_s, max(0.0, (min(timers.values()) - _now_ms()) / 1000.0))
                with contextlib.suppress(TimeoutError):
                    source, reply = await asyncio.wait_for(inbox.get(), timeout_s)
                    effects += self._deliver(master, source, reply)
                    while not inbox.empty():
                        source, reply = inbox.get_nowait()
                        effects += self._deliver(master, source, reply)
                now = _now_ms()
                for key, due in sorted(timers.items()):
                    if due <= now:
                        del timers[key]
                        effects += master.on_timer(now, key)
        finally:
            for task in running:
                task.cancel()

    def _recall(self, core_id: NodeId, assign: AssignMap | AssignReduce) -> TaskCompleted | None:
        """The checkpointed completion of the assigned task, if a previous master
        committed it and its output is still there; the new attempt is answered
        with it instead of running again."""
        if self._checkpoint is None:
            return None
        kind = reply_kind(assign)
        entry = self._checkpoint.recall(assign.step, kind, assign.task)
        if entry is None:
            return None
        if kind is TaskKind.MAP:
            if (assign.step, assign.task) in self._unrecallable:
                return None  # that output failed a fetch: the map task runs again
            holder = self._workers.get(NodeId(entry.holder))
            if holder is None or holder.core_id is None or holder.rpc != entry.rpc:
                return None  # the worker holding that output is gone or restarted
            self._holders[assign.attempt] = holder
            self._credited[assign.attempt] = core_id
            self._recalled_maps[assign.attempt] = (assign.step, assign.task)
        elif not Path(entry.completion.path).is_file():
            return None
        self.recalled += 1
        return dataclasses.replace(entry.completion, attempt=assign.attempt)

    def _deliver(self, master: Master, source: NodeId, reply: TaskCompleted | TaskFailed | None) -> Effects:
        worker = self._by_core_id.get(source)
        if reply is None:
            # The connection broke under the request: the worker is gone or unreachable.
            if worker is not None and worker.core_id == source:
                worker.connection_failures += 1
                backoff_ms = min(QUARANTINE_MS_MAX, QUARANTINE_MS * 2 ** (worker.connection_failures - 1))
                worker.quarantine_until_ms = _now_ms() + backoff_ms
                return self._lose(master, worker, "connection lost")
            return []
        if worker is not None:
            worker.connection_failures = 0
        if isinstance(reply, TaskFailed):
            for lost in reply.lost_map_attempts:
                if lost in self._recalled_maps:
                    self._unrecallable.add(self._recalled_maps[lost])
        before = master.statistics()
        effects = master.on_message(_now_ms(), source, reply)
        after = master.statistics()
        committed = (after.maps_completed + after.reduces_completed
                     > before.maps_completed + before.reduces_completed)
        if committed and isinstance(reply, TaskCompleted) and worker is not None:
            holder = self._holders.get(reply.attempt)
            if holder is None:
                holder = worker
                self._holders[reply.attempt] = worker
            if self._checkpoint is not None and reply.attempt not in self._credited:
                self._checkpoint.record(CheckpointEntry(
                    step=self._steps.get(reply.attempt, 0), holder=holder.node, rpc=holder.rpc, completion=reply))
        return effects

    async def _attempt(self, core_id: NodeId, assign: AssignMap | AssignReduce,
                       inbox: asyncio.Queue[tuple[NodeId, TaskCompleted | TaskFailed | None]]) -> None:
        worker = self._by_core_id.get(core_id)
        if worker is None:
            inbox.put_nowait((core_id, None))
            return
        locations: dict[int, str] = {}
        if isinstance(assign, AssignReduce):
            for ref in assign.inputs:
                holder = self._holders.get(ref.attempt)
                if holder is not None:
                    locations[ref.attempt] = holder.rpc
        request = RunAttempt(job_id=f"{self.job_id}@{self._epoch}", job_path=self._job_path,
                             job_class=self._job_class, config=self._encoded_config, assign=assign,
                             locations=locations)
        try:
            connection = await self._connection(worker.rpc)
            reply = await connection.request(request, ATTEMPT_TIMEOUT_S)
        except (SynodError, OSError, TimeoutError) as error:
            log.warning("attempt %d on %s: %s", assign.attempt, core_id, error)
            inbox.put_nowait((core_id, None))
            return
        if isinstance(reply, TaskCompleted | TaskFailed):
            inbox.put_nowait((core_id, reply))
        else:
            inbox.put_nowait((core_id, TaskFailed(
                attempt=assign.attempt, kind=reply_kind(assign), task=assign.task,
                error=f"worker {worker.node} answered {type(reply).__name__}")))

    async def _connection(self, rpc: str) -> ClientConnection:
        connection = self._connections.get(rpc)
        if connection is None or connection.closed:
            connection = await asyncio.wait_for(
                connect(parse_hostport(rpc), self._target.principal, self._target.key,
                        config=self._runtime), 10.0)
            self._connections[rpc] = connection
        return connection

    def close(self) -> None:
        async def shut() -> None:
            for connection in list(self._connections.values()):
                with contextlib.suppress(Exception):
                    await connection.request(DropJob(job_id=self.job_id), 5.0)
                with contextlib.suppress(Exception):
                    await connection.close()
            self._connections.clear()
            if self._agent is not None:
                with contextlib.suppress(Exception):
                    await self._agent.leave(wait_s=0.5)
                self._agent.stop()
        with contextlib.suppress(Exception):
            self._loop_thread.call(shut())
        if self._owns_loop:
            self._loop_thread.close()


def reply_kind(assign: AssignMap | AssignReduce) -> TaskKind:
    return TaskKind.MAP if isinstance(assign, AssignMap) else TaskKind.REDUCE


def _now_ms() -> float:
    return time.monotonic() * 1000.0
