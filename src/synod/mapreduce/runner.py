"""Runners: drive the master core and the workers of a job, on this machine.

``run_job(JobClass, inputs, output_dir, runner="local"|"inline", ...)`` is the one
entry point (the CLI calls it). Both runners drive the same sans-IO ``Master``, one
per step, and the same task code (``synod.mapreduce.worker``):

* ``inline`` runs every attempt in this process, one after the other (the paper's
  "local execution" for debugging: breakpoints and prints work);
* ``local`` forks N worker processes (N = cores by default) and talks to them over
  pipes with msgpack-encoded messages. A worker that dies (SIGKILL, OOM) is
  noticed from its process sentinel, reported to the master as ``WorkerLost`` and
  replaced, up to ``worker_restarts_max`` times.

The job's output directory is created by the run and appears complete only at the
end: each ``part-NNNNN`` is renamed into place when its reduce task completes, and
``_SUCCESS`` is written last. If the job fails, the directory is removed, so no
partial output is ever left as if it were complete. Scratch data (map output,
spills, intermediate steps) lives under ``OUTPUT/_temporary`` and is removed at the
end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import multiprocessing
import os
import random
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import msgpack

from synod.codec.registry import decode, encode
from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Effects,
    Persist,
    Recovered,
    Send,
    SetTimer,
)
from synod.core.errors import SynodError, invariant
from synod.core.ids import NodeId
from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.formats import InputFormat
from synod.mapreduce.job import Job
from synod.mapreduce.master import Master, MasterStatistics, TaskFailure
from synod.mapreduce.messages import (
    AssignMap,
    AssignReduce,
    InputSplit,
    Shutdown,
    SkipRecord,
    WorkerLost,
    WorkerReady,
)
from synod.mapreduce.worker import run_attempt, worker_main

DRIVER = NodeId("driver")
SUCCESS_MARKER = "_SUCCESS"
TEMPORARY_DIR = "_temporary"
#: Default R is chosen so that input bytes x this fit R reduce budgets.
REDUCE_BUDGET_SPARE = 1.25
#: Records read per sampled split when building a partition plan.
_SAMPLE_SPLITS_MAX = 20


class JobError(SynodError):
    """A job could not run or did not complete; the message is for people."""


class JobLoadError(JobError):
    """The job file does not import or defines no usable ``Job`` subclass."""


class InputError(JobError):
    """An input path does not exist or cannot be read."""


class OutputExistsError(JobError):
    """The output directory exists and ``overwrite`` was not given."""


class JobFailed(JobError):
    """A task failed too often; ``failure`` says which, where, and why."""

    def __init__(self, message: str, failure: TaskFailure | None = None) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProgress:
    """A snapshot for progress displays."""

    step: int
    steps: int
    maps_total: int
    maps_completed: int
    reduces_total: int
    reduces_completed: int
    records_in: int
    bytes_in: int
    input_bytes_total: int
    elapsed_s: float
    workers_alive: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    output_dir: Path
    parts: tuple[Path, ...]
    counters: dict[tuple[str, str], int]
    skipped: tuple[SkipRecord, ...]
    records_in: int
    bytes_in: int
    records_out: int
    elapsed_s: float
    steps: tuple[MasterStatistics, ...] = field(default=())


ProgressCallback = Callable[[JobProgress], None]


# ------------------------------------------------------------------ job files


def load_job(path: str | Path, class_name: str | None = None) -> type[Job]:
    """Import a job file and return its ``Job`` subclass (the only one it defines,
    or the one named ``class_name``)."""
    path = Path(path)
    if not path.is_file():
        raise JobLoadError(f"job file {path} does not exist")
    module_name = f"synod_job_{path.stem}_{abs(hash(str(path.resolve()))):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise JobLoadError(f"job file {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(module_name, None)
        if isinstance(error, KeyboardInterrupt):
            raise
        where = ""
        if isinstance(error, SyntaxError):
            where = f" (line {error.lineno})"
        raise JobLoadError(
            f"job file {path} does not import{where}: {type(error).__name__}: {error}"
        ) from error
    found = [
        value for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Job) and value is not Job
        and value.__module__ == module_name
    ]
    if class_name is not None:
        found = [cls for cls in found if cls.__name__ == class_name]
        if not found:
            raise JobLoadError(f"job file {path} defines no Job subclass named {class_name}")
    if not found:
        raise JobLoadError(f"job file {path} defines no subclass of synod.mapreduce.Job")
    if len(found) > 1:
        names = ", ".join(sorted(cls.__name__ for cls in found))
        raise JobLoadError(f"job file {path} defines several jobs ({names}); name one")
    return found[0]


# --------------------------------------------------------------------- inputs


def input_files(inputs: Sequence[str | Path]) -> list[tuple[str, int]]:
    """Expand inputs (files, or directories of files) to (path, size), checking
    that each exists and is readable."""
    if not inputs:
        raise InputError("no input paths given")
    files: list[tuple[str, int]] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"input path {path} does not exist")
        candidates = sorted(
            p for p in path.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))
        ) if path.is_dir() else [path]
        for candidate in candidates:
            if not os.access(candidate, os.R_OK):
                raise InputError(f"input file {candidate} is not readable (permission denied)")
            try:
                with candidate.open("rb"):
                    pass
            except OSError as error:
                raise InputError(f"input file {candidate} cannot be opened: {error.strerror}") from None
            files.append((str(candidate), candidate.stat().st_size))
    if not files:
        raise InputError("the input directories hold no files")
    return files


def plan_splits(files: list[tuple[str, int]], reader: InputFormat, *, workers: int,
                config: MapReduceConfig) -> tuple[tuple[InputSplit, ...], ...]:
    """Cut the input into M byte-range splits (whole files when not splittable)."""
    total = sum(size for _, size in files)
    target = total / max(1, workers * config.splits_per_worker)
    # Rounded up, so the input is cut into workers * splits_per_worker splits, not
    # one more (a last wave in which one worker runs and the others wait).
    split_bytes = int(min(config.split_bytes_max, max(config.split_bytes_min, math.ceil(target))))
    splits: list[tuple[InputSplit, ...]] = []
    for path, size in files:
        if size == 0:
            continue
        pieces = max(1, math.ceil(size / split_bytes)) if reader.splittable else 1
        for index in range(pieces):
            start = size * index // pieces
            end = size * (index + 1) // pieces
            splits.append((InputSplit(path=path, start=start, end=end),))
    if not splits:
        # Every input file is empty: one empty task still runs the hooks.
        splits.append((InputSplit(path=files[0][0], start=0, end=0),))
    return tuple(splits)


def sample_records(reader: InputFormat, splits: Sequence[tuple[InputSplit, ...]],
                   count: int) -> list[tuple[Any, Any]]:
    """About ``count`` input records from splits spread over the input."""
    chosen = list(splits)
    if len(chosen) > _SAMPLE_SPLITS_MAX:
        stride = len(chosen) / _SAMPLE_SPLITS_MAX
        chosen = [chosen[int(i * stride)] for i in range(_SAMPLE_SPLITS_MAX)]
    quota = max(1, math.ceil(count / len(chosen)))
    records: list[tuple[Any, Any]] = []
    for group in chosen:
        taken = 0
        for split in group:
            for block in reader.read(split.path, split.start, split.end):
                keys = block.keys if block.keys is not None else [None] * len(block.values)
                for key, value in zip(keys, block.values):
                    records.append((key, value))
                    taken += 1
                    if taken >= quota:
                        break
                if taken >= quota:
                    break
            if taken >= quota:
                break
    return records


# -------------------------------------------------------------------- drivers


class _Driver:
    """What a runner does per step: drive ``master`` until it finishes."""

    def run_step(self, master: Master, report: Callable[[MasterStatistics], None]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InlineDriver(_Driver):
    """Every attempt runs here, synchronously, in submission order."""

    WORKER = NodeId("inline")

    def __init__(self, job: type[Job], scratch_dir: str, config: MapReduceConfig) -> None:
        self._job = job
        self._scratch = scratch_dir
        self._config = config
        os.makedirs(scratch_dir, exist_ok=True)

    def run_step(self, master: Master, report: Callable[[MasterStatistics], None]) -> None:
        queue: deque[Any] = deque(master.start(_now_ms(), Recovered()))
        queue.extend(master.on_message(_now_ms(), self.WORKER, WorkerReady()))
        while queue and not master.finished:
            effect = queue.popleft()
            match effect:
                case Send(message=AssignMap() | AssignReduce() as assign):
                    result = run_attempt(self._job, assign, scratch_dir=self._scratch, config=self._config)
                    queue.extend(master.on_message(_now_ms(), self.WORKER, result))
                    master.check_invariants()
                    report(master.statistics())
                case Send() | SetTimer() | CancelTimer():
                    continue  # one worker: no backups, no cancels worth acting on
                case Persist() | ClientResult():
                    invariant(False, "the master core returns no Persist or ClientResult")
        invariant(master.finished, "inline step stalled with no work assigned")


class LocalDriver(_Driver):
    """N forked worker processes, msgpack messages over pipes."""

    def __init__(self, job: type[Job], workers: int, scratch_dir: str, config: MapReduceConfig) -> None:
        self._job = job
        self._scratch = scratch_dir
        self._config = config
        self._context = multiprocessing.get_context("fork")
        self._processes: dict[NodeId, tuple[BaseProcess, Connection]] = {}
        self._ready: set[NodeId] = set()
        self._spawned = 0
        self._restarts = 0
        for _ in range(workers):
            self._spawn()

    def worker_pids(self) -> dict[NodeId, int]:
        return {w: p.pid for w, (p, _) in self._processes.items() if p.pid is not None}

    def _spawn(self) -> NodeId:
        self._spawned += 1
        worker = NodeId(f"w{self._spawned}")
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main, name=f"synod-mr-{worker}", daemon=True,
            args=(child_end, self._job, worker, os.path.join(self._scratch, worker), self._config),
        )
        process.start()
        child_end.close()
        self._processes[worker] = (process, parent_end)
        return worker

    def _send(self, worker: NodeId, message: Any) -> bool:
        entry = self._processes.get(worker)
        if entry is None:
            return False
        try:
            entry[1].send_bytes(encode(message))
        except OSError:
            return False
        return True

    def _lose(self, master: Master, worker: NodeId) -> Effects:
        entry = self._processes.pop(worker, None)
        if entry is None:
            return []
        process, conn = entry
        conn.close()
        process.join(timeout=1.0)
        self._ready.discard(worker)
        effects = master.on_message(_now_ms(), DRIVER, WorkerLost(worker=worker))
        if self._restarts < self._config.worker_restarts_max:
            self._restarts += 1
            self._spawn()
        elif not self._processes:
            raise JobFailed(
                f"every worker died and the {self._config.worker_restarts_max} restarts are used up"
            )
        return effects

    def run_step(self, master: Master, report: Callable[[MasterStatistics], None]) -> None:
        timers: dict[str, float] = {}
        effects = master.start(_now_ms(), Recovered())
        for worker in sorted(self._ready):
            effects += master.on_message(_now_ms(), worker, WorkerReady())
        last_report = 0.0
        while True:
            pending: deque[Any] = deque(effects)
            effects = []
            while pending:
                effect = pending.popleft()
                match effect:
                    case Send(to=to, message=message):
                        if not self._send(to, message) and to in self._processes:
                            effects += self._lose(master, to)
                    case SetTimer(key=key, delay_ms=delay_ms):
                        timers[key] = _now_ms() + delay_ms
                    case CancelTimer(key=key):
                        timers.pop(key, None)
                    case Persist() | ClientResult():
                        invariant(False, "the master core returns no Persist or ClientResult")
            if effects:
                continue
            master.check_invariants()
            now = _now_ms()
            if now - last_report >= 100.0 or master.finished:
                report(master.statistics())
                last_report = now
            if master.finished:
                return
            timeout_s = max(0.0, (min(timers.values()) - now) / 1000.0) if timers else 0.5
            by_object: dict[Any, tuple[NodeId, bool]] = {}
            for worker, (process, conn) in self._processes.items():
                by_object[conn] = (worker, True)
                by_object[process.sentinel] = (worker, False)
            for ready in wait(list(by_object), timeout=min(timeout_s, 0.5)):
                worker, is_conn = by_object[ready]
                if worker not in self._processes:
                    continue
                if not is_conn:
                    # Drain what the worker said before it died, then report it lost.
                    effects += self._drain(master, worker)
                    effects += self._lose(master, worker)
                    continue
                try:
                    data = self._processes[worker][1].recv_bytes()
                except (EOFError, OSError):
                    effects += self._lose(master, worker)
                    continue
                effects += self._deliver(master, worker, data)
            now = _now_ms()
            for key, due in sorted(timers.items()):
                if due <= now:
                    del timers[key]
                    effects += master.on_timer(now, key)

    def _drain(self, master: Master, worker: NodeId) -> Effects:
        effects: Effects = []
        conn = self._processes[worker][1]
        with contextlib.suppress(EOFError, OSError):
            while conn.poll():
                effects += self._deliver(master, worker, conn.recv_bytes())
        return effects

    def _deliver(self, master: Master, worker: NodeId, data: bytes) -> Effects:
        message = decode(data)
        if isinstance(message, WorkerReady):
            self._ready.add(worker)
        return master.on_message(_now_ms(), worker, message)

    def close(self) -> None:
        for worker in list(self._processes):
            self._send(worker, Shutdown())
        deadline = time.monotonic() + 2.0
        for process, conn in self._processes.values():
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(timeout=1.0)
            conn.close()
        self._processes.clear()


def _now_ms() -> float:
    return time.monotonic() * 1000.0


# ----------------------------------------------------------------------- jobs


def run_job(
    job: type[Job],
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    runner: str = "local",
    workers: int | None = None,
    reducers: int | None = None,
    overwrite: bool = False,
    config: MapReduceConfig | None = None,
    progress: ProgressCallback | None = None,
    seed: int = 0,
    on_driver: Callable[[_Driver], None] | None = None,
    cluster: Any = None,
    resume: bool = False,
) -> JobResult:
    """Run ``job`` over ``inputs`` into ``output_dir``; see the module comment.
    ``runner="cluster"`` needs ``cluster``, a ``synod.mapreduce.cluster.ClusterTarget``
    (or ``ClusterRun``). ``resume``: a new cluster master takes over the job, so
    an existing output directory is the previous master's work, kept as it is."""
    config = config or MapReduceConfig.local()
    if runner not in ("inline", "local", "cluster"):
        raise JobError(f"unknown runner {runner!r} (inline, local or cluster)")
    if runner == "cluster" and cluster is None:
        raise JobError("the cluster runner needs the cluster to submit to (--cluster DIR)")
    if workers is not None and workers < 1:
        raise JobError("workers must be at least 1")
    if reducers is not None and reducers < 1:
        raise JobError("reducers must be at least 1")
    worker_count = 1 if runner == "inline" else (workers or os.cpu_count() or 1)
    files = input_files(inputs)
    # By default one reducer per worker, and enough that each reducer's share of an
    # input-sized map output fits its memory budget (a sort's output is its input),
    # with a quarter to spare: encoded map output is a little larger than its input
    # (msgpack and frame headers: 1 GB of 100-byte records is 1.06 GB of runs) and
    # sampled range partitions differ by a few percent. Without it every bucket of
    # a sort lands just over the budget and is merged in Python instead of sorted
    # in memory (+25% CPU for the whole job).
    input_bytes = sum(size for _, size in files)
    default_reducers = max(worker_count, math.ceil(input_bytes * REDUCE_BUDGET_SPARE
                                                    / config.reduce_memory_bytes_max))
    reducer_count = reducers or job.REDUCERS or config.reducers or default_reducers
    output = Path(output_dir)
    work = output / TEMPORARY_DIR
    resuming = resume and output.is_dir() and not output.is_symlink()
    if resuming:
        work.mkdir(exist_ok=True)  # the previous master's output so far, kept
    elif output.exists() or output.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"output directory {output} already exists (use --overwrite)")
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
        else:
            output.unlink()
    if not resuming:
        output.mkdir(parents=True)
        work.mkdir()
    driver: _Driver | None = None
    try:
        if runner == "inline":
            driver = InlineDriver(job, str(work / "inline"), config)
        elif runner == "cluster":
            # Imported here: the cluster runner imports this module.
            from synod.mapreduce.cluster import ClusterDriver

            job_file = getattr(sys.modules.get(job.__module__), "__file__", None)
            if job_file is None:
                raise JobLoadError(f"{job.__name__} was not loaded from a job file: workers cannot import it")
            driver = ClusterDriver(job_file, job.__name__, cluster, config)
        else:
            driver = LocalDriver(job, worker_count, str(work), config)
        if on_driver is not None:
            on_driver(driver)
        result = _run_steps(job, files, output, work, driver, worker_count=worker_count,
                            reducers=reducer_count, config=config, progress=progress, seed=seed)
    except BaseException:
        if driver is not None:
            driver.close()
        shutil.rmtree(output, ignore_errors=True)
        raise
    driver.close()
    shutil.rmtree(work, ignore_errors=True)
    (output / SUCCESS_MARKER).write_bytes(b"")
    return result


