"""The MapReduce master: a sans-IO scheduler core for one step of a job.

Theory of operation
-------------------
This follows Dean & Ghemawat, *MapReduce* (OSDI 2004), section 3. A step has M map
tasks (one per input split) and R reduce tasks (one per bucket). Each task moves
through the lifecycle in ``TRANSITIONS`` -- IDLE, IN_PROGRESS, COMPLETED, FAILED --
and a move not in the table is a bug (``IllegalTransition``).

* **Assignment** (3.1). Workers announce themselves with ``WorkerReady`` and run
  one attempt at a time. Whenever a worker is free, the master gives it an idle map
  task; once *every* map task is COMPLETED, idle reduce tasks. Each assignment is a
  new *attempt* with a fresh number; a task may have several live attempts (backups).
* **Commit** (3.3). The first ``TaskCompleted`` of a live attempt of an IN_PROGRESS
  task commits that attempt; every later completion of the task (a backup, a
  duplicated message, a cancelled attempt) is ignored and counted. A reduce
  attempt is given, at assignment, one ``MapOutputRef`` per map task: the bucket of
  that map task's *one committed attempt*. Mappers may be non-deterministic, so
  two attempts of a map task may differ; binding every reducer to the same attempt
  is what makes the output the output of *one* execution.
* **Worker failure** (3.3). On ``WorkerLost`` the dead worker's running attempt is
  abandoned (its task goes back to IDLE unless another attempt lives), and its
  *completed map tasks* go back to IDLE too, because their output lived on that
  worker's disk -- unless every reduce task has already committed. Reduce attempts
  bound to lost map output are abandoned and re-assigned, with new bindings, once
  the map task has been re-executed. Completed reduce tasks are never re-executed:
  their output is on shared storage.
* **Fetch failures** (3.3; Hadoop's shuffle). A worker may live while its map
  output does not (a lost or corrupt file, a disk error, a network path that
  fails although gossip still sees the worker). A reduce attempt that cannot read
  a bucket fails with ``TaskFailed.lost_map_attempts``; after
  ``fetch_failures_max`` such reports against a committed map attempt, the master
  treats its output as lost exactly as on ``WorkerLost``: the map task is
  re-executed and reduce attempts bound to it are abandoned. The reporting reduce
  attempt does not count against its own task (the fault is the map output's);
  each loss of output counts against the *map* task's attempts, so output that can
  never be read fails the step instead of looping.
* **Backup tasks** (3.6). When the phase is close to completion (at most
  ``backup_remaining_fraction`` of its tasks running and none idle), a free worker
  gets a second attempt of the longest-running task that has run longer than
  ``backup_after_ms`` and ``backup_slowdown`` times the median duration of the
  phase's completed tasks; whichever attempt finishes first commits.
* **Bad records** (3.7). A ``TaskFailed`` from user code names the record it was
  processing. After ``skip_after_failures`` failures on the same record, and if the
  job allows skipping, later attempts skip it; the skipped records are reported.
  A task that fails ``task_attempts_max`` times fails the step.
* **Counters** (4.9) are taken from committed attempts only, one per task: a
  re-executed task's counters replace the lost attempt's.

The core does no I/O: the driver (the local runner, a test harness, later the
cluster runner) hands it messages and timer firings with ``now_ms`` and carries out
the ``Send``/``SetTimer`` effects it returns.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import assert_never

from synod.codec.registry import Message
from synod.core.effects import CancelTimer, Effects, Recovered, Send, SetTimer
from synod.core.errors import InvariantViolation, invariant
from synod.core.faults import declare_mutant, mutant
from synod.core.ids import NodeId
from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.messages import (
    AssignMap,
    AssignReduce,
    CancelAttempt,
    InputSplit,
    MapOutputRef,
    SkipRecord,
    TaskCompleted,
    TaskFailed,
    TaskKind,
    WorkerLost,
    WorkerReady,
)

ACCEPT_LATE_MAP_COMPLETION = declare_mutant(
    "mapreduce.accept_late_map_completion",
    "the master accepts a second completion of a map task after reducers started, "
    "re-binding later reducers to a different attempt",
)

TICK_TIMER = "mapreduce.tick"


class TaskState(enum.Enum):
    IDLE = "idle"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class TaskEvent(enum.Enum):
    ASSIGN = "assign"
    BACKUP = "backup"
    COMPLETE = "complete"
    ATTEMPTS_LOST = "attempts_lost"
    FAIL = "fail"
    OUTPUT_LOST = "output_lost"


#: The task lifecycle. ONLY these moves are legal.
TRANSITIONS: dict[tuple[TaskState, TaskEvent], TaskState] = {
    (TaskState.IDLE, TaskEvent.ASSIGN): TaskState.IN_PROGRESS,
    (TaskState.IN_PROGRESS, TaskEvent.BACKUP): TaskState.IN_PROGRESS,
    (TaskState.IN_PROGRESS, TaskEvent.COMPLETE): TaskState.COMPLETED,
    (TaskState.IN_PROGRESS, TaskEvent.ATTEMPTS_LOST): TaskState.IDLE,
    (TaskState.IN_PROGRESS, TaskEvent.FAIL): TaskState.FAILED,
    (TaskState.COMPLETED, TaskEvent.OUTPUT_LOST): TaskState.IDLE,
    #: A map task whose output was lost (fetch failures) once too often.
    (TaskState.COMPLETED, TaskEvent.FAIL): TaskState.FAILED,
}


class IllegalTransition(InvariantViolation):
    """A task was moved along an edge that is not in ``TRANSITIONS``: a bug."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFailure:
    """Why a step failed: the task, its last attempt and the record at fault."""

    kind: TaskKind
    task: int
    attempt: int
    error: str
    detail: str = ""
    path: str = ""
    offset: int = -1

    def describe(self) -> str:
        where = ""
        if self.path:
            where = f" in {self.path}" + (f" at byte offset {self.offset}" if self.offset >= 0 else "")
        return f"{self.kind.name.lower()} task {self.task} (attempt {self.attempt}) failed{where}: {self.error}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterStatistics:
    maps_total: int
    maps_completed: int
    reduces_total: int
    reduces_completed: int
    attempts_started: int
    backups_started: int
    map_reexecutions: int
    duplicates_ignored: int
    stale_ignored: int
    failures: int
    fetch_failures: int
    workers_alive: int
    records_in: int
    bytes_in: int
    records_out: int
    skipped_records: int


