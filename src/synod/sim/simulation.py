"""The deterministic simulator: a whole cluster in one single-threaded process.

Theory of operation
-------------------
A ``Simulation`` owns virtual time and ONE event heap ordered by ``(time_ms,
sequence)``; the sequence number (a counter) breaks ties in scheduling order, so
two events at the same millisecond always run in the same order. Each step pops
one event, advances time to it and carries it out:

* a message delivery: the bytes are decoded (every message was encoded with the
  wire codec when sent, so everything that crosses the simulated network is proved
  wire-safe and duplicates are independent objects) and handed to the
  destination core's ``on_message``;
* a timer firing: ``on_timer`` -- unless the timer was cancelled or re-armed since
  (each arming gets a fresh token; only the current token fires);
* an fsync completing: the node's log is synced and the ``then`` effects of every
  ``Persist`` covered by that fsync run, in order (group commit: one fsync for all
  the Persists appended before it started);
* a scheduled action: a fault from the chaos schedule, a restart, a scenario's
  call.

Effects are carried out exactly as ``synod.core.effects`` says, in list order.
After every step that ran a core, its ``check_invariants()`` is called.

Nodes host any ``Core`` built by a ``CoreFactory(node, rng)``. A node's randomness
is ``random.Random(f"{seed}/{node}/...")`` -- derived from the seed *by name*
(``random.Random`` hashes a string seed with SHA-512, never with ``hash()``), so a
node's draws do not depend on what other nodes do. A crash drops the Core object
(all volatile state), every armed timer and every Persist not yet fsynced, and
crashes the node's ``SimDisk`` (unsynced writes lost, the last one maybe torn). A
restart builds a fresh core and calls ``start(now, Recovered(records, snapshot))``
with what the write-ahead log and the snapshot store recovered, after checking
those records against what the node appended (see ``synod.sim.disk``). A
``SaveSnapshot`` waits in the group-commit queue behind earlier Persists, is
written when their fsync completes, and truncates the log.

Every event writes one line to the ``Trace``, whose running sha256 is the run's
fingerprint: the same seed on the same commit gives the same digest.

Anything a core raises, an invariant that fails, a storage check that fails or a
scenario hook that raises stops the run with ``SimulationFailure``, carrying the
virtual time, the node and the last trace lines.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from synod.codec import ClientReply, ClientRequest, Message, decode, encode
from synod.core import (
    CancelTimer,
    ClientResult,
    Core,
    CoreFactory,
    Effect,
    Persist,
    SaveSnapshot,
    Send,
    SetTimer,
)
from synod.core.errors import ConfigError, RemoteProtocolError
from synod.core.faults import disable_buggify, enable_buggify
from synod.core.ids import NodeId, node_id
from synod.sim.clock import NodeClock
from synod.sim.config import SimConfig
from synod.sim.disk import NodeDisk, Token
from synod.sim.network import Network
from synod.sim.schedule import (
    Clog,
    Crash,
    Fault,
    LossBurst,
    OneWayCut,
    Partition,
    describe,
    draw_schedule,
)
from synod.sim.trace import Trace
from synod.storage import CommitBatch, SimDiskConfig


class SimulationFailure(Exception):
    """The run found a bug: a core raised, an invariant or a check failed."""

    def __init__(
        self, message: str, *, time_ms: float, node: str, trace_tail: list[str], trace_digest: str
    ) -> None:
        super().__init__(message)
        self.time_ms = time_ms
        self.node = node
        self.trace_tail = trace_tail
        self.trace_digest = trace_digest

    def report(self) -> str:
        """The failure with the trace lines that led to it."""
        lines = [f"at {self.time_ms:.3f}ms on {self.node or '-'}: {self}", "last trace lines:"]
        lines += [f"  {line}" for line in self.trace_tail]
        return "\n".join(lines)


class Violation(AssertionError):
    """Raised by a scenario's check (for example in an ``on_start`` hook)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimStatistics:
    """What a run has done so far."""

    time_ms: float
    events: int
    messages_sent: int
    messages_delivered: int
    messages_duplicated: int
    dropped_loss: int
    dropped_partition: int
    dropped_down: int
    timers_fired: int
    persists: int
    records_appended: int
    fsyncs: int
    snapshots: int
    crashes: int
    restarts: int
    faults_injected: int


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class _Deliver:
    source: str
    destination: str
    payload: bytes
    label: str