def _run_steps(job: type[Job], files: list[tuple[str, int]], output: Path, work: Path,
               driver: _Driver, *, worker_count: int, reducers: int, config: MapReduceConfig,
               progress: ProgressCallback | None, seed: int) -> JobResult:
    started = time.monotonic()
    try:
        steps = job().steps()
    except Exception as error:
        raise JobLoadError(f"{job.__name__}.steps() failed: {type(error).__name__}: {error}") from error
    if not steps:
        raise JobLoadError(f"{job.__name__}.steps() returned no steps")
    reader = job.INPUT
    splits = plan_splits(files, reader, workers=worker_count, config=config)
    input_bytes = sum(size for _, size in files)
    counters: dict[tuple[str, str], int] = {}
    skipped: list[SkipRecord] = []
    statistics: list[MasterStatistics] = []
    records_in = bytes_in = 0
    parts: tuple[str, ...] = ()
    next_attempt = 1
    for index, step in enumerate(steps):
        final = index == len(steps) - 1
        step_dir = output if final else work / f"step-{index}"
        plan = b""
        if index == 0 and step.sampler is not None and job.SAMPLE_RECORDS > 0:
            plan = _make_plan(step.sampler, sample_records(reader, splits, job.SAMPLE_RECORDS), reducers)
        if index > 0:
            splits = tuple((InputSplit(path=p, start=0, end=os.path.getsize(p)),) for p in parts)
        master = Master(config=config, rng=random.Random(f"{seed}/{index}"), step=index,
                        splits=splits, reducers=reducers, skip_bad_records=job.SKIP_BAD_RECORDS,
                        plan=plan, output_dir=str(step_dir), first_attempt=next_attempt)

        def report(stats: MasterStatistics, index: int = index) -> None:
            if progress is not None:
                progress(JobProgress(
                    step=index, steps=len(steps), maps_total=stats.maps_total,
                    maps_completed=stats.maps_completed, reduces_total=stats.reduces_total,
                    reduces_completed=stats.reduces_completed, records_in=stats.records_in,
                    bytes_in=stats.bytes_in, input_bytes_total=input_bytes,
                    elapsed_s=time.monotonic() - started, workers_alive=stats.workers_alive,
                ))

        driver.run_step(master, report)
        failure = master.failure
        if failure is not None:
            raise JobFailed(f"step {index + 1} of {len(steps)}: {failure.describe()}", failure)
        for key, value in master.counters().items():
            counters[key] = counters.get(key, 0) + value
        skipped.extend(master.skipped_records())
        stats = master.statistics()
        statistics.append(stats)
        if index == 0:
            records_in, bytes_in = stats.records_in, stats.bytes_in
        next_attempt = master.next_attempt
        if index > 0:
            shutil.rmtree(work / f"step-{index - 1}", ignore_errors=True)
        for scratch in work.glob(f"*/s{index}-*"):
            # This step's map output and spills: no later step reads them.
            scratch.unlink(missing_ok=True)
        parts = master.output_parts()
    return JobResult(
        output_dir=output, parts=tuple(Path(p) for p in parts), counters=counters,
        skipped=tuple(skipped), records_in=records_in, bytes_in=bytes_in,
        records_out=statistics[-1].records_out, elapsed_s=time.monotonic() - started,
        steps=tuple(statistics),
    )


def _make_plan(sampler: Callable[[list[tuple[Any, Any]], int], Any],
               records: list[tuple[Any, Any]], reducers: int) -> bytes:
    try:
        plan = sampler(records, reducers)
    except Exception as error:
        raise JobFailed(f"sample_partitions raised: {type(error).__name__}: {error}") from error
    try:
        packed: bytes = msgpack.packb(plan, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as error:
        raise JobFailed(f"the partition plan cannot be serialized with msgpack: {error}") from None
    return packed
