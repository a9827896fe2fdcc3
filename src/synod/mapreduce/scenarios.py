"""The ``mapreduce`` simulation scenario: the master core under faults.

``synod sim mapreduce --seeds N`` (or ``run_scenario("mapreduce", seed)``) runs one
step of a job -- the sans-IO ``Master`` with fake workers -- in a seeded,
single-threaded event loop: one queue ordered by (virtual time, sequence), one
``random.Random(seed)``. Each seed draws M, R, the number of workers and the
faults the paper's master must survive: workers that die (their results still
in flight, their completed map output lost with them) and are replaced,
duplicated and delayed messages, stragglers ten times slower than the rest, map
output lost on a worker that stays alive (a corrupt or deleted file, which only
the reducers' fetch-failure reports reveal), and a poison record that crashes its mapper every time (skipped after two failures).
Map attempts are *non-deterministic*: each produces a fresh random token, and
reduce attempts record the tokens of the map attempts they were bound to, so a
reducer bound to the wrong attempt is visible.

``check_run`` is the checker; it judges from what the workers saw and what the
master reported, never from the master's private state:

* the step succeeded, with one part per reduce task, each from a completed
  attempt of that task;
* no worker ran two attempts at once; no reduce was bound to a map attempt that
  never completed, or to output on a worker the master knew was dead;
* every map task's output, as read by the committed reducers, comes from one
  attempt -- unless that attempt's output was lost (with its worker, or
  corrupted on a live one) before the later reducer was bound (the planted bug ``mapreduce.accept_late_map_completion``
  breaks this);
* counters are those of exactly one completed attempt per task;
* exactly the poison records were skipped.

This is the MapReduce block's own event loop rather than ``synod.sim.Simulation``:
the master has no failure detector of its own (the local runner sees process
exits; the cluster runner will use gossip), so the harness tells it of deaths
with ``WorkerLost``, after a random detection delay.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from synod.core.effects import CancelTimer, Recovered, Send, SetTimer
from synod.core.ids import NodeId
from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.master import Master
from synod.mapreduce.messages import (
    AssignMap,
    AssignReduce,
    CancelAttempt,
    CounterValue,
    InputSplit,
    SkipRecord,
    TaskCompleted,
    TaskFailed,
    TaskKind,
    WorkerLost,
    WorkerReady,
)
from synod.sim.scenarios import ScenarioOptions, ScenarioResult, register_scenario

DRIVER = NodeId("driver")
POISON_OFFSET = 4242


class CheckFailed(AssertionError):
    """The checker found a run the paper's master would not produce."""


@dataclass
class Run:
    seed: int
    maps: int
    reducers: int
    master: Master
    #: attempt id -> (kind, task, worker, assigned at, bindings for reduce)
    assigned: dict[int, tuple[TaskKind, int, NodeId, float, tuple[int, ...]]] = field(default_factory=dict)
    #: attempt id -> token of the map attempt's output (only attempts that completed)
    map_tokens: dict[int, int] = field(default_factory=dict)
    reduce_tokens: dict[int, int] = field(default_factory=dict)
    #: worker -> virtual time of its death
    deaths: dict[NodeId, float] = field(default_factory=dict)
    poisoned: set[int] = field(default_factory=set)
    #: worker -> virtual time the master was told of its death
    lost_noticed: dict[NodeId, float] = field(default_factory=dict)
    #: map attempt -> virtual time its output was corrupted (its worker alive)
    corrupted: dict[int, float] = field(default_factory=dict)
    steps: int = 0
    trace: list[str] = field(default_factory=list)


