"""The ``lock`` simulation scenario: a cell under the full fault model.

Three replicas (``n1`` ..) of a lock cell, a fenced resource (``r1``) and
``clients`` client nodes (``c1`` ..) run the simulator's chaos-then-heal
schedule (loss, duplication, reordering, partitions, clogs, crashes that tear
writes, restarts, skewed and drifting clocks, BUGGIFY), plus a nemesis that
strikes the master. Clients create, write and read (often from their caches)
a few files, take a lock and, while holding it, write to the resource with
their sequencer, and release. Now and then a holder checks its lease, then
*pauses* (as in a long garbage collection) for longer than the lease, and only
then sends its write: the case sequencers and lock-delay exist for.

Checks:

* the file history (creates and writes as puts, cached and uncached reads as
  gets, timed-out operations indeterminate) is linearizable, and no read (a
  cached one in particular) returns a value older than a write that completed
  before the read began;
* fencing: the resource keeps the highest lock generation it has seen and
  rejects lower ones; the checker proves that no write was accepted with a
  sequencer of generation g once an acquire of generation > g had been chosen;
* the locks and ephemeral files of every session that ended are gone;
* events: every client session that is safe at the end heard the last chosen
  change to the file it subscribed to;
* convergence after healing (same namespace digest everywhere).

Planted bugs each caught: ``lock.skip_lock_delay`` (fencing),
``lock.invalidation_not_awaited`` (stale cached reads),
``lock.expired_session_keeps_lock`` (locks of ended sessions).

Options: ``clients`` (4), ``files`` (3), ``op_interval_ms`` (10), ``pause_probability``
(0.3), ``overlap`` (0: the probability that a read is followed at once by a
write of the same file from the same session while the read is in flight --
the race of a writer's own cached copy, see ``LockServer._drop_writer_copy``),
``churn_ms`` (600; 0 turns the master nemesis off), ``chaos_ms``, ``heal_ms``
and any ``sim.<SimConfig field>``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Hashable
from dataclasses import dataclass, field

from synod.check.history import HistoryRecorder
from synod.check.invariants import check_converged
from synod.check.linearizability import check_linearizability
from synod.codec.kernel import ClientReply, ClientRequest, ErrorReply
from synod.codec.registry import Message, message
from synod.core.effects import CancelTimer, ClientResult, Effects, Recovered, Send, SetTimer
from synod.core.ids import NodeId
from synod.lock.config import LockConfig
from synod.lock.messages import (
    Acquire,
    Acquired,
    Contents,
    Create,
    Done,
    Event,
    EventKind,
    NodeMeta,
    OpError,
    Release,
    Write,
)
from synod.lock.sequencer import Fence, LockMode, Sequencer, StaleSequencerError
from synod.lock.server import LockServer, LockServerFactory
from synod.lock.session import ClientSession, SessionState
from synod.paxos.config import PaxosConfig
from synod.sim import (
    Crash,
    NodeClock,
    ScenarioOptions,
    ScenarioResult,
    SimConfig,
    Simulation,
    register_scenario,
    result_from_simulation,
)

NAME = "lock"
RESOURCE = NodeId("r1")


@message(700)
@dataclass(frozen=True, slots=True, kw_only=True)
class FencedWrite(Message):
    """A write to the simulated resource, fenced by a sequencer."""

    sequencer: Sequencer
    value: str


class ResourceCore:
    """A server that cannot ask the cell but keeps a ``Fence``: it accepts a
    write unless its sequencer is older than one it already saw."""

    def __init__(self, node: NodeId, rng: random.Random, journal: _Journal) -> None:
        self.node = node
        self.fence = Fence()
        self.journal = journal

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        if not isinstance(message, ClientRequest) or not isinstance(message.body, FencedWrite):
            return []
        write = message.body
        try:
            self.fence.admit(write.sequencer)
        except StaleSequencerError as error:
            return [ClientResult(client=source, request_id=message.request_id,
                                 result=ErrorReply(code="stale_sequencer", detail=str(error)))]
        self.journal.accepted(write.sequencer, write.value)
        return [ClientResult(client=source, request_id=message.request_id, result=Done(detail="ok"))]

    def on_timer(self, now_ms: float, key: str) -> Effects:
        return []

    def check_invariants(self) -> None:
        return None


@dataclass(slots=True)
class _FileOp:
    operation: tuple[str, ...]
    start_ms: float
    end_ms: float = 0.0
    outcome: str = "pending"
    result: str | None = None
    cached: bool = False


@dataclass(slots=True)
class _Journal:
    """What the scenario sees, in true time."""

    simulation: Simulation | None = None
    acquired: dict[tuple[str, int], float] = field(default_factory=dict)
    accepted_writes: list[tuple[float, Sequencer, str]] = field(default_factory=list)
    ended_sessions: set[int] = field(default_factory=set)
    last_event: dict[str, int] = field(default_factory=dict)
    events_seen: set[int] = field(default_factory=set)
    event_ms: dict[int, float] = field(default_factory=dict)

    def now(self) -> float:
        assert self.simulation is not None
        return self.simulation.now_ms

    def accepted(self, sequencer: Sequencer, value: str) -> None:
        self.accepted_writes.append((self.now(), sequencer, value))

    def on_events(self, node: NodeId, events: list[Event]) -> None:
        for event in events:
            if event.index in self.events_seen:
                continue
            self.events_seen.add(event.index)
            self.event_ms[event.index] = self.now()
            match event.kind:
                case EventKind.LOCK_ACQUIRED:
                    self.acquired.setdefault((event.path, event.generation), self.now())
                case EventKind.SESSION_ENDED:
                    self.ended_sessions.add(event.session)
                case EventKind.CONTENTS_MODIFIED:
                    self.last_event[event.path] = max(self.last_event.get(event.path, 0), event.index)
                case _:
                    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class _WorkloadConfig:
    cell: LockConfig
    servers: tuple[NodeId, ...]
    files: int
    op_interval_ms: float
    pause_probability: float
    stop_ms: float
    overlap: float = 0.0


class LockWorkload:
    """A simulated client process: a ``ClientSession`` and a random workload.
    A *pause* buffers every input until it ends, as a stopped process would."""

    def __init__(self, node: NodeId, rng: random.Random, config: _WorkloadConfig) -> None:
        self.node = node
        self.rng = rng
        self.config = config
        self.root = config.cell.root
        self.session = self._new_session()
        self.history: list[_FileOp] = []
        self.events: list[tuple[ClientSession, Event]] = []
        self.busy = False
        self.file_ops_open = 0
        self.holding: Sequencer | None = None
        self.paused_until = float("-inf")
        self.buffered: list[tuple[str, NodeId, Message | str]] = []
        self.resource_requests: dict[int, str] = {}
        self.request_next = 1 << 30
        self.counter = 0
        self.sessions_opened = 0

    def _new_session(self) -> ClientSession:
        return ClientSession(self.node, self.rng, servers=self.config.servers, config=self.config.cell,
                             call_timeout_ms=150.0, on_event=self.events_append)

    def events_append(self, event: Event) -> None:
        self.events.append((self.session, event))

    # ---------------------------------------------------------------- Core API

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return [SetTimer(key="wl/next", delay_ms=self.config.op_interval_ms)]

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        if now_ms < self.paused_until:
            self.buffered.append(("message", source, message))
            return []
        if isinstance(message, ClientReply) and message.request_id in self.resource_requests:
            self.resource_requests.pop(message.request_id)
            out: Effects = []
            if self.writing is not None:
                # The write is done (accepted or fenced off): now let go of the lock.
                self.writing = None
                out.append(CancelTimer(key="wl/rewrite"))
                self._release(now_ms, out)
            return out
        return self.session.on_message(now_ms, source, message)

    def on_timer(self, now_ms: float, key: str) -> Effects:
        if key == "wl/unpause":
            return self._unpause(now_ms)
        if now_ms < self.paused_until:
            self.buffered.append(("timer", NodeId(""), key))
            return []
        if key.startswith("wl/"):
            out: Effects = []
            if key == "wl/next":
                out.append(SetTimer(key="wl/next", delay_ms=self.config.op_interval_ms))
                if now_ms < self.config.stop_ms and not self.busy:
                    self._next_op(now_ms, out)
            elif key == "wl/fenced":
                self._fenced_write(now_ms, out)
            elif key == "wl/rewrite":
                self._rewrite(now_ms, out)
            return out
        return self.session.on_timer(now_ms, key)

    def check_invariants(self) -> None:
        self.session.check_invariants()

    # ---------------------------------------------------------------- workload

    def _file(self) -> str:
        return f"{self.root}/f{self.rng.randrange(self.config.files)}"

    def _next_op(self, now_ms: float, out: Effects) -> None:
        state = self.session.state
        if state in (SessionState.EXPIRED, SessionState.CLOSED):
            self.session = self._new_session()
            state = self.session.state
        if state is SessionState.NEW:
            self.busy = True
            self.sessions_opened += 1

            session = self.session

            def opened(result: Message) -> None:
                self.busy = False
                if session.usable:
                    self.pending_effects.extend(session.subscribe(
                        self.now_hint, f"{self.root}/f0", (EventKind.CONTENTS_MODIFIED,), subscribed))

            def subscribed(result: Message) -> None:
                if isinstance(result, Done) and session is self.session:
                    self.subscribed_ms = self.now_hint

            self.subscribed_ms = float("inf")
            out.extend(self.session.open(now_ms, opened))
            return
        if not self.session.lease_safe(now_ms):
            return
        draw = self.rng.random()
        if draw < 0.15:
            self._create(now_ms, out)
        elif draw < 0.45:
            self._write(now_ms, out)
        elif draw < 0.8:
            self._read(now_ms, out)
        else:
            self._lock(now_ms, out)

    def _record(self, operation: tuple[str, ...], now_ms: float, *, cached: bool = False) -> _FileOp:
        op = _FileOp(operation=operation, start_ms=now_ms, cached=cached)
        self.history.append(op)
        return op

    def _finish(self, op: _FileOp, result: Message) -> None:
        # With ``overlap`` a read and a write are in flight at once: the client
        # is free for its next operation (a lock, say) only when both are done,
        # or two lock flows of one client would interleave and one would write
        # to the resource after the other released the lock.
        self.file_ops_open -= 1
        if self.file_ops_open == 0:
            self.busy = False
        op.end_ms = self.session_clock()
        match result:
            case NodeMeta() | Done():
                op.outcome = "ok"
            case Contents():
                op.outcome, op.result = "ok", result.contents.decode()
            case OpError(code="not_found") if op.operation[0] == "get":
                op.outcome, op.result = "ok", None
            case OpError(code=code) if code in ("exists", "not_found", "bad_path", "too_large"):
                op.outcome = "fail"
            case _:
                op.outcome = "info"

    def session_clock(self) -> float:
        return self.now_hint

    def _create(self, now_ms: float, out: Effects) -> None:
        path = self._file()
        op = self._record(("put", path, ""), now_ms)
        self.busy = True
        self.file_ops_open += 1
        out.extend(self.session.call(now_ms, Create(session=self.session.session, path=path),
                                     lambda result: self._finish(op, result)))

    def _write(self, now_ms: float, out: Effects, path: str | None = None) -> None:
        path = path or self._file()
        self.counter += 1
        value = f"{self.node}:{self.counter}"
        op = self._record(("put", path, value), now_ms)
        self.busy = True
        self.file_ops_open += 1
        out.extend(self.session.call(now_ms, Write(session=self.session.session, path=path,
                                                   contents=value.encode()),
                                     lambda result: self._finish(op, result)))

    def _read(self, now_ms: float, out: Effects) -> None:
        path = self._file()
        cache = self.rng.random() < 0.8
        cached_now = cache and self.session.lease_safe(now_ms) and path in self.session.cache.entries
        op = self._record(("get", path), now_ms, cached=cached_now)
        self.busy = True
        self.file_ops_open += 1
        out.extend(self.session.read(now_ms, path, lambda result: self._finish(op, result), cache=cache))
        if self.config.overlap and self.rng.random() < self.config.overlap:
            self._write(now_ms, out, path)

    def _lock(self, now_ms: float, out: Effects) -> None:
        path = f"{self.root}/lock"
        self.busy = True

        def created(result: Message) -> None:
            out2 = self.session.call(self.now_hint, Acquire(session=self.session.session, path=path,
                                                            mode=LockMode.EXCLUSIVE, now_ms=0.0), acquired)
            self.pending_effects.extend(out2)

        def acquired(result: Message) -> None:
            if isinstance(result, Acquired):
                self.holding = result.sequencer
                # Hold it a while before touching the resource, as real work would.
                self.pending_effects.append(SetTimer(key="wl/fenced", delay_ms=self.rng.uniform(0.0, 300.0)))
            else:
                self.busy = False

        out.extend(self.session.call(now_ms, Create(session=self.session.session, path=path), created))

    def _fenced_write(self, now_ms: float, out: Effects) -> None:
        sequencer = self.holding
        if sequencer is None:
            self.busy = False
            return
        if not self.session.lease_safe(now_ms):
            # A careful holder checks its lease before acting on the lock.
            self.holding = None
            self.busy = False
            return
        self.counter += 1
        value = f"{self.node}:{self.counter}"
        self.writing = FencedWrite(sequencer=sequencer, value=value)
        send = self._resource_send(self.writing)
        if self.rng.random() < self.config.pause_probability:
            # Checked the lease, then stopped for longer than the lease: the
            # write goes out late, from a holder that may no longer hold.
            pause_ms = self.rng.uniform(self.config.cell.lease_ms + 100.0, self.config.cell.lease_ms + 600.0)
            self.paused_until = now_ms + pause_ms
            self.delayed_send = send
            out.append(SetTimer(key="wl/unpause", delay_ms=pause_ms))
            return
        out.append(send)
        out.append(SetTimer(key="wl/rewrite", delay_ms=150.0))

    def _resource_send(self, write: FencedWrite) -> Send:
        request_id = self.request_next
        self.request_next += 1
        self.resource_requests[request_id] = write.value
        return Send(to=RESOURCE, message=ClientRequest(request_id=request_id, body=write))

    def _rewrite(self, now_ms: float, out: Effects) -> None:
        """No answer from the resource yet: send the write again, but only while
        the lease is certainly held. Never release before the write is answered
        (a clean release has no lock-delay to cover a write still in flight):
        without an answer the holder lets its session lapse instead."""
        if self.writing is None:
            return
        if not self.session.lease_safe(now_ms):
            self.writing = None
            self.holding = None
            self.busy = False
            return
        out.append(self._resource_send(self.writing))
        out.append(SetTimer(key="wl/rewrite", delay_ms=150.0))

    def _release(self, now_ms: float, out: Effects) -> None:
        sequencer = self.holding
        self.holding = None
        if sequencer is None or not self.session.usable:
            self.busy = False
            return

        def released(result: Message) -> None:
            self.busy = False

        out.extend(self.session.call(now_ms, Release(session=self.session.session, path=sequencer.path), released))

    def _unpause(self, now_ms: float) -> Effects:
        self.paused_until = float("-inf")
        out: Effects = [self.delayed_send, SetTimer(key="wl/rewrite", delay_ms=150.0)]
        buffered, self.buffered = self.buffered, []
        for kind, source, item in buffered:
            if kind == "message":
                assert isinstance(item, Message)
                out.extend(self.on_message(now_ms, source, item))
            else:
                assert isinstance(item, str)
                out.extend(self.on_timer(now_ms, item))
        return out

    now_hint = 0.0
    writing: FencedWrite | None = None
    subscribed_ms = float("inf")
    delayed_send: Send
    pending_effects: Effects


class _Driven:
    """Wraps a workload so every handler first tells it the time and gathers the
    effects its callbacks add."""

    def __init__(self, inner: LockWorkload) -> None:
        self.inner = inner

    def _wrap(self, now_ms: float, call: object) -> Effects:
        self.inner.now_hint = now_ms
        extra: Effects = []
        self.inner.pending_effects = extra
        assert callable(call)
        out: Effects = list(call())
        out.extend(extra)
        return out

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return self._wrap(now_ms, lambda: self.inner.start(now_ms, recovered))

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        return self._wrap(now_ms, lambda: self.inner.on_message(now_ms, source, message))

    def on_timer(self, now_ms: float, key: str) -> Effects:
        return self._wrap(now_ms, lambda: self.inner.on_timer(now_ms, key))

    def check_invariants(self) -> None:
        self.inner.check_invariants()


@dataclass(frozen=True, slots=True, kw_only=True)
class _WorkloadFactory:
    config: _WorkloadConfig

    def __call__(self, node: NodeId, rng: random.Random) -> _Driven:
        return _Driven(LockWorkload(node, rng, self.config))


@dataclass(frozen=True, slots=True, kw_only=True)
class _ResourceFactory:
    journal: _Journal

    def __call__(self, node: NodeId, rng: random.Random) -> ResourceCore:
        return ResourceCore(node, rng, self.journal)


class _MasterChurn:
    """During chaos, every ``churn_ms`` on average, crash the master or cut it off."""

    def __init__(self, simulation: Simulation, replicas: tuple[NodeId, ...], chaos_ms: float, churn_ms: float) -> None:
        self.simulation = simulation
        self.replicas = replicas
        self.chaos_ms = chaos_ms
        self.churn_ms = churn_ms
        self.rng = simulation.rng("lock/churn")

    def arm(self) -> None:
        self.simulation.schedule(self.rng.expovariate(1.0 / self.churn_ms), "lock churn", self.strike)

    def strike(self) -> None:
        now = self.simulation.now_ms
        if now >= self.chaos_ms:
            return
        self.arm()
        up = [n for n in self.replicas if self.simulation.is_up(n)]
        if len(up) < len(self.replicas):
            return
        master = next((n for n in up if isinstance(core := self.simulation.core(n), LockServer) and core.is_master), None)
        if master is None:
            return
        others: list[str] = [n for n in self.replicas if n != master]
        if self.rng.random() < 0.5:
            self.simulation.inject(Crash(at_ms=now, node=master, down_ms=self.rng.uniform(50.0, 500.0),
                                         mid_write=self.rng.random() < 0.5))
        else:
            self.simulation.partition([master], others, self.rng.uniform(100.0, 800.0))


def lock_scenario(seed: int, options: ScenarioOptions) -> ScenarioResult:
    """A lock cell under chaos: linearizable files, fencing holds, no stale cache, sessions cleaned up."""
    client_count = options.get_int("clients", 4)
    base = SimConfig(crashed_nodes_max=1)
    base = dataclasses.replace(base, chaos_ms=options.get_float("chaos_ms", base.chaos_ms),
                               heal_ms=options.get_float("heal_ms", base.heal_ms))
    paxos = dataclasses.replace(
        PaxosConfig.sim(), election_timeout_ms=100.0, heartbeat_interval_ms=10.0, lease_ms=100.0,
        clock_drift_bound_ms=10.0, check_quorum_ms=100.0,
    )
    drift_ppm = 0.9 * paxos.clock_drift_bound_ms / (2 * paxos.lease_ms) * 1e6
    base = dataclasses.replace(base, clock_drift_ppm_max=drift_ppm)
    sim_config = options.sim_config(base)
    cell = LockConfig.sim()
    replicas = (NodeId("n1"), NodeId("n2"), NodeId("n3"))
    clients = [NodeId(f"c{i}") for i in range(1, client_count + 1)]
    journal = _Journal()
    simulation = Simulation(seed, sim_config, trace_sink=options.trace_sink)
    journal.simulation = simulation
    # ``-o window=4`` runs the Paxos window lock_factory runs (CELL_WINDOW_SLOTS,
    # many commands per slot); it found a replica catch-up loop on a stale
    # snapshot (seed 113, fixed in the replica, 6da7a07). The default stays the
    # sim preset's 8: with 4 the planted lock.skip_lock_delay bug is not caught
    # in seeds 0-5 (fewer, larger slots change the schedules), so the mutant
    # test would need other seeds first.
    window = options.get_int("window", paxos.window_slots_max)
    factory = LockServerFactory(members=replicas, config=cell,
                                paxos=dataclasses.replace(paxos, window_slots_max=window),
                                event_observer=journal.on_events)
    for node in replicas:
        simulation.add_node(node, factory)
    simulation.add_node(RESOURCE, _ResourceFactory(journal=journal), fault_prone=False)
    workload = _WorkloadConfig(
        cell=cell, servers=replicas, files=options.get_int("files", 3),
        op_interval_ms=options.get_float("op_interval_ms", 10.0),
        pause_probability=options.get_float("pause_probability", 0.3),
        overlap=options.get_float("overlap", 0.0),
        stop_ms=sim_config.chaos_ms + sim_config.heal_ms * 0.5,
    )
    for node in clients:
        simulation.add_node(node, _WorkloadFactory(config=workload), fault_prone=False)
    churn_ms = options.get_float("churn_ms", 600.0)
    if churn_ms > 0:
        _MasterChurn(simulation, replicas, sim_config.chaos_ms, churn_ms).arm()
    simulation.run_chaos_then_heal()

    violations: list[str] = []
    servers = [core for node in replicas if isinstance(core := simulation.core(node), LockServer)]
    digests: dict[Hashable, object] = {s.node: (s.namespace.digest(), s.replica.chosen_index) for s in servers}
    violations += check_converged(digests)
    workloads = []
    for node in clients:
        driven = simulation.core(node)
        assert isinstance(driven, _Driven)
        workloads.append((node, driven.inner))
    violations += _check_files(simulation, workloads)
    violations += _check_fencing(journal)
    if servers:
        violations += _check_ended_sessions(journal, servers[0])
        violations += _check_events(simulation, journal, workloads, cell.root)
    masters = sum(1 for s in servers if s.is_master)
    if masters != 1:
        violations.append(f"liveness: {masters} masters after healing")
    stats = {
        "file_ops": float(sum(len(w.history) for _n, w in workloads)),
        "cached_reads": float(sum(1 for _n, w in workloads for op in w.history if op.cached)),
        "fenced_writes_accepted": float(len(journal.accepted_writes)),
        "acquires": float(len(journal.acquired)),
        "sessions_ended": float(len(journal.ended_sessions)),
        "sessions_opened": float(sum(w.sessions_opened for _n, w in workloads)),
    }
    return result_from_simulation(NAME, seed, simulation, violations, stats)


def _check_files(simulation: Simulation, workloads: list[tuple[NodeId, LockWorkload]]) -> list[str]:
    recorder = HistoryRecorder()
    violations: list[str] = []
    timeline: list[tuple[NodeId, _FileOp, float, float]] = []
    for node, workload in workloads:
        clock = simulation.clock(node)

        def true_ms(local_ms: float, clock: NodeClock = clock) -> float:
            return (local_ms - clock.offset_ms) / clock.rate

        for op in workload.history:
            start, end = true_ms(op.start_ms), true_ms(max(op.end_ms, op.start_ms))
            if op.outcome == "fail":
                continue
            op_id = recorder.invoke(node, op.operation, start)
            if op.outcome == "ok":
                recorder.ok(op_id, op.result, end)
                timeline.append((node, op, start, end))
            else:
                recorder.info(op_id, None, "timeout")
    result = check_linearizability(recorder.history())
    violations += [v.message for v in result.violations]
    # No read returns a value older than a write that completed before it began.
    writes = [(op.operation[1], op.operation[2], start, end) for _n, op, start, end in timeline if op.operation[0] == "put"]
    for node, op, start, _end in timeline:
        if op.operation[0] != "get" or op.result is None:
            continue
        path = op.operation[1]
        source = [w for w in writes if w[0] == path and w[1] == op.result]
        if not source:
            continue
        source_end = min(w[3] for w in source)
        newer = [w for w in writes if w[0] == path and w[2] > source_end and w[3] < start and w[1] != op.result]
        if newer:
            kind = "cached" if op.cached else "uncached"
            violations.append(
                f"stale {kind} read by {node} at {start:.1f} ms of {path}: got {op.result!r}, but "
                f"{newer[0][1]!r} was written (completed at {newer[0][3]:.1f} ms) after it")
    return violations


def _check_fencing(journal: _Journal) -> list[str]:
    violations: list[str] = []
    for accepted_ms, sequencer, value in journal.accepted_writes:
        newer = [(gen, at) for (path, gen), at in journal.acquired.items()
                 if path == sequencer.path and gen > sequencer.lock_generation and at < accepted_ms]
        if newer:
            gen, at = min(newer)
            violations.append(
                f"fencing: resource accepted {value!r} with generation {sequencer.lock_generation} at "
                f"{accepted_ms:.1f} ms, but generation {gen} of {sequencer.path} was acquired at {at:.1f} ms")
    return violations


def _check_ended_sessions(journal: _Journal, server: LockServer) -> list[str]:
    namespace = server.namespace
    live = set(namespace.session_ids())
    violations = [f"session {s} ended but is still open" for s in sorted(journal.ended_sessions & live)]
    for path in namespace.paths():
        held = [s for s in namespace.holders(path) if s in journal.ended_sessions]
        if held:
            violations.append(f"{path} is still locked by ended session(s) {held}")
    for path, owner in namespace.ephemeral_owners().items():
        if owner in journal.ended_sessions:
            violations.append(f"ephemeral {path} outlived its session {owner}")
    return violations


def _check_events(simulation: Simulation, journal: _Journal, workloads: list[tuple[NodeId, LockWorkload]],
                  root: str) -> list[str]:
    """A session that is safe at the end, subscribed before the last change to
    the watched file was chosen and heard of no failover since, heard of it."""
    path = f"{root}/f0"
    last = journal.last_event.get(path)
    if last is None:
        return []
    last_ms = journal.event_ms[last]
    violations = []
    for node, workload in workloads:
        session = workload.session
        if session.state is not SessionState.SAFE:
            continue
        clock = simulation.clock(node)
        subscribed_ms = (workload.subscribed_ms - clock.offset_ms) / clock.rate
        mine = [event for owner, event in workload.events if owner is session]
        if subscribed_ms >= last_ms or any(e.kind is EventKind.MASTER_FAILED_OVER for e in mine):
            continue
        heard = [e.index for e in mine if e.kind is EventKind.CONTENTS_MODIFIED and e.path == path]
        if last not in heard:
            violations.append(f"events: {node} (session safe) never heard of the last change to {path} (event {last})")
        if heard != sorted(heard):
            violations.append(f"events: {node} heard events of {path} out of order: {heard}")
    return violations


register_scenario(NAME, lock_scenario)