@dataclass(slots=True, kw_only=True)
class _Attempt:
    id: int
    kind: TaskKind
    task: int
    worker: NodeId
    started_ms: float
    backup: bool
    live: bool = True
    #: For a reduce attempt: the committed map attempt it was bound to, per map task.
    bindings: tuple[int, ...] = ()


@dataclass(slots=True, kw_only=True)
class _Task:
    kind: TaskKind
    index: int
    state: TaskState = TaskState.IDLE
    live: set[int] = field(default_factory=set)
    failures: int = 0
    committed: _Attempt | None = None
    completion: TaskCompleted | None = None
    bad_records: Counter[tuple[str, int]] = field(default_factory=Counter)
    skip: set[tuple[str, int]] = field(default_factory=set)
    last_failure: TaskFailed | None = None
    #: How long the committed attempt ran, for the straggler threshold.
    duration_ms: float = 0.0
    #: Fetch-failure reports against the committed attempt (a map task only).
    fetch_failures: int = 0


@dataclass(slots=True, kw_only=True)
class _Worker:
    id: NodeId
    alive: bool = True
    attempt: int | None = None


class Master:
    """Schedules one step: M map tasks over ``splits`` and ``reducers`` reduce tasks."""

    def __init__(
        self,
        *,
        config: MapReduceConfig,
        rng: random.Random,
        step: int,
        splits: tuple[tuple[InputSplit, ...], ...],
        reducers: int,
        skip_bad_records: bool = False,
        plan: bytes = b"",
        output_dir: str = "",
        first_attempt: int = 1,
    ) -> None:
        invariant(len(splits) >= 1, "a step has at least one map task")
        invariant(reducers >= 1, "a step has at least one reduce task")
        self._config = config
        self._rng = rng
        self._step = step
        self._splits = splits
        self._reducers = reducers
        self._skip_bad_records = skip_bad_records
        self._plan = plan
        self._output_dir = output_dir
        self._maps = [_Task(kind=TaskKind.MAP, index=i) for i in range(len(splits))]
        self._reduces = [_Task(kind=TaskKind.REDUCE, index=i) for i in range(reducers)]
        self._attempts: dict[int, _Attempt] = {}
        self._workers: dict[NodeId, _Worker] = {}
        # Attempt numbers are unique across the steps of a job (the driver passes
        # the previous step's next_attempt), so a late report from a step that is
        # over can never be taken for an attempt of this one.
        self._next_attempt = first_attempt
        self._reducers_started = False
        self._failure: TaskFailure | None = None
        self._stats: Counter[str] = Counter()

    # ------------------------------------------------------------ driver interface

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        del recovered  # the local runner's master keeps no log; see docs (cluster runner)
        return [SetTimer(key=TICK_TIMER, delay_ms=self._config.scheduler_tick_ms)]

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        if self.finished:
            self._stats["after_finish_ignored"] += 1
            return []
        match message:
            case WorkerReady():
                effects = self._on_worker_ready(source)
            case TaskCompleted():
                effects = self._on_completed(now_ms, source, message)
            case TaskFailed():
                effects = self._on_failed(source, message)
            case WorkerLost():
                effects = self._on_worker_lost(message.worker)
            case _:
                self._stats["unknown_message_ignored"] += 1
                return []
        return effects + self._schedule(now_ms) + self._finish_effects()

    def on_timer(self, now_ms: float, key: str) -> Effects:
        if key != TICK_TIMER or self.finished:
            return []
        effects = self._schedule(now_ms)
        effects.append(SetTimer(key=TICK_TIMER, delay_ms=self._config.scheduler_tick_ms))
        return effects + self._finish_effects()

    # ------------------------------------------------------------------ outcome

    @property
    def succeeded(self) -> bool:
        return all(task.state is TaskState.COMPLETED for task in self._reduces)

    @property
    def failure(self) -> TaskFailure | None:
        return self._failure

    @property
    def finished(self) -> bool:
        return self._failure is not None or self.succeeded

    @property
    def next_attempt(self) -> int:
        return self._next_attempt

    def busy_workers(self) -> int:
        return sum(1 for w in self._workers.values() if w.alive and w.attempt is not None)

    def counters(self) -> dict[tuple[str, str], int]:
        """Counter totals over committed attempts only (one per task)."""
        totals: Counter[tuple[str, str]] = Counter()
        for task in (*self._maps, *self._reduces):
            if task.completion is not None and task.state is TaskState.COMPLETED:
                for counter in task.completion.counters:
                    totals[(counter.group, counter.name)] += counter.value
        return dict(totals)

    def skipped_records(self) -> tuple[SkipRecord, ...]:
        skipped: list[SkipRecord] = []
        for task in self._maps:
            if task.completion is not None and task.state is TaskState.COMPLETED:
                skipped.extend(task.completion.skipped)
        return tuple(sorted(skipped, key=lambda s: (s.path, s.offset)))

    def output_parts(self) -> tuple[str, ...]:
        """The committed part file of every reduce task, in bucket order."""
        invariant(self.succeeded, "output_parts() before the step succeeded")
        parts = []
        for task in self._reduces:
            assert task.completion is not None
            parts.append(task.completion.path)
        return tuple(parts)

    def committed_map_attempts(self) -> tuple[int | None, ...]:
        return tuple(t.committed.id if t.committed else None for t in self._maps)

    def statistics(self) -> MasterStatistics:
        maps_done = [t for t in self._maps if t.state is TaskState.COMPLETED]
        reduces_done = [t for t in self._reduces if t.state is TaskState.COMPLETED]
        return MasterStatistics(
            maps_total=len(self._maps),
            maps_completed=len(maps_done),
            reduces_total=len(self._reduces),
            reduces_completed=len(reduces_done),
            attempts_started=self._stats["attempts_started"],
            backups_started=self._stats["backups_started"],
            map_reexecutions=self._stats["map_reexecutions"],
            duplicates_ignored=self._stats["duplicates_ignored"],
            stale_ignored=self._stats["stale_ignored"],
            failures=self._stats["failures"],
            fetch_failures=self._stats["fetch_failures"],
            workers_alive=sum(1 for w in self._workers.values() if w.alive),
            records_in=sum(t.completion.records_in for t in maps_done if t.completion),
            bytes_in=sum(t.completion.bytes_in for t in maps_done if t.completion),
            records_out=sum(t.completion.records_out for t in reduces_done if t.completion),
            skipped_records=sum(len(t.completion.skipped) for t in maps_done if t.completion),
        )

    # ------------------------------------------------------------------ handlers

    def _on_worker_ready(self, source: NodeId) -> Effects:
        if source in self._workers:
            # A duplicate hello, or a dead worker's id coming back: ids are not reused.
            self._stats["stale_ignored"] += 1
            return []
        if len(self._workers) >= self._config.workers_max:
            self._stats["workers_over_max_ignored"] += 1
            return []
        self._workers[source] = _Worker(id=source)
        return []

    def _release_worker(self, source: NodeId, attempt_id: int) -> None:
        worker = self._workers.get(source)
        if worker is not None and worker.attempt == attempt_id:
            worker.attempt = None

    def _on_completed(self, now_ms: float, source: NodeId, done: TaskCompleted) -> Effects:
        attempt = self._attempts.get(done.attempt)
        if attempt is None or attempt.worker != source or attempt.kind != done.kind or attempt.task != done.task:
            self._stats["stale_ignored"] += 1
            return []
        self._release_worker(source, attempt.id)
        task = self._task(attempt.kind, attempt.task)
        if self._is_late_map_completion(task, attempt):
            # The planted bug: a second completion after reducers started re-binds
            # the map task, so reducers assigned from now on read another attempt.
            task.committed = attempt
            task.completion = done
            self._stats["duplicates_accepted"] += 1
            return []
        if not attempt.live or task.state is not TaskState.IN_PROGRESS:
            # Paper 3.3: "If the master receives a completion message for an already
            # completed map task, it ignores the message."
            self._stats["duplicates_ignored"] += 1
            return []
        if attempt.kind is TaskKind.MAP and (
            len(done.offsets) != self._reducers or len(done.lengths) != self._reducers
        ):
            self._stats["malformed_completion_ignored"] += 1
            return self._attempt_failed(task, attempt, None)
        effects: Effects = []
        attempt.live = False
        task.live.discard(attempt.id)
        for other_id in sorted(task.live):
            other = self._attempts[other_id]
            other.live = False
            effects.append(Send(to=other.worker, message=CancelAttempt(attempt=other_id)))
        task.live.clear()
        task.committed = attempt
        task.completion = done
        task.duration_ms = now_ms - attempt.started_ms
        self._move(task, TaskEvent.COMPLETE)
        return effects

    def _is_late_map_completion(self, task: _Task, attempt: _Attempt) -> bool:
        return (
            mutant(ACCEPT_LATE_MAP_COMPLETION)
            and attempt.kind is TaskKind.MAP
            and task.state is TaskState.COMPLETED
            and self._reducers_started
            and task.committed is not None
            and task.committed.id != attempt.id
        )

    def _on_failed(self, source: NodeId, failed: TaskFailed) -> Effects:
        attempt = self._attempts.get(failed.attempt)
        if attempt is None or attempt.worker != source:
            self._stats["stale_ignored"] += 1
            return []
        self._release_worker(source, attempt.id)
        task = self._task(attempt.kind, attempt.task)
        if not attempt.live:
            self._stats["stale_ignored"] += 1
            return []
        if failed.lost_map_attempts and attempt.kind is TaskKind.REDUCE:
            return self._on_fetch_failed(task, attempt, failed)
        self._stats["failures"] += 1
        if failed.user_error and failed.offset >= 0 and attempt.kind is TaskKind.MAP:
            record = (failed.path, failed.offset)
            task.bad_records[record] += 1
            if (
                self._skip_bad_records
                and record not in task.skip
                and task.bad_records[record] >= self._config.skip_after_failures
                and len(task.skip) < self._config.skipped_records_max
            ):
                # Skipping is progress: the failures this record caused (this one
                # included) do not use up the task's attempts; skipped_records_max
                # bounds the retries instead.
                task.skip.add(record)
                task.failures -= task.bad_records[record]
        return self._attempt_failed(task, attempt, failed)

    def _attempt_failed(self, task: _Task, attempt: _Attempt, failed: TaskFailed | None) -> Effects:
        attempt.live = False
        task.live.discard(attempt.id)
        task.failures += 1
        if failed is not None:
            task.last_failure = failed
        if task.live:
            return []
        if task.failures >= self._config.task_attempts_max:
            self._move(task, TaskEvent.FAIL)
            last = task.last_failure
            self._failure = TaskFailure(
                kind=task.kind,
                task=task.index,
                attempt=attempt.id,
                error=last.error if last else f"{task.failures} attempts lost with their workers",
                detail=last.detail if last else "",
                path=last.path if last else "",
                offset=last.offset if last else -1,
            )
            return []
        self._move(task, TaskEvent.ATTEMPTS_LOST)
        return []

    def _on_fetch_failed(self, reduce: _Task, attempt: _Attempt, failed: TaskFailed) -> Effects:
        """Reduce attempt ``attempt`` could not read the output of the map attempts
        ``failed.lost_map_attempts``: count the reports, re-execute the map tasks
        whose output is now deemed lost, and put the reduce task back to work."""
        self._stats["fetch_failures"] += 1
        attempt.live = False
        reduce.live.discard(attempt.id)
        reduce.last_failure = failed
        effects: Effects = []
        for lost_id in sorted(set(failed.lost_map_attempts)):
            lost = self._attempts.get(lost_id)
            if lost is None or lost.kind is not TaskKind.MAP or attempt.bindings[lost.task] != lost_id:
                # Not a map attempt this reduce attempt was bound to: bad peer input.
                self._stats["fetch_failure_unbound_ignored"] += 1
                continue
            map_task = self._maps[lost.task]
            if map_task.state is not TaskState.COMPLETED or map_task.committed is not lost:
                # Already re-executed (another reducer's report, or its worker died).
                self._stats["fetch_failure_stale_ignored"] += 1
                continue
            map_task.fetch_failures += 1
            if map_task.fetch_failures < self._config.fetch_failures_max:
                continue
            map_task.failures += 1
            if map_task.failures >= self._config.task_attempts_max:
                self._move(map_task, TaskEvent.FAIL)
                self._failure = TaskFailure(
                    kind=TaskKind.MAP, task=map_task.index, attempt=lost_id,
                    error=(f"its output was lost or unreadable too often ({map_task.failures} "
                           f"attempts lost); last fetch failure: {failed.error}"),
                    detail=failed.detail,
                )
                break
            effects += self._map_output_lost(map_task)
        if reduce.state is TaskState.IN_PROGRESS and not reduce.live:
            self._move(reduce, TaskEvent.ATTEMPTS_LOST)
        return effects

    def _on_worker_lost(self, worker_id: NodeId) -> Effects:
        worker = self._workers.get(worker_id)
        if worker is None or not worker.alive:
            self._stats["stale_ignored"] += 1
            return []
        worker.alive = False
        effects: Effects = []
        if worker.attempt is not None:
            attempt = self._attempts[worker.attempt]
            worker.attempt = None
            if attempt.live:
                effects += self._attempt_failed(self._task(attempt.kind, attempt.task), attempt, None)
        if not all(t.state is TaskState.COMPLETED for t in self._reduces):
            for task in self._maps:
                if (
                    task.state is TaskState.COMPLETED
                    and task.committed is not None
                    and task.committed.worker == worker_id
                ):
                    effects += self._map_output_lost(task)
        return effects

    def _map_output_lost(self, task: _Task) -> Effects:
        """The committed output of map task ``task`` is gone: re-execute the task,
        and abandon reduce attempts that were bound to that output."""
        lost = task.committed
        assert lost is not None
        self._move(task, TaskEvent.OUTPUT_LOST)
        task.committed = None
        task.completion = None
        task.fetch_failures = 0
        self._stats["map_reexecutions"] += 1
        effects: Effects = []
        for reduce in self._reduces:
            for attempt_id in sorted(reduce.live):
                attempt = self._attempts[attempt_id]
                if attempt.bindings[task.index] == lost.id:
                    attempt.live = False
                    reduce.live.discard(attempt_id)
                    effects.append(Send(to=attempt.worker, message=CancelAttempt(attempt=attempt_id)))
            if reduce.state is TaskState.IN_PROGRESS and not reduce.live:
                self._move(reduce, TaskEvent.ATTEMPTS_LOST)
        return effects

    # ----------------------------------------------------------------- scheduling

    def _schedule(self, now_ms: float) -> Effects:
        effects: Effects = []
        if self.finished:
            return effects
        for worker in sorted(self._workers.values(), key=lambda w: w.id):
            if not worker.alive or worker.attempt is not None:
                continue
            assignment = self._next_assignment(now_ms, worker)
            if assignment is None:
                break
            effects.append(assignment)
        return effects

    def _next_assignment(self, now_ms: float, worker: _Worker) -> Send | None:
        for task in self._maps:
            if task.state is TaskState.IDLE:
                return self._assign(now_ms, worker, task, backup=False)
        maps_done = all(t.state is TaskState.COMPLETED for t in self._maps)
        if maps_done:
            for task in self._reduces:
                if task.state is TaskState.IDLE:
                    return self._assign(now_ms, worker, task, backup=False)
        phase = self._reduces if maps_done else self._maps
        straggler = self._straggler(now_ms, phase, worker)
        if straggler is None:
            return None
        return self._assign(now_ms, worker, straggler, backup=True)

    def _straggler(self, now_ms: float, phase: list[_Task], worker: _Worker) -> _Task | None:
        running = [t for t in phase if t.state is TaskState.IN_PROGRESS]
        if not running or any(t.state is TaskState.IDLE for t in phase):
            return None
        if len(running) > max(1, int(self._config.backup_remaining_fraction * len(phase))):
            return None
        durations = sorted(t.duration_ms for t in phase if t.state is TaskState.COMPLETED)
        median_ms = durations[len(durations) // 2] if durations else 0.0
        threshold_ms = max(self._config.backup_after_ms, self._config.backup_slowdown * median_ms)
        best: tuple[float, int] | None = None
        chosen: _Task | None = None
        for task in running:
            if len(task.live) != 1:
                continue  # already backed up
            (only,) = task.live
            attempt = self._attempts[only]
            if attempt.worker == worker.id or now_ms - attempt.started_ms < threshold_ms:
                continue
            key = (attempt.started_ms, task.index)
            if best is None or key < best:
                best, chosen = key, task
        return chosen

    def _assign(self, now_ms: float, worker: _Worker, task: _Task, *, backup: bool) -> Send:
        attempt = _Attempt(
            id=self._next_attempt,
            kind=task.kind,
            task=task.index,
            worker=worker.id,
            started_ms=now_ms,
            backup=backup,
        )
        self._next_attempt += 1
        self._stats["attempts_started"] += 1
        if backup:
            self._stats["backups_started"] += 1
        self._move(task, TaskEvent.BACKUP if backup else TaskEvent.ASSIGN)
        task.live.add(attempt.id)
        worker.attempt = attempt.id
        self._attempts[attempt.id] = attempt
        if task.kind is TaskKind.MAP:
            skip = tuple(SkipRecord(path=p, offset=o) for p, o in sorted(task.skip))
            assignment: AssignMap | AssignReduce = AssignMap(
                attempt=attempt.id, step=self._step, task=task.index,
                splits=self._splits[task.index], reducers=self._reducers, skip=skip,
                plan=self._plan,
            )
        else:
            self._reducers_started = True
            refs = []
            for map_task in self._maps:
                assert map_task.committed is not None and map_task.completion is not None
                done = map_task.completion
                refs.append(MapOutputRef(
                    map_task=map_task.index, attempt=map_task.committed.id,
                    worker=map_task.committed.worker, path=done.path,
                    offset=done.offsets[task.index], length=done.lengths[task.index],
                ))
            attempt.bindings = tuple(ref.attempt for ref in refs)
            assignment = AssignReduce(
                attempt=attempt.id, step=self._step, task=task.index, inputs=tuple(refs),
                output_dir=self._output_dir,
            )
        return Send(to=worker.id, message=assignment)

    def _finish_effects(self) -> Effects:
        return [CancelTimer(key=TICK_TIMER)] if self.finished else []

    # ------------------------------------------------------------------- helpers

    def _task(self, kind: TaskKind, index: int) -> _Task:
        if kind is TaskKind.MAP:
            return self._maps[index]
        if kind is TaskKind.REDUCE:
            return self._reduces[index]
        assert_never(kind)

    def _move(self, task: _Task, event: TaskEvent) -> None:
        target = TRANSITIONS.get((task.state, event))
        if target is None:
            raise IllegalTransition(
                f"{task.kind.name.lower()} task {task.index}: no move {event.value} from {task.state.value}"
            )
        task.state = target

    def check_invariants(self) -> None:
        for worker in self._workers.values():
            if worker.attempt is not None:
                invariant(worker.alive, f"dead worker {worker.id} holds attempt {worker.attempt}")
                invariant(self._attempts[worker.attempt].worker == worker.id,
                          f"worker {worker.id} holds another worker's attempt")
        for task in (*self._maps, *self._reduces):
            name = f"{task.kind.name.lower()} task {task.index}"
            for attempt_id in task.live:
                attempt = self._attempts[attempt_id]
                invariant(attempt.live, f"{name}: dead attempt {attempt_id} listed live")
                invariant(self._workers[attempt.worker].alive, f"{name}: live attempt on dead worker")
            match task.state:
                case TaskState.IDLE:
                    invariant(not task.live and task.committed is None, f"{name}: idle but busy")
                case TaskState.IN_PROGRESS:
                    invariant(bool(task.live), f"{name}: in progress without a live attempt")
                    invariant(task.committed is None, f"{name}: in progress yet committed")
                case TaskState.COMPLETED:
                    invariant(task.committed is not None and not task.live,
                              f"{name}: completed without one committed attempt")
                case TaskState.FAILED:
                    invariant(self._failure is not None, f"{name}: failed but the step is not")
                case _:
                    assert_never(task.state)
        for task in self._reduces:
            for attempt_id in task.live:
                attempt = self._attempts[attempt_id]
                for map_task in self._maps:
                    committed = map_task.committed
                    invariant(
                        committed is not None and attempt.bindings[map_task.index] == committed.id,
                        f"reduce attempt {attempt_id} bound to a map attempt that is not committed",
                    )