def simulate(seed: int, *, check_invariants: bool = True, events_max: int = 20000,
             maps: int = 0, reducers: int = 0, workers: int = 0) -> Run:
    """One run; ``maps``, ``reducers`` and ``workers`` are drawn from the seed when 0."""
    rng = random.Random(seed)
    maps = maps or rng.randint(1, 12)
    reducers = reducers or rng.randint(1, 6)
    workers_initial = workers or rng.randint(1, 5)
    deaths_max = rng.randint(0, 3)
    corruptions_max = rng.choice([0, 0, 1, 3])
    duplicate_probability = rng.choice([0.0, 0.1, 0.3])
    poison = rng.random() < 0.3
    config = MapReduceConfig(task_attempts_max=12, backup_after_ms=rng.choice([0.0, 50.0, 200.0]),
                             backup_remaining_fraction=rng.choice([0.1, 0.3, 1.0]),
                             backup_slowdown=rng.choice([0.0, 1.0, 1.5]),
                             scheduler_tick_ms=25.0)
    splits = tuple((InputSplit(path=f"in-{i}", start=0, end=100),) for i in range(maps))
    master = Master(config=config, rng=random.Random(seed), step=0, splits=splits, reducers=reducers,
                    skip_bad_records=True)
    run = Run(seed=seed, maps=maps, reducers=reducers, master=master)
    if poison:
        run.poisoned = {rng.randrange(maps)}
    queue: list[tuple[float, int, str, Any]] = []
    sequence = 0
    now = 0.0
    alive: set[NodeId] = set()
    speed: dict[NodeId, float] = {}
    running: dict[NodeId, int] = {}
    timers: dict[str, float] = {}
    spawned = 0

    def push(at: float, kind: str, payload: Any) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(queue, (at, sequence, kind, payload))

    def spawn() -> None:
        nonlocal spawned
        spawned += 1
        worker = NodeId(f"w{spawned}")
        alive.add(worker)
        speed[worker] = 10.0 if rng.random() < 0.25 else 1.0
        push(now + rng.uniform(0, 5), "deliver", (worker, WorkerReady()))

    def execute(effects: list[Any]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=AssignMap() | AssignReduce() as assign):
                    bindings = tuple(r.attempt for r in assign.inputs) if isinstance(assign, AssignReduce) else ()
                    kind = TaskKind.MAP if isinstance(assign, AssignMap) else TaskKind.REDUCE
                    assert assign.attempt not in run.assigned, "attempt id reused"
                    run.assigned[assign.attempt] = (kind, assign.task, to, now, bindings)
                    if isinstance(assign, AssignReduce):
                        for ref in assign.inputs:
                            noticed = run.lost_noticed.get(ref.worker)
                            if noticed is not None:
                                raise CheckFailed(f"reduce a{assign.attempt} bound to output on {ref.worker}, known dead")
                    run.trace.append(f"{now:9.1f} assign {kind.name} {assign.task} a{assign.attempt} -> {to}")
                    if to in alive:
                        if to in running:
                            raise CheckFailed(f"{to} given two attempts at once")
                        running[to] = assign.attempt
                        push(now + rng.uniform(10, 100) * speed[to], "finish", (to, assign))
                case Send(message=CancelAttempt()):
                    continue
                case SetTimer(key=key, delay_ms=delay):
                    timers[key] = now + delay
                    push(now + delay, "timer", (key, now + delay))
                case CancelTimer(key=key):
                    timers.pop(key, None)
                case _:
                    raise AssertionError(f"unexpected effect {effect}")

    def step(effects: list[Any]) -> None:
        execute(effects)
        run.steps += 1
        if check_invariants:
            master.check_invariants()

    def result_of(worker: NodeId, assign: AssignMap | AssignReduce) -> TaskCompleted | TaskFailed:
        if isinstance(assign, AssignMap):
            skipping = any(s.offset == POISON_OFFSET for s in assign.skip)
            if assign.task in run.poisoned and not skipping:
                return TaskFailed(attempt=assign.attempt, kind=TaskKind.MAP, task=assign.task,
                                  error="ValueError: poison", path=f"in-{assign.task}",
                                  offset=POISON_OFFSET, user_error=True)
            token = rng.getrandbits(40)
            run.map_tokens[assign.attempt] = token
            skipped = (SkipRecord(path=f"in-{assign.task}", offset=POISON_OFFSET),) if skipping else ()
            return TaskCompleted(
                attempt=assign.attempt, kind=TaskKind.MAP, task=assign.task,
                path=f"{worker}/m{assign.task}-a{assign.attempt}",
                offsets=tuple(range(reducers)), lengths=tuple([1] * reducers),
                counters=(CounterValue(group="map", name=f"t{assign.task}", value=token),),
                records_in=1, bytes_in=100, skipped=skipped,
            )
        for ref in assign.inputs:
            if ref.attempt not in run.map_tokens:
                raise CheckFailed(f"reduce bound to map attempt {ref.attempt} that never completed")
            if ref.path != f"{ref.worker}/m{ref.map_task}-a{ref.attempt}":
                raise CheckFailed("ref names another attempt's output")
        # The fetch from a dead machine fails, and so does the read of a corrupt
        # bucket: the reducer reports a fetch failure naming those map attempts.
        # (A reducer reads its inputs when it starts.)
        started = run.assigned[assign.attempt][3]
        unreadable = tuple(
            ref.attempt for ref in assign.inputs
            if run.deaths.get(ref.worker, float("inf")) < started
            or run.corrupted.get(ref.attempt, float("inf")) < started)
        if unreadable:
            return TaskFailed(attempt=assign.attempt, kind=TaskKind.REDUCE, task=assign.task,
                              error="OSError: cannot fetch map output", lost_map_attempts=unreadable)
        token = rng.getrandbits(40)
        run.reduce_tokens[assign.attempt] = token
        return TaskCompleted(
            attempt=assign.attempt, kind=TaskKind.REDUCE, task=assign.task,
            path=f"part-{assign.task}-a{assign.attempt}",
            counters=(CounterValue(group="reduce", name=f"t{assign.task}", value=token),),
            records_out=1,
        )

    step(master.start(now, Recovered()))
    for _ in range(workers_initial):
        spawn()
    deaths = 0
    for _ in range(deaths_max):
        push(rng.uniform(0, 600), "kill", None)
    for _ in range(corruptions_max):
        push(rng.uniform(0, 600), "corrupt", None)
    events = 0
    while queue and not master.finished:
        events += 1
        assert events <= events_max, f"seed {seed}: no progress after {events_max} events"
        now, _, kind, payload = heapq.heappop(queue)
        if kind == "deliver":
            source, message = payload
            run.trace.append(f"{now:9.1f} deliver {type(message).__name__} from {source}")
            if isinstance(message, WorkerLost):
                run.lost_noticed[message.worker] = now
            step(master.on_message(now, source, message))
        elif kind == "finish":
            worker, assign = payload
            if worker not in alive or running.get(worker) != assign.attempt:
                continue
            del running[worker]
            result = result_of(worker, assign)
            push(now + rng.uniform(0, 10), "deliver", (worker, result))
            if rng.random() < duplicate_probability:
                push(now + rng.uniform(0, 300), "deliver", (worker, result))
        elif kind == "kill":
            if not alive or deaths >= deaths_max:
                continue
            victim = rng.choice(sorted(alive))
            deaths += 1
            alive.discard(victim)
            running.pop(victim, None)
            run.deaths[victim] = now
            run.trace.append(f"{now:9.1f} kill {victim}")
            # The death is noticed a little later; messages in flight still arrive.
            push(now + rng.uniform(0, 20), "deliver", (DRIVER, WorkerLost(worker=victim)))
            spawn()
        elif kind == "corrupt":
            intact = sorted(a for a in run.map_tokens
                            if a not in run.corrupted and run.assigned[a][2] in alive)
            if intact:
                victim_attempt = rng.choice(intact)
                run.corrupted[victim_attempt] = now
                run.trace.append(f"{now:9.1f} corrupt output of a{victim_attempt}")
        elif kind == "timer":
            key, due = payload
            if timers.get(key) == due:
                del timers[key]
                step(master.on_timer(now, key))
    return run


