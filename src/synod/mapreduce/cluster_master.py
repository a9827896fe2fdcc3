"""``synod mr master``: a MapReduce master elected through the lock service.

Theory of operation
-------------------
The paper's master is a single point of failure, and the paper's answer is
"periodic checkpoints ... a new copy can be started from the last checkpointed
state" (Dean & Ghemawat, 3.3, *Master Failure*). Here the checkpoints live in
the cluster's lock cell, so a standby master resumes a job instead of failing
it (Burrows, *Chubby*, 2.2: primary election and small-file storage):

* **Election.** Every ``synod mr master`` calls ``LockClient.elect`` on
  ``ROOT/master``. The holder is the master; the others block in ``acquire``.
  The winner's *epoch* is the lock generation of its sequencer. While its
  session is in jeopardy (partitioned, frozen, or the cell failing over) it
  schedules nothing; if the session expires the process exits at once: it can
  no longer be sure it is the master, and another is elected once the cell has
  expired its session and the lock-delay is over.
* **Submission.** ``submit_job`` (``synod mr run --runner cluster`` while a
  master is elected) creates the directory ``ROOT/jobs/<job-id>`` holding
  ``spec`` (a ``JobSpec``) and waits for ``outcome`` (a ``JobOutcome``).
  The master runs the pending jobs in job-id order, one at a time.
* **Checkpoints.** The master writes ``started`` (the epochs that ran the job),
  then, for every task its core *commits*, one file ``s<step>-m<task>`` or
  ``s<step>-r<task>`` holding a ``CheckpointEntry`` (the completion, and for a
  map task the worker holding its output). Entries are written behind, in
  commit order, by one writer: the checkpoint is always a prefix of the commit
  sequence, so a reduce found committed always comes with the map completions
  it was bound to.
* **Resume.** A new master reads the entries and runs the job again with
  ``ClusterDriver``'s *recall*: when its core assigns a task whose completion is
  checkpointed and whose output still exists (a reduce's part file on shared
  storage; a map's output on a worker gossip still shows alive, at the same
  address), the driver answers the attempt with that completion at once. So a
  job whose master died completes with the same output, re-running only the
  work whose results were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from synod.codec.registry import decode, encode
from synod.core.errors import ConfigError, RemoteProtocolError, SynodError
from synod.lock.client import LockClient
from synod.lock.errors import ExistsError, LockError
from synod.lock.session import SessionState
from synod.mapreduce.cluster import ClusterDriver, ClusterRun, ClusterTarget, LoopThread
from synod.mapreduce.cluster_messages import CheckpointEntry, JobOutcome, JobSpec
from synod.mapreduce.cluster_worker import decode_config, encode_config, read_layout
from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.messages import CounterValue, TaskKind
from synod.mapreduce.runner import JobError, JobFailed, JobResult, input_files, load_job, run_job
from synod.runtime.config import RuntimeConfig

log = logging.getLogger("synod.mapreduce.cluster_master")
T = TypeVar("T")

#: The lock cell directory of the MapReduce service (the cell of ``lock_factory``).
ROOT = "/ls/local/mr"
#: Checkpoint entries waiting to be written, at most; beyond, an entry is dropped
#: (counted): a lost entry only costs a re-execution after a failover.
CHECKPOINT_QUEUE_MAX = 65_536
#: How often the master looks for submitted jobs, and a submitter for the outcome.
POLL_S = 0.2


def entry_name(step: int, kind: TaskKind, task: int) -> str:
    return f"s{step}-{'m' if kind is TaskKind.MAP else 'r'}{task}"


async def put(client: LockClient, path: str, contents: bytes) -> None:
    """Create ``path`` with ``contents``, or overwrite it."""
    try:
        await client.create(path, contents)
    except ExistsError:
        await client.write(path, contents)


class LockCheckpoint:
    """A job's committed-task table in the lock cell (see the module comment)."""

    def __init__(self, client: LockClient, job_dir: str,
                 entries: dict[tuple[int, TaskKind, int], CheckpointEntry]) -> None:
        self._client = client
        self._dir = job_dir
        self._entries = entries
        self._queue: asyncio.Queue[CheckpointEntry] = asyncio.Queue(maxsize=CHECKPOINT_QUEUE_MAX)
        self._writer = asyncio.create_task(self._write_loop())
        self.written = 0
        self.dropped = 0
        self.failed = 0

    @classmethod
    async def load(cls, client: LockClient, job_dir: str) -> LockCheckpoint:
        entries: dict[tuple[int, TaskKind, int], CheckpointEntry] = {}
        for name in await client.list(job_dir):
            if not name.startswith("s") or "-" not in name:
                continue
            try:
                data = await client.read(f"{job_dir}/{name}", cache=False)
                entry = decode(data.contents)
            except (LockError, RemoteProtocolError) as error:
                log.warning("checkpoint entry %s/%s unreadable: %s", job_dir, name, error)
                continue
            if isinstance(entry, CheckpointEntry):
                done = entry.completion
                entries[(entry.step, done.kind, done.task)] = entry
        return cls(client, job_dir, entries)

    def __len__(self) -> int:
        return len(self._entries)

    def recall(self, step: int, kind: TaskKind, task: int) -> CheckpointEntry | None:
        return self._entries.get((step, kind, task))

    def record(self, entry: CheckpointEntry) -> None:
        done = entry.completion
        self._entries[(entry.step, done.kind, done.task)] = entry
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _write_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            done = entry.completion
            try:
                await put(self._client, f"{self._dir}/{entry_name(entry.step, done.kind, done.task)}",
                          encode(entry))
                self.written += 1
            except (LockError, SynodError) as error:
                self.failed += 1
                log.warning("checkpoint write failed: %s", error)
            finally:
                self._queue.task_done()

    async def flush(self) -> None:
        await self._queue.join()

    async def close(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


def _outcome_of(result: JobResult, masters: int, recalled: int) -> JobOutcome:
    return JobOutcome(
        ok=True, parts=tuple(str(p) for p in result.parts),
        counters=tuple(CounterValue(group=g, name=n, value=v) for (g, n), v in sorted(result.counters.items())),
        records_in=result.records_in, bytes_in=result.bytes_in, records_out=result.records_out,
        elapsed_s=result.elapsed_s, masters=masters, recalled=recalled,
    )


class MasterService:
    """One ``synod mr master`` process: elect, then run submitted jobs."""

    def __init__(self, data_dir: Path, *, identity: str, root: str = ROOT,
                 on_leader: Callable[[int], None] | None = None) -> None:
        self.data_dir = data_dir
        self.identity = identity
        self.root = root
        self.on_leader = on_leader
        self.layout = read_layout(data_dir)
        if not self.layout.nodes:
            raise ConfigError(f"the cluster in {data_dir} names no lock cell nodes")
        self.loop = LoopThread()
        self.client = LockClient(self.layout.nodes, principal=self.layout.principal, key=self.layout.key,
                                 runtime=RuntimeConfig(insecure=self.layout.cluster_secret is None))
        self.epoch = 0
        self.jobs_run = 0

    async def _elect(self) -> int:
        await self.client.open()
        await self.client.ensure(self.root, directory=True)
        await self.client.ensure(f"{self.root}/jobs", directory=True)
        sequencer = await self.client.elect(f"{self.root}/master", self.identity)
        asyncio.get_running_loop().create_task(self._watch_session())
        return sequencer.lock_generation

    async def _watch_session(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.client.state in (SessionState.EXPIRED, SessionState.CLOSED):
                # Fail-stop: this process can no longer know it is the master.
                log.error("master %s: lock-service session %s: exiting", self.identity,
                          self.client.state.value)
                os._exit(3)

    def paused(self) -> bool:
        """True while the session is in jeopardy (Chubby 2.8): the master then
        schedules nothing. Its local lease ended before the cell's, and the cell
        elects no one else before its own lease and the lock-delay are over, so
        two masters never schedule at once; back in the safe state, it goes on."""
        return self.client.state is not SessionState.SAFE

    def serve(self, *, jobs_max: int | None = None) -> None:
        """Block until elected, then run submitted jobs (forever, or ``jobs_max``)."""
        self.epoch = self.loop.call(self._elect())
        log.info("master %s elected (epoch %d)", self.identity, self.epoch)
        if self.on_leader is not None:
            self.on_leader(self.epoch)
        while jobs_max is None or self.jobs_run < jobs_max:
            pending = self.loop.call(self._pending())
            if not pending:
                time.sleep(POLL_S)
                continue
            self.run_one(pending[0])
            self.jobs_run += 1

    async def _pending(self) -> list[str]:
        pending = []
        for job_id in sorted(await self.client.list(f"{self.root}/jobs")):
            names = await self.client.list(f"{self.root}/jobs/{job_id}")
            if "spec" in names and "outcome" not in names:
                pending.append(job_id)
        return pending

    async def _begin(self, job_dir: str) -> tuple[JobSpec, list[str], LockCheckpoint]:
        spec = decode((await self.client.read(f"{job_dir}/spec", cache=False)).contents)
        if not isinstance(spec, JobSpec):
            raise JobError(f"{job_dir}/spec is not a job spec")
        epochs: list[str] = []
        with contextlib.suppress(LockError):
            text = (await self.client.read(f"{job_dir}/started", cache=False)).contents.decode()
            epochs = [e for e in text.split(",") if e]
        epochs.append(str(self.epoch))
        await put(self.client, f"{job_dir}/started", ",".join(epochs).encode())
        checkpoint = await LockCheckpoint.load(self.client, job_dir)
        return spec, epochs, checkpoint

    async def _watch_kill(self, job_dir: str, flag: list[bool]) -> None:
        while not flag:
            with contextlib.suppress(LockError, SynodError):
                if "kill" in await self.client.list(job_dir):
                    flag.append(True)
                    return
            await asyncio.sleep(POLL_S)

    def run_one(self, job_id: str) -> JobOutcome:
        job_dir = f"{self.root}/jobs/{job_id}"
        spec, epochs, checkpoint = self.loop.call(self._begin(job_dir))
        killed: list[bool] = []
        watcher = asyncio.run_coroutine_threadsafe(self._watch_kill(job_dir, killed), self.loop.loop)
        resume = len(epochs) > 1
        log.info("running %s (%s, %d checkpointed tasks)", job_id, "resumed" if resume else "new",
                 len(checkpoint))
        drivers: list[ClusterDriver] = []

        def keep(driver: object) -> None:
            if isinstance(driver, ClusterDriver):
                drivers.append(driver)
        try:
            target = ClusterTarget.from_dir(self.data_dir)
            job = load_job(spec.job_path, spec.job_class)
            run = ClusterRun(target=target, job_id=spec.job_id, epoch=self.epoch, checkpoint=checkpoint,
                             loop=self.loop, killed=lambda: bool(killed), paused=self.paused)
            result = run_job(job, list(spec.inputs), spec.output, runner="cluster",
                             workers=spec.workers or None, reducers=spec.reducers or None,
                             overwrite=spec.overwrite, config=decode_config(spec.config), cluster=run,
                             resume=resume, seed=spec.seed, on_driver=keep)
            outcome = _outcome_of(result, len(epochs), sum(d.recalled for d in drivers))
        except (JobError, ConfigError) as error:
            detail = error.failure.detail if isinstance(error, JobFailed) and error.failure else ""
            outcome = JobOutcome(ok=False, error=str(error), detail=detail, masters=len(epochs))

        watcher.cancel()

        async def finish() -> None:
            await checkpoint.flush()
            await checkpoint.close()
            await put(self.client, f"{job_dir}/outcome", encode(outcome))
        self.loop.call(finish())
        return outcome

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.call(self.client.close())
        self.loop.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStatus:
    """One job of the cluster, as ``synod mr jobs`` shows it."""

    job_id: str
    #: pending (no master took it yet), running, done, failed, or killing.
    state: str
    output: str
    masters: int
    maps_checkpointed: int
    reduces_checkpointed: int
    error: str = ""


async def _job_status(client: LockClient, job_dir: str, job_id: str) -> JobStatus | None:
    names = await client.list(job_dir)
    if "spec" not in names:
        return None
    spec = decode((await client.read(f"{job_dir}/spec")).contents)
    if not isinstance(spec, JobSpec):
        return None
    masters = 0
    if "started" in names:
        masters = len([e for e in (await client.read(f"{job_dir}/started", cache=False)).contents.split(b",") if e])
    state, error = ("running" if masters else "pending"), ""
    if "kill" in names:
        state = "killing"
    if "outcome" in names:
        outcome = decode((await client.read(f"{job_dir}/outcome")).contents)
        if isinstance(outcome, JobOutcome):
            state, error = ("done", "") if outcome.ok else ("failed", outcome.error)
    maps = sum(1 for n in names if n.startswith("s") and "-m" in n)
    reduces = sum(1 for n in names if n.startswith("s") and "-r" in n)
    return JobStatus(job_id=job_id, state=state, output=spec.output, masters=masters,
                     maps_checkpointed=maps, reduces_checkpointed=reduces, error=error)


def _with_client(data_dir: Path, work: Callable[[LockClient], Coroutine[Any, Any, T]], *,
                 open_timeout_s: float | None = None) -> T:
    layout = read_layout(data_dir)
    if not layout.nodes:
        raise ConfigError(f"the cluster in {data_dir} names no lock cell nodes")

    async def session() -> T:
        client = LockClient(layout.nodes, principal=layout.principal, key=layout.key,
                            runtime=RuntimeConfig(insecure=layout.cluster_secret is None))
        try:
            await asyncio.wait_for(client.open(), open_timeout_s)
            return await work(client)
        finally:
            await client.close()
    loop = LoopThread()
    try:
        return loop.call(session())
    finally:
        loop.close()


def list_jobs(data_dir: Path, *, root: str = ROOT) -> list[JobStatus]:
    """Every job submitted to the cluster's masters, oldest first."""
    async def work(client: LockClient) -> list[JobStatus]:
        try:
            job_ids = sorted(await client.list(f"{root}/jobs"))
        except LockError:
            return []
        found = []
        for job_id in job_ids:
            with contextlib.suppress(LockError, RemoteProtocolError):
                status = await _job_status(client, f"{root}/jobs/{job_id}", job_id)
                if status is not None:
                    found.append(status)
        return found
    return _with_client(data_dir, work)


async def _any_listening(nodes: dict[str, tuple[str, int]], timeout_s: float = 1.0) -> bool:
    """Whether any of ``nodes`` accepts a TCP connection (closed at once)."""
    for address in nodes.values():
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout_s)
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


def kill_job(data_dir: Path, job_id: str, *, root: str = ROOT) -> None:
    """Ask the master to kill ``job_id``: it stops scheduling it, and the job
    fails with no output left behind."""
    async def work(client: LockClient) -> None:
        job_dir = f"{root}/jobs/{job_id}"
        try:
            names = await client.list(job_dir)
        except LockError:
            raise JobError(f"no job {job_id} in the cluster") from None
        if "outcome" in names:
            raise JobError(f"job {job_id} is already over")
        with contextlib.suppress(ExistsError):
            await client.create(f"{job_dir}/kill")
    _with_client(data_dir, work)


def master_elected(data_dir: Path, *, root: str = ROOT, timeout_s: float = 5.0) -> str | None:
    """The identity of the elected master of the cluster in ``data_dir``; None
    when nobody holds the election lock or no lock cell answers in time."""
    layout = read_layout(data_dir)
    if not layout.nodes or not LoopThread.run_once(_any_listening(layout.nodes)):
        return None  # no lock cell runs: do not wait for a session that cannot open

    async def ask(client: LockClient) -> str | None:
        return await client.leader(f"{root}/master")

    async def bounded(client: LockClient) -> str | None:
        return await asyncio.wait_for(ask(client), timeout_s)
    try:
        return _with_client(data_dir, bounded, open_timeout_s=timeout_s)
    except (LockError, SynodError, OSError, TimeoutError):
        return None


def submit_job(data_dir: Path, job_path: str | Path, inputs: list[str | Path], output: str | Path, *,
               job_class: str = "", workers: int | None = None, reducers: int | None = None,
               config: MapReduceConfig | None = None, overwrite: bool = False, seed: int = 0,
               timeout_s: float | None = None, root: str = ROOT,
               on_submitted: Callable[[str], None] | None = None) -> JobOutcome:
    """Submit a job to the elected master and wait for its outcome (which says
    ``ok`` or, with ``error`` and ``detail``, why not). Paths must be on storage
    the master and every worker reach; they are made absolute here."""
    layout = read_layout(data_dir)
    input_files(inputs)  # fail fast on missing inputs, with the runner's message
    out = Path(output).resolve()
    if out.exists() and not overwrite:
        from synod.mapreduce.runner import OutputExistsError
        raise OutputExistsError(f"output directory {out} already exists (use --overwrite)")
    job = load_job(job_path, job_class or None)
    if workers is None:
        from synod.mapreduce.cluster_worker import announced_seeds
        workers = max(1, len(announced_seeds(data_dir)))
    spec = JobSpec(job_id=f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}",
                   job_path=str(Path(job_path).resolve()), job_class=job.__name__,
                   inputs=tuple(str(Path(p).resolve()) for p in inputs), output=str(out),
                   reducers=reducers or 0, workers=workers,
                   config=encode_config(config or MapReduceConfig.local()), overwrite=overwrite, seed=seed)
    job_dir = f"{root}/jobs/{spec.job_id}"

    async def submit_and_wait() -> JobOutcome:
        async with LockClient(layout.nodes, principal=layout.principal, key=layout.key,
                              runtime=RuntimeConfig(insecure=layout.cluster_secret is None)) as client:
            await client.ensure(root, directory=True)
            await client.ensure(f"{root}/jobs", directory=True)
            await client.create(job_dir, directory=True)
            await client.create(f"{job_dir}/spec", encode(spec))
            if on_submitted is not None:
                on_submitted(spec.job_id)
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while deadline is None or time.monotonic() < deadline:
                if "outcome" in await client.list(job_dir):
                    data = (await client.read(f"{job_dir}/outcome", cache=False)).contents
                    try:
                        outcome = decode(data)
                    except RemoteProtocolError as error:
                        raise JobError(f"{job_dir}/outcome cannot be read (another synod version?): "
                                       f"{error}") from None
                    if not isinstance(outcome, JobOutcome):
                        raise JobError(f"{job_dir}/outcome is not a job outcome")
                    return outcome
                await asyncio.sleep(POLL_S)
            raise JobError(f"job {spec.job_id} did not finish within {timeout_s} s")

    loop = LoopThread()
    try:
        return loop.call(submit_and_wait())
    finally:
        loop.close()


def run_master_process(data_dir: Path, *, identity: str) -> None:
    """``synod mr master``: prints ``LEADER <identity> <epoch> <pid>`` once elected,
    then runs jobs until SIGTERM/SIGINT."""
    service = MasterService(data_dir, identity=identity,
                            on_leader=lambda epoch: print(f"LEADER {identity} {epoch} {os.getpid()}",
                                                          flush=True))
    print(f"STANDBY {identity} {os.getpid()}", flush=True)
    try:
        service.serve()
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