@dataclass(frozen=True, slots=True)
class _TimerFire:
    node: str
    key: str
    token: int


@dataclass(frozen=True, slots=True)
class _FsyncDone:
    node: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class _Action:
    node: str
    label: str
    action: Callable[[], None]
    #: Part of the chaos schedule (a fault or a restart): dropped by ``heal()``.
    chaos: bool = False


_Event = _Deliver | _TimerFire | _FsyncDone | _Action


class _Node:
    """Everything the simulator keeps about one node."""

    def __init__(
        self,
        name: str,
        factory: CoreFactory,
        fault_prone: bool,
        clock: NodeClock,
        disk_rng: random.Random,
        disk_config: SimDiskConfig,
        storage_check: bool,
    ) -> None:
        self.name = name
        self.factory = factory
        self.fault_prone = fault_prone
        self.clock = clock
        self.disk = NodeDisk(name, disk_config, check=storage_check)
        #: Draws fsync latencies and what a crash does to the disk.
        self.disk_rng = disk_rng
        self.core: Core | None = None
        #: Bumped at every crash, so events of a previous life are ignored.
        self.incarnation = 0
        #: Armed timers: key -> token of the current arming.
        self.timers: dict[str, int] = {}
        #: The group-commit batch whose fsync is in flight, if any.
        self.batch: CommitBatch[Token] | None = None
        #: A mid-write crash waiting for a write: (arming number, down_ms).
        self.armed_crash: tuple[int, float] | None = None


def _label(message: Message) -> str:
    name = type(message).__name__
    if isinstance(message, ClientRequest | ClientReply):
        return f"{name}({type(message.body).__name__})"
    return name


