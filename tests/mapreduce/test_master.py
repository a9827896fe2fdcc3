"""Unit tests of the master core, one per claim of the paper (section 3)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from synod.core.effects import Effects, Recovered, Send, SetTimer
from synod.core.ids import NodeId
from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.master import (
    TRANSITIONS,
    IllegalTransition,
    Master,
    TaskEvent,
    TaskState,
)
from synod.mapreduce.messages import (
    AssignMap,
    AssignReduce,
    CancelAttempt,
    CounterValue,
    InputSplit,
    TaskCompleted,
    TaskFailed,
    TaskKind,
    WorkerLost,
    WorkerReady,
)

W1, W2, W3 = NodeId("w1"), NodeId("w2"), NodeId("w3")
DRIVER = NodeId("driver")


def make(maps: int = 2, reducers: int = 2, *, skip: bool = False, **config: Any) -> Master:
    splits = tuple((InputSplit(path=f"f{i}", start=0, end=10),) for i in range(maps))
    master = Master(config=MapReduceConfig(**config), rng=random.Random(1), step=0, splits=splits,
                    reducers=reducers, skip_bad_records=skip)
    assert any(isinstance(e, SetTimer) for e in master.start(0.0, Recovered()))
    return master


def assigns(effects: Effects) -> dict[NodeId, AssignMap | AssignReduce]:
    out = {}
    for effect in effects:
        if isinstance(effect, Send) and isinstance(effect.message, AssignMap | AssignReduce):
            out[effect.to] = effect.message
    return out


def map_done(assign: AssignMap, worker: NodeId, value: int = 1, reducers: int = 2) -> TaskCompleted:
    return TaskCompleted(attempt=assign.attempt, kind=TaskKind.MAP, task=assign.task,
                         path=f"{worker}/m{assign.task}", offsets=tuple(range(reducers)),
                         lengths=(5,) * reducers,
                         counters=(CounterValue(group="g", name="n", value=value),))


def reduce_done(assign: AssignReduce) -> TaskCompleted:
    return TaskCompleted(attempt=assign.attempt, kind=TaskKind.REDUCE, task=assign.task,
                         path=f"part-{assign.task}")


def test_idle_workers_get_map_tasks_and_reduces_wait_for_every_map() -> None:
    master = make(maps=2, reducers=1)
    first = assigns(master.on_message(1, W1, WorkerReady()))
    second = assigns(master.on_message(1, W2, WorkerReady()))
    a1, a2 = first[W1], second[W2]
    assert isinstance(a1, AssignMap) and isinstance(a2, AssignMap) and {a1.task, a2.task} == {0, 1}
    # One map done: the free worker gets nothing (no reduce before all maps).
    assert assigns(master.on_message(2, W1, map_done(a1, W1, reducers=1))) == {}
    reduce = assigns(master.on_message(3, W2, map_done(a2, W2, reducers=1)))
    assert {type(m) for m in reduce.values()} == {AssignReduce}
    master.check_invariants()


def test_reduce_is_bound_to_the_committed_attempt_of_every_map() -> None:
    master = make(maps=2, reducers=1)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    b = assigns(master.on_message(0, W2, WorkerReady()))[W2]
    assert isinstance(a, AssignMap) and isinstance(b, AssignMap)
    master.on_message(1, W1, map_done(a, W1, reducers=1))
    reduce = next(iter(assigns(master.on_message(1, W2, map_done(b, W2, reducers=1))).values()))
    assert isinstance(reduce, AssignReduce)
    assert [(r.map_task, r.attempt, r.worker) for r in reduce.inputs] == [
        (a.task, a.attempt, W1), (b.task, b.attempt, W2)]


def test_duplicate_completion_is_ignored() -> None:
    master = make(maps=2, reducers=1)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    assert isinstance(a, AssignMap)
    done = map_done(a, W1, value=5, reducers=1)
    master.on_message(1, W1, done)
    master.on_message(2, W1, done)
    assert master.statistics().duplicates_ignored == 1
    assert master.statistics().maps_completed == 1


def test_dead_worker_in_progress_task_is_re_executed() -> None:
    master = make(maps=1, reducers=1)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    master.on_message(0, W2, WorkerReady())
    again = assigns(master.on_message(1, DRIVER, WorkerLost(worker=W1)))
    assert isinstance(again[W2], AssignMap) and again[W2].task == a.task
    assert again[W2].attempt != a.attempt


def test_completed_map_tasks_of_a_dead_worker_are_re_executed() -> None:
    master = make(maps=2, reducers=1)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    b = assigns(master.on_message(0, W2, WorkerReady()))[W2]
    assert isinstance(a, AssignMap) and isinstance(b, AssignMap)
    master.on_message(1, W1, map_done(a, W1, reducers=1))
    master.on_message(2, DRIVER, WorkerLost(worker=W1))
    assert master.statistics().map_reexecutions == 1
    redo = assigns(master.on_message(3, W3, WorkerReady()))[W3]
    assert isinstance(redo, AssignMap) and redo.task == a.task
    # The reduce waits for the re-executed map, and is bound to its new attempt.
    assert assigns(master.on_message(4, W2, map_done(b, W2, reducers=1))) == {}
    reduce = assigns(master.on_message(5, W3, map_done(redo, W3, reducers=1)))
    (assign,) = reduce.values()
    assert isinstance(assign, AssignReduce)
    assert assign.inputs[a.task].attempt == redo.attempt and assign.inputs[a.task].worker == W3
    master.check_invariants()


def test_reduce_attempts_bound_to_lost_output_are_abandoned() -> None:
    master = make(maps=1, reducers=1)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    assert isinstance(a, AssignMap)
    reduce = assigns(master.on_message(1, W1, map_done(a, W1, reducers=1)))[W1]
    master.on_message(1, W2, WorkerReady())
    assert isinstance(reduce, AssignReduce)
    # W1 holds the map output and runs the reduce; it dies.
    effects = master.on_message(2, DRIVER, WorkerLost(worker=W1))
    redo = assigns(effects)
    assert isinstance(redo[W2], AssignMap)
    # The old reduce completion, arriving late, is not committed.
    master.on_message(3, W1, reduce_done(reduce))
    assert master.statistics().reduces_completed == 0


def test_completed_reduces_are_not_re_executed() -> None:
    master = make(maps=1, reducers=2)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    master.on_message(0, W2, WorkerReady())
    assert isinstance(a, AssignMap)
    reduces = assigns(master.on_message(1, W1, map_done(a, W1)))
    for worker, assign in reduces.items():
        assert isinstance(assign, AssignReduce)
        master.on_message(2, worker, reduce_done(assign))
    assert master.succeeded
    assert master.on_message(3, DRIVER, WorkerLost(worker=W1)) == []
    assert master.statistics().map_reexecutions == 0


def test_backup_task_for_a_straggler_and_first_completion_wins() -> None:
    master = make(maps=2, reducers=1, backup_after_ms=100.0, backup_remaining_fraction=0.5)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    b = assigns(master.on_message(0, W2, WorkerReady()))[W2]
    assert isinstance(a, AssignMap) and isinstance(b, AssignMap)
    master.on_message(50, W2, map_done(b, W2, reducers=1))
    # W2 is free but the straggler has not run long enough yet.
    assert assigns(master.on_timer(60, "mapreduce.tick")) == {}
    backup = assigns(master.on_timer(150, "mapreduce.tick"))[W2]
    assert isinstance(backup, AssignMap) and backup.task == a.task and backup.attempt != a.attempt
    effects = master.on_message(160, W2, map_done(backup, W2, reducers=1))
    cancels = [e for e in effects if isinstance(e, Send) and isinstance(e.message, CancelAttempt)]
    assert [(c.to, c.message) for c in cancels] == [(W1, CancelAttempt(attempt=a.attempt))]
    master.on_message(170, W1, map_done(a, W1, reducers=1))
    assert master.statistics().backups_started == 1
    assert master.committed_map_attempts()[a.task] == backup.attempt


def test_a_record_that_fails_twice_is_skipped_when_allowed() -> None:
    master = make(maps=1, reducers=1, skip=True)
    assign = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    for _ in range(2):
        assert isinstance(assign, AssignMap) and assign.skip == ()
        failed = TaskFailed(attempt=assign.attempt, kind=TaskKind.MAP, task=0, error="ValueError: x",
                            path="f0", offset=7, user_error=True)
        assign = assigns(master.on_message(1, W1, failed))[W1]
    assert isinstance(assign, AssignMap)
    assert [(s.path, s.offset) for s in assign.skip] == [("f0", 7)]


def test_without_skipping_a_failing_task_fails_the_step_naming_the_record() -> None:
    master = make(maps=1, reducers=1, task_attempts_max=3)
    assign = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    for _ in range(3):
        assert isinstance(assign, AssignMap) and assign.skip == ()
        failed = TaskFailed(attempt=assign.attempt, kind=TaskKind.MAP, task=0, error="ValueError: x",
                            path="f0", offset=7, user_error=True)
        assign = assigns(master.on_message(1, W1, failed)).get(W1)  # type: ignore[assignment]
    assert master.finished and not master.succeeded
    failure = master.failure
    assert failure is not None and (failure.path, failure.offset) == ("f0", 7)
    assert "map task 0" in failure.describe() and "f0 at byte offset 7" in failure.describe()


def test_counters_come_from_committed_attempts_only() -> None:
    master = make(maps=1, reducers=1, backup_after_ms=0.0, backup_remaining_fraction=1.0)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    backup = assigns(master.on_message(10, W2, WorkerReady()))[W2]
    assert isinstance(a, AssignMap) and isinstance(backup, AssignMap)
    master.on_message(20, W2, map_done(backup, W2, value=3, reducers=1))
    master.on_message(30, W1, map_done(a, W1, value=100, reducers=1))
    assert master.counters() == {("g", "n"): 3}


def test_illegal_transition_raises() -> None:
    master = make(maps=1, reducers=1)
    task = master._maps[0]
    with pytest.raises(IllegalTransition):
        master._move(task, TaskEvent.COMPLETE)
    assert (TaskState.COMPLETED, TaskEvent.ASSIGN) not in TRANSITIONS


def test_malformed_completion_is_treated_as_a_failed_attempt() -> None:
    master = make(maps=1, reducers=2)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    assert isinstance(a, AssignMap)
    bad = TaskCompleted(attempt=a.attempt, kind=TaskKind.MAP, task=0, path="x", offsets=(0,), lengths=(1,))
    retry = assigns(master.on_message(1, W1, bad))[W1]
    assert isinstance(retry, AssignMap) and retry.attempt != a.attempt


def test_messages_from_unknown_attempts_and_workers_are_ignored() -> None:
    master = make(maps=1, reducers=1)
    master.on_message(0, W1, WorkerReady())
    stray = TaskCompleted(attempt=99, kind=TaskKind.MAP, task=0, path="x", offsets=(0,), lengths=(1,))
    assert master.on_message(1, W2, stray) == []
    assert master.on_message(1, DRIVER, WorkerLost(worker=W3)) == []
    assert master.statistics().stale_ignored == 2
    master.check_invariants()


def test_attempt_numbers_continue_across_steps() -> None:
    splits = ((InputSplit(path="f", start=0, end=1),),)
    master = Master(config=MapReduceConfig(), rng=random.Random(1), step=1, splits=splits,
                    reducers=1, first_attempt=41)
    assign = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    assert assign.attempt == 41 and master.next_attempt == 42
    # A report from an earlier step's attempt 7 is not an attempt of this step.
    stale = TaskCompleted(attempt=7, kind=TaskKind.MAP, task=0, path="x", offsets=(0,), lengths=(1,))
    assert master.on_message(1, W1, stale) == []
    assert master.statistics().maps_completed == 0


def fetch_failed(reduce: AssignReduce, *lost: int) -> TaskFailed:
    return TaskFailed(attempt=reduce.attempt, kind=TaskKind.REDUCE, task=reduce.task,
                      error="FetchFailed: gone", lost_map_attempts=lost)


def maps_then_reduce(master: Master) -> tuple[AssignMap, AssignMap, AssignReduce]:
    """Two map tasks done on W1 and W2 (both alive); the one reduce assigned to W1."""
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    b = assigns(master.on_message(0, W2, WorkerReady()))[W2]
    assert isinstance(a, AssignMap) and isinstance(b, AssignMap)
    assert assigns(master.on_message(1, W2, map_done(b, W2, reducers=1))) == {}
    reduce = assigns(master.on_message(2, W1, map_done(a, W1, reducers=1)))[W1]
    assert isinstance(reduce, AssignReduce)
    return a, b, reduce


def test_a_fetch_failure_re_executes_the_map_task_on_a_live_worker() -> None:
    # Hadoop's shuffle rule, the paper's 3.3 for output lost without a worker death:
    # a reducer that cannot read a map task's output makes the master re-run it.
    master = make(maps=2, reducers=1)
    a, b, reduce = maps_then_reduce(master)
    redo = assigns(master.on_message(3, W1, fetch_failed(reduce, a.attempt)))[W1]
    assert isinstance(redo, AssignMap) and redo.task == a.task and redo.attempt != a.attempt
    stats = master.statistics()
    assert (stats.fetch_failures, stats.map_reexecutions, stats.failures) == (1, 1, 0)
    master.check_invariants()
    again = assigns(master.on_message(4, W1, map_done(redo, W1, reducers=1)))[W1]
    assert isinstance(again, AssignReduce) and again.task == reduce.task
    assert [r.attempt for r in again.inputs] == [redo.attempt, b.attempt]
    master.on_message(5, W1, reduce_done(again))
    assert master.succeeded


def test_fetch_failures_max_reports_are_needed_before_re_execution() -> None:
    master = make(maps=2, reducers=1, fetch_failures_max=2)
    a, b, reduce = maps_then_reduce(master)
    retry = assigns(master.on_message(3, W1, fetch_failed(reduce, a.attempt)))[W1]
    # One report: the reduce runs again, bound to the same map attempts.
    assert isinstance(retry, AssignReduce) and [r.attempt for r in retry.inputs] == [a.attempt, b.attempt]
    assert master.statistics().map_reexecutions == 0
    redo = assigns(master.on_message(4, W1, fetch_failed(retry, a.attempt)))[W1]
    assert isinstance(redo, AssignMap) and redo.task == a.task
    master.check_invariants()


def test_a_stale_fetch_failure_does_not_re_execute_twice() -> None:
    master = make(maps=2, reducers=2)
    a = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    b = assigns(master.on_message(0, W2, WorkerReady()))[W2]
    assert isinstance(a, AssignMap) and isinstance(b, AssignMap)
    master.on_message(1, W2, map_done(b, W2))
    reduces = assigns(master.on_message(2, W1, map_done(a, W1)))
    r1, r2 = reduces[W1], reduces[W2]
    assert isinstance(r1, AssignReduce) and isinstance(r2, AssignReduce)
    effects = master.on_message(3, W1, fetch_failed(r1, a.attempt))
    # The other reduce attempt, bound to the lost output, is cancelled.
    assert any(isinstance(e, Send) and e.message == CancelAttempt(attempt=r2.attempt) for e in effects)
    # Its own report of the same loss, arriving late, changes nothing.
    assert master.on_message(4, W2, fetch_failed(r2, a.attempt)) == []
    assert master.statistics().map_reexecutions == 1
    redo = assigns(effects)[W1]
    assert isinstance(redo, AssignMap)
    master.check_invariants()


def test_output_that_can_never_be_read_fails_the_step_naming_the_map_task() -> None:
    master = make(maps=1, reducers=1, task_attempts_max=3)
    assign: AssignMap | AssignReduce = assigns(master.on_message(0, W1, WorkerReady()))[W1]
    for now in range(1, 20):
        if isinstance(assign, AssignMap):
            effects = master.on_message(now, W1, map_done(assign, W1, reducers=1))
        else:
            effects = master.on_message(now, W1, fetch_failed(assign, assign.inputs[0].attempt))
        master.check_invariants()
        if master.finished:
            break
        assign = assigns(effects)[W1]
    failure = master.failure
    assert failure is not None and failure.kind is TaskKind.MAP and failure.task == 0
    assert "map task 0" in failure.describe() and "unreadable" in failure.describe()
    assert master.statistics().fetch_failures == 3
