"""The ``gossip`` simulation scenario: SWIM + Lifeguard under crashes, stalls and loss.

Theory of operation
-------------------
``nodes`` members (``g01``, ``g02``, ...) run on ``synod.sim``; ``g01`` and
``g02`` are the seeds every other member joins through. The run has four
phases, all in the simulator's true time:

1. **join** (``join_ms``): everyone starts and joins.
2. **chaos** (``chaos_ms``): ``crashes`` members crash for good at random
   moments; half a second after each crash, ``stalls`` other members stall (a
   clogged node: nothing in or out, for ``stall_ms``, as a paused process),
   which both tests Lifeguard (a stalled member must not be declared failed; it
   refutes when it resumes) and puts members whose suspicion timers start late
   among the observers of the crash; ``loss`` drops that share of datagrams
   during the chaos phase.
3. **quiet** (``quiet_ms``): no new faults. Then the checks of
   ``synod.gossip.checks``: every crashed member is held failed by every live
   member; once the first member declares a crash, every live member that was
   not stalled does so within the verdict-spread bound (O(log n) gossip
   rounds); incarnations never go down; live members have converged on the
   truth; and, in a healthy network (no loss, no stalls), nobody live was ever
   declared failed.
4. **rejoin** (``restart``, on by default): the crashed members restart from
   their disks (a higher incarnation), and after ``rejoin_ms`` every member must
   hold every member alive.

Options: ``nodes`` (16), ``crashes`` (2), ``stalls`` (1 per crash), ``stall_ms``
(3500), ``loss`` (0.0), ``lifeguard`` (1), ``restart`` (1), ``join_ms``
(10000), ``chaos_ms`` (20000), ``quiet_ms`` (40000), ``rejoin_ms`` (20000), and
any ``sim.<SimConfig field>``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from synod.codec.registry import Message
from synod.core.effects import Core, Effects, Recovered
from synod.core.errors import ConfigError
from synod.core.ids import NodeId
from synod.gossip.checks import (
    EventRecorder,
    check_converged,
    check_crashes_detected,
    check_incarnations,
    check_no_false_failures,
    check_verdict_spread,
    verdict_spread_bound_ms,
)
from synod.gossip.config import GossipConfig
from synod.gossip.member import GossipMember
from synod.gossip.messages import MemberStatus
from synod.sim import (
    ScenarioOptions,
    ScenarioResult,
    SimConfig,
    Simulation,
    register_scenario,
    result_from_simulation,
)


class RecordedMember(GossipMember):
    """A member whose drained events go to ``recorder``, stamped with true time."""

    def __init__(self, node: NodeId, rng: random.Random, config: GossipConfig, *,
                 seeds: tuple[NodeId, ...], recorder: EventRecorder,
                 clock: Callable[[], float]) -> None:
        super().__init__(node, rng, config, address=f"{node}:7946", seeds=seeds)
        self._recorder = recorder
        self._clock = clock

    def _flush(self, effects: Effects) -> Effects:
        for event in self.drain_events():
            self._recorder(self.node, event, self._clock())
        return effects

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return self._flush(super().start(now_ms, recovered))

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        return self._flush(super().on_message(now_ms, source, message))

    def on_timer(self, now_ms: float, key: str) -> Effects:
        return self._flush(super().on_timer(now_ms, key))


def _member(simulation: Simulation, node: NodeId) -> GossipMember:
    core = simulation.core(node)
    assert isinstance(core, GossipMember)
    return core


def _views(simulation: Simulation, observers: list[NodeId],
           subjects: list[NodeId]) -> dict[NodeId, dict[NodeId, MemberStatus | None]]:
    views = {}
    for observer in observers:
        member = _member(simulation, observer)
        views[observer] = {subject: member.status_of(subject) for subject in subjects}
    return views


def _crasher(simulation: Simulation, node: NodeId) -> Callable[[], None]:
    return lambda: simulation.crash(node)


def _staller(simulation: Simulation, node: NodeId, duration_ms: float) -> Callable[[], None]:
    return lambda: simulation.clog(node, duration_ms)


def _lossy(simulation: Simulation, probability: float, duration_ms: float) -> Callable[[], None]:
    return lambda: simulation.loss_burst(probability, duration_ms)


def gossip_scenario(seed: int, options: ScenarioOptions) -> ScenarioResult:
    """SWIM + Lifeguard members under crashes, stalls and loss; checks detection, accuracy, convergence, rejoin."""
    node_count = options.get_int("nodes", 16)
    crash_count = options.get_int("crashes", 2)
    stalls_per_crash = options.get_int("stalls", 2)
    stall_ms = options.get_float("stall_ms", 4000.0)
    loss = options.get_float("loss", 0.0)
    lifeguard = options.get_int("lifeguard", 1) != 0
    restart = options.get_int("restart", 1) != 0
    join_ms = options.get_float("join_ms", 10_000.0)
    chaos_ms = options.get_float("chaos_ms", 20_000.0)
    quiet_ms = options.get_float("quiet_ms", 40_000.0)
    rejoin_ms = options.get_float("rejoin_ms", 20_000.0)
    if node_count < 3 or crash_count + 2 > node_count:
        raise ConfigError("gossip scenario: need nodes >= 3 and crashes <= nodes - 2")

    base = SimConfig(faults=False, buggify=False, loss_probability=0.0,
                     events_max=50_000_000, pending_events_max=5_000_000)
    sim_config = options.sim_config(base)
    config = dataclasses.replace(GossipConfig.sim(), lifeguard=lifeguard)
    simulation = Simulation(seed, sim_config, trace_sink=options.trace_sink)
    recorder = EventRecorder(record_joined=False)
    nodes = [NodeId(f"g{i:02d}") for i in range(1, node_count + 1)]
    seeds = (nodes[0], nodes[1])

    def factory(node: NodeId, rng: random.Random) -> Core:
        return RecordedMember(node, rng, config, seeds=seeds, recorder=recorder,
                              clock=lambda: simulation.now_ms)

    for node in nodes:
        simulation.add_node(node, factory)
    simulation.start()

    # The fault plan, drawn from the seed (seeds are not crashed: they are how
    # restarted members find the cluster again).
    plan = simulation.rng("gossip-plan")
    victims = plan.sample(nodes[2:], crash_count)
    crashed: dict[NodeId, float] = {}
    stalled: list[tuple[NodeId, float, float]] = []
    # Each bystander stalls at most once, so no stall grows longer than stall_ms.
    bystanders = [n for n in nodes if n not in victims]
    for victim in victims:
        crash_at = join_ms + plan.uniform(0.0, 0.6 * chaos_ms)
        crashed[victim] = crash_at
        simulation.schedule(crash_at, f"crash {victim}", _crasher(simulation, victim),
                            node=victim)
        for stalled_node in plan.sample(bystanders, min(stalls_per_crash, len(bystanders))):
            bystanders.remove(stalled_node)
            start = crash_at + 500.0
            stalled.append((stalled_node, start, start + stall_ms))
            simulation.schedule(start, f"stall {stalled_node}",
                                _staller(simulation, stalled_node, stall_ms), node=stalled_node)

    if loss > 0:
        simulation.schedule(join_ms, "loss", _lossy(simulation, loss, chaos_ms))
    detect_end_ms = join_ms + chaos_ms + quiet_ms
    simulation.run_until(detect_end_ms)

    live = [n for n in nodes if n not in crashed]
    violations: list[str] = []
    violations += check_crashes_detected(_views(simulation, live, list(crashed)), crashed, live)
    bound_ms = verdict_spread_bound_ms(node_count, config.gossip_interval_ms,
                                       config.retransmit_mult, config.probe_interval_ms)

    def stalled_near(observer: NodeId, first_ms: float) -> bool:
        return any(node == observer and begin <= first_ms + bound_ms and end >= first_ms - bound_ms
                   for node, begin, end in stalled)

    for subject, crash_at in crashed.items():
        verdicts = [t for t in recorder.failed.get(subject, {}).values() if t >= crash_at]
        if verdicts:
            first = min(verdicts)
            observers = [o for o in live if not stalled_near(o, first)]
            violations += check_verdict_spread(recorder, {subject: crash_at}, observers, bound_ms)
    violations += check_incarnations(recorder)
    violations += check_converged(_views(simulation, live, nodes), live)
    false_failures = check_no_false_failures(
        recorder, lambda subject, at_ms: subject in crashed and at_ms >= crashed[subject])
    if loss == 0.0 and not stalled:
        violations += false_failures

    first_verdict, all_know = [], []
    for subject, crash_at in crashed.items():
        times = sorted(t - crash_at for t in recorder.failed.get(subject, {}).values()
                       if t >= crash_at)
        if times:
            first_verdict.append(times[0])
            all_know.append(times[-1])

    if restart:
        for victim in victims:
            simulation.restart(victim)
        simulation.run_until(detect_end_ms + rejoin_ms)
        violations += [f"after restart: {v}"
                       for v in check_converged(_views(simulation, nodes, nodes), nodes)]

    extra = {
        "false_failures": float(len(false_failures)),
        "suspicions": float(recorder.counts.get("suspect", 0)),
        "crash_to_first_failed_ms": max(first_verdict, default=0.0),
        "crash_to_all_failed_ms": max(all_know, default=0.0),
    }
    return result_from_simulation("gossip", seed, simulation, violations, extra)


register_scenario("gossip", gossip_scenario)