class Simulation:
    """A seeded, single-threaded simulation of a cluster of cores."""

    def __init__(
        self,
        seed: int,
        config: SimConfig | None = None,
        *,
        trace_sink: Callable[[str], None] | None = None,
    ) -> None:
        self.seed = seed
        self.config = config if config is not None else SimConfig()
        self._trace = Trace(trace_sink)
        self._heap: list[tuple[float, int, _Event]] = []
        self._sequence = 0
        self._now_ms = 0.0
        self._nodes: dict[str, _Node] = {}
        self._network = Network(self.config, self.rng("network"))
        self._start_hooks: list[Callable[[str, Core], None]] = []
        self._timer_tokens = 0
        self._arming = 0
        self._counts: dict[str, int] = dict.fromkeys(
            ("events", "messages_sent", "messages_delivered", "messages_duplicated",
             "dropped_loss", "dropped_partition", "dropped_down", "timers_fired", "persists",
             "records_appended", "fsyncs", "snapshots", "crashes", "restarts", "faults_injected"), 0)
        if self.config.buggify:
            enable_buggify(seed)
        else:
            disable_buggify()

    # ------------------------------------------------------------ set-up

    def rng(self, name: str) -> random.Random:
        """A generator derived from the seed and ``name`` (stable across runs)."""
        return random.Random(f"{self.seed}/{name}")

    def add_node(self, name: str, factory: CoreFactory, *, fault_prone: bool = True) -> None:
        """Add a node; ``fault_prone`` nodes may be crashed by the chaos schedule
        (keep client nodes, whose histories the checks read, not fault-prone)."""
        if name in self._nodes:
            raise ConfigError(f"node {name!r} added twice")
        node_id(name)  # ConfigError unless a valid node id
        clock = NodeClock.draw(
            self.rng(f"{name}/clock"), self.config.clock_skew_ms_max, self.config.clock_drift_ppm_max
        )
        disk_config = SimDiskConfig(
            sector_bytes=self.config.disk_sector_bytes,
            tear_probability=self.config.disk_tear_probability,
        )
        self._nodes[name] = _Node(
            name, factory, fault_prone, clock, self.rng(f"{name}/disk"), disk_config,
            self.config.storage_check,
        )

    def on_start(self, hook: Callable[[str, Core], None]) -> None:
        """Call ``hook(node, core)`` right after every (re)start of a node's core,
        before any other event reaches it: the moment to check what it recovered."""
        self._start_hooks.append(hook)

    def start(self) -> None:
        """Boot every node that is not running yet, in the order they were added."""
        for node in self._nodes.values():
            if node.core is None:
                self._boot(node)

    # ------------------------------------------------------------ queries

    @property
    def now_ms(self) -> float:
        """True virtual time."""
        return self._now_ms

    @property
    def nodes(self) -> list[str]:
        return list(self._nodes)

    @property
    def fault_prone_nodes(self) -> list[str]:
        return [n.name for n in self._nodes.values() if n.fault_prone]

    def local_ms(self, node: str) -> float:
        """What ``node``'s clock reads now (what its core is given as ``now_ms``)."""
        return self._node(node).clock.local_ms(self._now_ms)

    def clock(self, node: str) -> NodeClock:
        return self._node(node).clock

    def is_up(self, node: str) -> bool:
        return self._node(node).core is not None

    def link_healthy(self, a: str, b: str) -> bool:
        """Both nodes up and no network fault between them now (see
        ``Network.is_healthy``): what a liveness check may demand progress over."""
        return self.is_up(a) and self.is_up(b) and self._network.is_healthy(a, b, self._now_ms)

    def core(self, node: str) -> Core:
        """The running core of ``node`` (``LookupError`` while it is down)."""
        core = self._node(node).core
        if core is None:
            raise LookupError(f"node {node} is down")
        return core

    def disk(self, node: str) -> NodeDisk:
        return self._node(node).disk

    def trace_digest(self) -> str:
        """Hex sha256 of the trace so far."""
        return self._trace.digest()

    def trace_tail(self) -> list[str]:
        return self._trace.tail()

    def statistics(self) -> SimStatistics:
        return SimStatistics(time_ms=self._now_ms, **self._counts)

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            raise LookupError(f"no node {name!r} in this simulation")
        return node

    # ------------------------------------------------------------ running

    def schedule(self, delay_ms: float, label: str, action: Callable[[], None], *, node: str = "") -> None:
        """Run ``action()`` after ``delay_ms`` of virtual time (a scenario's hook)."""
        if delay_ms < 0:
            raise ConfigError(f"cannot schedule {label!r} in the past ({delay_ms}ms)")
        self._push(self._now_ms + delay_ms, _Action(node, label, action))

    def step(self) -> bool:
        """Carry out the next event; False when there is none."""
        if not self._heap:
            return False
        time_ms, _sequence, event = heapq.heappop(self._heap)
        self._now_ms = time_ms
        self._counts["events"] += 1
        if self._counts["events"] > self.config.events_max:
            self._fail("", f"more than events_max={self.config.events_max} events: livelock?")
        match event:
            case _Deliver():
                self._deliver(event)
            case _TimerFire():
                self._fire(event)
            case _FsyncDone():
                self._fsync_done(event)
            case _Action(node=node, label=label, action=action):
                self._trace.record(time_ms, node or "-", "action", label)
                try:
                    action()
                except SimulationFailure:
                    raise
                except Exception as error:
                    self._fail(node, f"{label}: {type(error).__name__}: {error}", error)
        return True

    def run_until(self, time_ms: float) -> None:
        """Carry out every event up to and including ``time_ms``; then time is ``time_ms``."""
        while self._heap and self._heap[0][0] <= time_ms:
            self.step()
        self._now_ms = max(self._now_ms, time_ms)

    def run_for(self, duration_ms: float) -> None:
        self.run_until(self._now_ms + duration_ms)

    def run_chaos_then_heal(self) -> list[Fault]:
        """The standard run: start every node, inject a chaos schedule drawn from the
        seed for ``config.chaos_ms``, heal, then run ``config.heal_ms`` more.
        Returns the schedule that was injected."""
        self.start()
        faults = self.plan_chaos()
        self.run_until(self._now_ms + self.config.chaos_ms)
        self.heal()
        self.run_for(self.config.heal_ms)
        return faults

    def _push(self, time_ms: float, event: _Event) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (time_ms, self._sequence, event))
        if len(self._heap) > self.config.pending_events_max:
            self._fail("", f"more than pending_events_max={self.config.pending_events_max} pending events")

    def _fail(self, node: str, message: str, cause: BaseException | None = None) -> None:
        failure = SimulationFailure(
            message, time_ms=self._now_ms, node=node, trace_tail=self._trace.tail(),
            trace_digest=self._trace.digest(),
        )
        raise failure from cause

    # ------------------------------------------------------------ cores

    def _run_core(self, node: _Node, what: str, handler: Callable[[float], Sequence[Effect]]) -> None:
        """Call one handler of ``node``'s core, carry out its effects, check invariants."""
        try:
            effects = handler(node.clock.local_ms(self._now_ms))
            self._execute(node, effects)
            assert node.core is not None
            node.core.check_invariants()
        except SimulationFailure:
            raise
        except Exception as error:
            self._fail(node.name, f"{what}: {type(error).__name__}: {error}", error)

    def _boot(self, node: _Node) -> None:
        assert node.core is None
        rng = random.Random(f"{self.seed}/{node.name}/core/{node.incarnation}")
        try:
            recovered = node.disk.open()
        except Exception as error:
            self._fail(node.name, f"recovery: {type(error).__name__}: {error}", error)
        node.core = node.factory(NodeId(node.name), rng)
        core = node.core
        snapshot = "" if recovered.snapshot is None else f" snapshot={len(recovered.snapshot)}"
        self._trace.record(self._now_ms, node.name, "start",
                           f"life={node.incarnation} records={len(recovered.records)}{snapshot}")
        self._run_core(node, "start", lambda now: core.start(now, recovered))
        for hook in self._start_hooks:
            try:
                hook(node.name, core)
            except Exception as error:
                self._fail(node.name, f"check after start: {type(error).__name__}: {error}", error)

    def _execute(self, node: _Node, effects: Sequence[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message):
                    self._send(node.name, to, message)
                case SetTimer(key=key, delay_ms=delay_ms):
                    if not delay_ms >= 0:
                        raise ValueError(f"SetTimer({key!r}) with delay_ms={delay_ms}")
                    self._timer_tokens += 1
                    node.timers[key] = self._timer_tokens
                    fire_ms = self._now_ms + node.clock.true_delay_ms(delay_ms)
                    self._push(fire_ms, _TimerFire(node.name, key, self._timer_tokens))
                case CancelTimer(key=key):
                    node.timers.pop(key, None)
                case Persist(records=records, then=then):
                    self._counts["persists"] += 1
                    self._counts["records_appended"] += len(records)
                    node.disk.submit(records, then)
                    self._start_fsync(node)
                case SaveSnapshot():
                    self._counts["snapshots"] += 1
                    node.disk.submit_snapshot(effect)
                    self._start_fsync(node)
                case ClientResult(client=client, request_id=request_id, result=result):
                    self._send(node.name, client, ClientReply(request_id=request_id, body=result))
                case _:
                    raise TypeError(f"not an effect: {effect!r}")

    # ------------------------------------------------------------ network

    def _send(self, source: str, destination: str, message: Message) -> None:
        payload = encode(message)
        label = _label(message)
        self._counts["messages_sent"] += 1
        route = self._network.route(source, destination, self._now_ms)
        if route.drop_reason:
            self._counts[f"dropped_{route.drop_reason}"] += 1
            self._trace.record(self._now_ms, source, "drop", f"{source}>{destination} {label} {route.drop_reason}")
            return
        if len(route.deliver_at_ms) > 1:
            self._counts["messages_duplicated"] += 1
        for at_ms in route.deliver_at_ms:
            self._push(at_ms, _Deliver(source, destination, payload, label))

    def _deliver(self, event: _Deliver) -> None:
        edge = f"{event.source}>{event.destination} {event.label}"
        target = self._nodes.get(event.destination)
        if self._network.is_cut(event.source, event.destination, self._now_ms):
            self._counts["dropped_partition"] += 1
            self._trace.record(self._now_ms, event.destination, "drop", f"{edge} partition")
            return
        if target is None or target.core is None:
            self._counts["dropped_down"] += 1
            self._trace.record(self._now_ms, event.destination, "drop", f"{edge} down")
            return
        try:
            message = decode(event.payload)
        except RemoteProtocolError as error:
            self._fail(event.destination, f"a message we encoded did not decode: {error}", error)
        self._counts["messages_delivered"] += 1
        self._trace.record(self._now_ms, event.destination, "recv", edge)
        core = target.core
        source = NodeId(event.source)
        self._run_core(target, f"on_message {edge}", lambda now: core.on_message(now, source, message))

    # ------------------------------------------------------------ timers and disk

    def _fire(self, event: _TimerFire) -> None:
        node = self._nodes[event.node]
        if node.timers.get(event.key) != event.token or node.core is None:
            return  # cancelled, re-armed, or from a previous life
        del node.timers[event.key]
        self._counts["timers_fired"] += 1
        self._trace.record(self._now_ms, node.name, "timer", event.key)
        core = node.core
        self._run_core(node, f"on_timer {event.key}", lambda now: core.on_timer(now, event.key))

    def _start_fsync(self, node: _Node) -> None:
        """Write the next group-commit batch and schedule its fsync's completion."""
        if node.batch is not None:
            return
        node.batch = node.disk.start_batch()
        if node.batch is None:
            return
        latency_ms = node.disk_rng.uniform(self.config.fsync_ms_min, self.config.fsync_ms_max)
        self._push(self._now_ms + latency_ms, _FsyncDone(node.name, node.incarnation))
        if node.armed_crash is not None:
            # Strike strictly inside the fsync window: random() < 1.
            arming, _down_ms = node.armed_crash
            strike_ms = self._now_ms + latency_ms * node.disk_rng.random()
            self._push(strike_ms, _Action(node.name, "crash", self._striker(node.name, arming), chaos=True))

    def _fsync_done(self, event: _FsyncDone) -> None:
        node = self._nodes[event.node]
        if node.incarnation != event.incarnation or node.core is None:
            return
        batch, node.batch = node.batch, None
        assert batch is not None
        try:
            thens = node.disk.finish_batch(batch)
        except Exception as error:
            self._fail(node.name, f"fsync: {type(error).__name__}: {error}", error)
        self._counts["fsyncs"] += 1
        released = [effect for then in thens for effect in then]
        self._trace.record(
            self._now_ms, node.name, "fsync",
            f"batch={batch.number} records={len(batch.records)} persists={len(thens)}",
        )
        core = node.core
        self._run_core(node, "persisted", lambda _now: released)
        if node.core is core:
            self._start_fsync(node)

    # ------------------------------------------------------------ faults

    def crash(self, name: str) -> None:
        """Power loss on ``name``: the core and everything volatile are gone, the
        disk loses unsynced writes. A no-op if it is already down."""
        node = self._node(name)
        if node.core is None:
            return
        self._counts["crashes"] += 1
        self._trace.record(self._now_ms, name, "crash", f"life={node.incarnation}")
        node.core = None
        node.incarnation += 1
        node.timers.clear()
        node.batch = None
        node.armed_crash = None
        node.disk.crash(node.disk_rng)

    def restart(self, name: str) -> None:
        """Build a fresh core for ``name`` from its disk. A no-op if it is up."""
        node = self._node(name)
        if node.core is not None:
            return
        self._counts["restarts"] += 1
        self._boot(node)

    def inject(self, fault: Fault) -> None:
        """Apply one fault now (its ``at_ms`` is ignored; see ``plan_chaos``)."""
        self._counts["faults_injected"] += 1
        self._trace.record(self._now_ms, "-", "fault", describe(fault))
        now = self._now_ms
        match fault:
            case Crash(node=node, down_ms=down_ms, mid_write=mid_write):
                target = self._node(node)
                if mid_write and target.core is not None and target.batch is None:
                    self._arming += 1
                    target.armed_crash = (self._arming, down_ms)
                    deadline_ms = now + self.config.mid_write_wait_ms_max
                    self._push(deadline_ms, _Action(node, "crash", self._striker(node, self._arming), chaos=True))
                else:
                    self._crash_for(node, down_ms)
            case Partition(side_a=a, side_b=b, duration_ms=d):
                self._network.partition(list(a), list(b), now + d)
            case OneWayCut(source=s, destination=t, duration_ms=d):
                self._network.cut(s, t, now + d)
            case Clog(node=node, destination=dest, duration_ms=d):
                if dest:
                    self._network.clog_link(node, dest, now + d)
                else:
                    self._network.clog_node(node, now + d)
            case LossBurst(probability=p, duration_ms=d):
                self._network.loss_burst(p, now + d)

    def plan_chaos(self) -> list[Fault]:
        """Draw the chaos schedule from the seed and schedule its faults from now."""
        faults = draw_schedule(
            self.rng("faults"), self.nodes, self.fault_prone_nodes, self.config, self._now_ms
        )
        for fault in faults:
            self._push(fault.at_ms, _Action("", "inject", self._injector(fault), chaos=True))
        return faults

    def _crash_for(self, node: str, down_ms: float) -> None:
        if not self.is_up(node):
            return
        self.crash(node)
        self._push(self._now_ms + down_ms, _Action(node, "restart", lambda: self.restart(node), chaos=True))

    def _striker(self, node: str, arming: int) -> Callable[[], None]:
        """The action that carries out the mid-write crash ``arming`` (once)."""

        def strike() -> None:
            target = self._node(node)
            if target.armed_crash is None or target.armed_crash[0] != arming:
                return
            self._crash_for(node, target.armed_crash[1])

        return strike

    def _injector(self, fault: Fault) -> Callable[[], None]:
        return lambda: self.inject(fault)

    def partition(self, side_a: list[str], side_b: list[str], duration_ms: float) -> None:
        self.inject(Partition(at_ms=self._now_ms, side_a=tuple(side_a), side_b=tuple(side_b), duration_ms=duration_ms))

    def cut(self, source: str, destination: str, duration_ms: float) -> None:
        self.inject(OneWayCut(at_ms=self._now_ms, source=source, destination=destination, duration_ms=duration_ms))

    def clog(self, node: str, duration_ms: float, destination: str = "") -> None:
        self.inject(Clog(at_ms=self._now_ms, node=node, destination=destination, duration_ms=duration_ms))

    def loss_burst(self, probability: float, duration_ms: float) -> None:
        self.inject(LossBurst(at_ms=self._now_ms, probability=probability, duration_ms=duration_ms))

    def repair_network(self) -> None:
        """Remove every partition, cut, clog and loss burst."""
        self._trace.record(self._now_ms, "-", "repair")
        self._network.repair()

    def heal(self) -> None:
        """Start the healing phase: repair the network, drop the rest of the chaos
        schedule, restart every fault-prone node (crash-and-restart the ones that
        are up when ``config.heal_restart_all``)."""
        self.repair_network()
        self._heap = [
            item for item in self._heap if not (isinstance(item[2], _Action) and item[2].chaos)
        ]
        heapq.heapify(self._heap)
        self._trace.record(self._now_ms, "-", "heal")
        for node in self._nodes.values():
            node.armed_crash = None
            if not node.fault_prone:
                continue
            if node.core is not None and self.config.heal_restart_all:
                self.crash(node.name)
            self.restart(node.name)

    def host(self, node: str) -> SimHost:
        """The ``synod.core.Host`` of ``node``, for glue code run in the simulation."""
        self._node(node)
        return SimHost(self, node)

    def execute_for(self, node: str, effects: Sequence[Effect]) -> None:
        """Carry out ``effects`` as if ``node``'s core had returned them (``SimHost``)."""
        target = self._node(node)
        if target.core is None:
            raise LookupError(f"node {node} is down")
        self._execute(target, effects)


class SimHost:
    """``synod.core.Host`` for one simulated node: its clock, its named generators,
    and effect execution through the simulation."""

    def __init__(self, simulation: Simulation, node: str) -> None:
        self._simulation = simulation
        self._node = NodeId(node)

    @property
    def node(self) -> NodeId:
        return self._node

    def now_ms(self) -> float:
        return self._simulation.local_ms(self._node)

    def rng(self, name: str) -> random.Random:
        return self._simulation.rng(f"{self._node}/host/{name}")

    def execute(self, effects: Sequence[Effect]) -> None:
        self._simulation.execute_for(self._node, effects)