def check_run(run: Run) -> None:
    """The checker: what a correct master guarantees, judged from outside."""
    master = run.master
    if not master.succeeded:
        raise CheckFailed(f"seed {run.seed}: job did not succeed: {master.failure}")
    parts = master.output_parts()
    if len(parts) != run.reducers:
        raise CheckFailed(f"seed {run.seed}: {len(parts)} parts for {run.reducers} reducers")
    committed_reduces: list[int] = []
    for task, path in enumerate(parts):
        attempt = int(path.rsplit("-a", 1)[1])
        kind, index, _, _, _ = run.assigned[attempt]
        if (kind, index) != (TaskKind.REDUCE, task) or attempt not in run.reduce_tokens:
            raise CheckFailed(f"seed {run.seed}: part {task} comes from attempt {attempt} of {kind} {index}")
        committed_reduces.append(attempt)
    # One committed map attempt per task, as seen by every reducer, unless that
    # attempt's output was lost with its worker before the later reducer was bound.
    for map_task in range(run.maps):
        seen: list[tuple[float, int]] = []
        for attempt in committed_reduces:
            _, _, _, assigned_at, bindings = run.assigned[attempt]
            seen.append((assigned_at, bindings[map_task]))
        seen.sort()
        for (_t1, a1), (t2, a2) in itertools.pairwise(seen):
            if a1 == a2:
                continue
            lost_worker = run.assigned[a1][2]
            lost_at = min(run.deaths.get(lost_worker, float("inf")), run.corrupted.get(a1, float("inf")))
            if lost_at > t2:
                raise CheckFailed(
                    f"seed {run.seed}: map task {map_task}: reducers read attempts {a1} and {a2} "
                    f"although attempt {a1}'s output was never lost"
                )
    counters = master.counters()
    for map_task in range(run.maps):
        value = counters.get(("map", f"t{map_task}"))
        tokens = {run.map_tokens[a] for a, (k, t, *_r) in run.assigned.items()
                  if k is TaskKind.MAP and t == map_task and a in run.map_tokens}
        if value not in tokens:
            raise CheckFailed(f"seed {run.seed}: map task {map_task} counter {value} is not one attempt's")
    for task, attempt in enumerate(committed_reduces):
        if counters.get(("reduce", f"t{task}")) != run.reduce_tokens[attempt]:
            raise CheckFailed(f"seed {run.seed}: reduce task {task} counter is not its committed attempt's")
    skipped = {(s.path, s.offset) for s in master.skipped_records()}
    expected = {(f"in-{t}", POISON_OFFSET) for t in run.poisoned}
    if skipped != expected:
        raise CheckFailed(f"seed {run.seed}: skipped {skipped}, expected {expected}")


def trace_digest(run: Run) -> str:
    return hashlib.sha256("\n".join(run.trace).encode()).hexdigest()[:16]


def mapreduce_scenario(seed: int, options: ScenarioOptions) -> ScenarioResult:
    """The MapReduce master under worker deaths, duplicates, stragglers and a poison record."""
    run = simulate(seed, maps=options.get_int("maps", 0), reducers=options.get_int("reducers", 0),
                   workers=options.get_int("workers", 0))
    if options.trace_sink is not None:
        for line in run.trace:
            options.trace_sink(line)
    violations: tuple[str, ...] = ()
    try:
        check_run(run)
    except CheckFailed as failure:
        violations = (str(failure),)
    stats = run.master.statistics()
    return ScenarioResult(
        scenario="mapreduce", seed=seed, ok=not violations, violations=violations,
        trace_digest=trace_digest(run),
        statistics={
            "steps": float(run.steps), "attempts": float(stats.attempts_started),
            "backups": float(stats.backups_started), "map_reexecutions": float(stats.map_reexecutions),
            "duplicates_ignored": float(stats.duplicates_ignored), "deaths": float(len(run.deaths)),
            "corruptions": float(len(run.corrupted)), "fetch_failures": float(stats.fetch_failures),
        },
    )


register_scenario("mapreduce", mapreduce_scenario)
