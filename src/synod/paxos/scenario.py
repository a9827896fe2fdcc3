"""The ``paxos`` simulation scenario: a KV group under the full fault model.

``replicas`` replicas (``n1`` ..) of a ``KeyValue`` group and ``clients`` client
nodes (``c1`` ..) run the simulator's chaos-then-heal schedule: message loss,
duplication and reordering, partitions and one-way cuts, clogs, crashes that lose
unsynced writes (some mid-write, tearing the last record), restarts, skewed and
drifting clocks, BUGGIFY. Clients never crash; their histories are the evidence.
At the start of healing every replica restarts from its disk.

Checks:

* safety, as it happens: at most one value is chosen per slot across all replicas
  and all their lives (every applied slot is reported to the scenario);
* every acknowledged write (by ``(client, seq)``) was applied by some replica;
* the client history (lease and quorum reads, puts, compare-and-sets, deletes,
  with timed-out operations as indeterminate) is linearizable;
* convergence: after healing every replica holds the same state digest at the
  same chosen index;
* lease safety, sampled every 2 ms: no replica leads with a higher ballot while
  another believes it holds a read lease;
* liveness: a leader that keeps its ballot with slots in flight, and has
  fault-free links to a majority, grows its chosen prefix within three
  check-quorum periods; and some write invoked after healing began was
  acknowledged.

Options (``-o key=value``): ``replicas`` (3 or 5), ``clients`` (3), ``keys`` (5),
``chaos_ms``, ``heal_ms``, ``op_interval_ms`` (5), ``lease_ms`` (100; the
drift bound is a tenth of it and check-quorum twice it), ``churn_ms`` (200: mean time
between two strikes of the leader-churn nemesis; 0 turns it off), and any ``sim.<SimConfig field>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from synod.check.history import HistoryRecorder
from synod.check.invariants import check_converged
from synod.check.linearizability import check_linearizability
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.kv import KeyValue
from synod.paxos.messages import Value, ValueKind
from synod.paxos.replica import PaxosReplica, replica_factory
from synod.paxos.workload import ClientOp, KvClient, KvClientFactory, WorkloadConfig
from synod.sim import (
    Crash,
    NodeClock,
    ScenarioOptions,
    ScenarioResult,
    SimConfig,
    Simulation,
    Violation,
    register_scenario,
    result_from_simulation,
)

NAME = "paxos"


class _Ledger:
    """What every replica applied, slot by slot, across all lives."""

    def __init__(self) -> None:
        self.first: dict[int, tuple[NodeId, Value]] = {}
        self.applied_commands: set[tuple[str, int]] = set()

    def observe(self, node: NodeId, slot: int, value: Value) -> None:
        seen = self.first.get(slot)
        if seen is None:
            self.first[slot] = (node, value)
            if value.kind is ValueKind.COMMANDS:
                self.applied_commands.update((c.client, c.seq) for c in value.commands)
        elif seen[1] != value:
            raise Violation(f"two values chosen in slot {slot}: {seen[0]} applied {seen[1]}, {node} applied {value}")


class _Watch:
    """Checks sampled every ``sample_ms`` of true time while the run lasts.

    * Lease safety (Paxos Made Live 5.2): while a replica believes it holds a read
      lease, no replica with a higher ballot may be leader -- electing one needs
      promises from a majority, and an acceptor promises nobody while a lease it
      granted holds.
    * Liveness while a leader stands: a replica that stays leader of the same
      ballot with slots in flight, and has fault-free links to a majority, must
      grow its chosen prefix within ``stall_ms`` of such links.
    """

    def __init__(self, simulation: Simulation, replicas: tuple[NodeId, ...], end_ms: float,
                 stall_ms: float, sample_ms: float) -> None:
        self.simulation = simulation
        self.replicas = replicas
        self.end_ms = end_ms
        self.stall_ms = stall_ms
        self.sample_ms = sample_ms
        self.since: dict[NodeId, tuple[object, int, float]] = {}
        self.violations: list[str] = []

    def arm(self) -> None:
        self.simulation.schedule(self.sample_ms, "paxos watch", self.sample)

    def sample(self) -> None:
        now = self.simulation.now_ms
        if now >= self.end_ms or self.violations:
            return
        self.arm()
        leaders: list[PaxosReplica] = []
        for node in self.replicas:
            core = self.simulation.core(node) if self.simulation.is_up(node) else None
            if isinstance(core, PaxosReplica) and core.is_leader:
                leaders.append(core)
        for core in leaders:
            if core.has_read_lease(self.simulation.local_ms(core.node)):
                usurpers = [other.node for other in leaders if other.ballot > core.ballot]
                if usurpers:
                    self.violations.append(
                        f"lease: {core.node} (ballot {core.ballot}) believes it holds a read lease "
                        f"at {now:.3f} ms while {usurpers} lead with a higher ballot"
                    )
        for node in self.replicas:
            found = [core for core in leaders if core.node == node and core.proposals_in_flight > 0]
            if not found or not self._healthy_majority(node):
                # Progress is owed only over a healthy network: a leader that a
                # lucky message keeps in office across a lossy or cut link may
                # stall (seed 107764); the clock starts again when it heals.
                self.since.pop(node, None)
                continue
            leader = found[0]
            mark = (leader.ballot, leader.chosen_index)
            seen = self.since.get(node)
            if seen is None or seen[:2] != mark:
                self.since[node] = (*mark, now)
            elif now - seen[2] >= self.stall_ms:
                self.violations.append(
                    f"liveness: leader {node} at ballot {leader.ballot} made no progress past slot "
                    f"{leader.chosen_index} for {now - seen[2]:.0f} ms with slots in flight"
                )


    def _healthy_majority(self, leader: NodeId) -> bool:
        healthy = 1 + sum(1 for peer in self.replicas
                          if peer != leader and self.simulation.link_healthy(leader, peer))
        return 2 * healthy > len(self.replicas)


class _LeaderChurn:
    """A nemesis aimed at Paxos: during chaos, every ``churn_ms`` on average it
    crashes the leader (often mid-write), cuts it off from the others, or crashes
    a follower mid-write, so that elections, Phase 1 recovery and gap filling run
    many times per seed. It never takes down more than a minority."""

    def __init__(self, simulation: Simulation, replicas: tuple[NodeId, ...], chaos_ms: float,
                 churn_ms: float, isolate_ms_max: float) -> None:
        self.simulation = simulation
        self.isolate_ms_max = isolate_ms_max
        self.replicas = replicas
        self.chaos_ms = chaos_ms
        self.churn_ms = churn_ms
        self.rng = simulation.rng("paxos/churn")

    def arm(self) -> None:
        self.simulation.schedule(self.rng.expovariate(1.0 / self.churn_ms), "paxos churn", self.strike)

    def _leader(self) -> NodeId | None:
        for node in self.replicas:
            if self.simulation.is_up(node):
                core = self.simulation.core(node)
                if isinstance(core, PaxosReplica) and core.is_leader:
                    return node
        return None

    def strike(self) -> None:
        if self.simulation.now_ms >= self.chaos_ms:
            return
        self.arm()
        up = [n for n in self.replicas if self.simulation.is_up(n)]
        # Never take down more than a minority at once.
        may_crash = len(self.replicas) - len(up) < (len(self.replicas) - 1) // 2 or len(up) == len(self.replicas)
        leader = self._leader()
        others: list[str] = [n for n in self.replicas if n != leader]
        draw = self.rng.random()
        down_ms = self.rng.uniform(20.0, 400.0)
        now = self.simulation.now_ms
        if leader is not None and draw < 0.4 and may_crash:
            self.simulation.inject(Crash(at_ms=now, node=leader, down_ms=down_ms, mid_write=self.rng.random() < 0.5))
        elif leader is not None and draw < 0.7:
            self.simulation.partition([leader], others, self.rng.uniform(50.0, self.isolate_ms_max))
        elif up and may_crash:
            # A follower dies in the middle of a write, and moments later the
            # leader is cut off: whatever the follower said it had accepted but
            # had not made durable is all that stands between a chosen value and
            # the next leader.
            victim = self.rng.choice([n for n in up if n != leader] or up)
            self.simulation.inject(Crash(at_ms=now, node=victim, down_ms=down_ms, mid_write=True))
            if leader is not None and leader != victim:
                isolated = leader
                isolate_ms = self.rng.uniform(50.0, self.isolate_ms_max)
                self.simulation.schedule(
                    self.rng.uniform(1.0, 20.0), "paxos churn isolates the leader",
                    lambda: self.simulation.partition([isolated], others, isolate_ms),
                )


def paxos_scenario(seed: int, options: ScenarioOptions) -> ScenarioResult:
    """A Paxos KV group under chaos: one value per slot, acknowledged writes kept, linearizable, converged."""
    replica_count = options.get_int("replicas", 3)
    client_count = options.get_int("clients", 3)
    base = SimConfig(crashed_nodes_max=max(1, (replica_count - 1) // 2))
    base = dataclasses.replace(
        base,
        chaos_ms=options.get_float("chaos_ms", base.chaos_ms),
        heal_ms=options.get_float("heal_ms", base.heal_ms),
    )
    # Clocks drift as much as the drift bound allows (the leader's lease and an
    # acceptor's grant may disagree by 2 * drift * lease).
    # Short timeouts make leader changes frequent within one chaos phase. The
    # lease outlasts the election timeout and check-quorum outlasts the lease, so
    # that only the lease rules (acceptors refuse promises while a grant holds,
    # and a candidate retries as soon as it may) keep a new leader from being
    # elected while a cut-off old leader still believes its lease.
    # A longer lease (option ``lease_ms``) widens what clock drift can do to it
    # (the drift bound is a tenth of the lease) relative to network delays.
    lease_ms = options.get_float("lease_ms", 100.0)
    paxos_config = dataclasses.replace(
        PaxosConfig.sim(), election_timeout_ms=50.0, heartbeat_interval_ms=10.0, lease_ms=lease_ms,
        clock_drift_bound_ms=lease_ms / 10, check_quorum_ms=2 * lease_ms,
    )
    drift_ppm = 0.9 * paxos_config.clock_drift_bound_ms / (2 * paxos_config.lease_ms) * 1e6
    base = dataclasses.replace(base, clock_drift_ppm_max=drift_ppm)
    sim_config = options.sim_config(base)
    replicas = tuple(NodeId(f"n{i}") for i in range(1, replica_count + 1))
    clients = [NodeId(f"c{i}") for i in range(1, client_count + 1)]
    workload = WorkloadConfig(
        keys=options.get_int("keys", 5),
        op_interval_ms=options.get_float("op_interval_ms", 5.0),
        stop_ms=sim_config.chaos_ms + sim_config.heal_ms * 0.6,
    )
    ledger = _Ledger()
    simulation = Simulation(seed, sim_config, trace_sink=options.trace_sink)
    factory = replica_factory(replicas, KeyValue, paxos_config, observer=ledger.observe)
    for node in replicas:
        simulation.add_node(node, factory)
    for node in clients:
        simulation.add_node(node, KvClientFactory(replicas=replicas, config=workload), fault_prone=False)
    watch = _Watch(simulation, replicas, sim_config.chaos_ms + sim_config.heal_ms,
                   stall_ms=3 * paxos_config.check_quorum_ms, sample_ms=2.0)
    watch.arm()
    churn_ms = options.get_float("churn_ms", 200.0)
    if churn_ms > 0:
        _LeaderChurn(simulation, replicas, sim_config.chaos_ms, churn_ms,
                     isolate_ms_max=max(600.0, 3 * lease_ms)).arm()
    simulation.run_chaos_then_heal()

    violations: list[str] = list(watch.violations)
    cores = [simulation.core(node) for node in replicas]
    replica_cores = [core for core in cores if isinstance(core, PaxosReplica)]
    digests: dict[Hashable, object] = {core.node: (core.digest(), core.chosen_index) for core in replica_cores}
    violations += check_converged(digests)

    recorder = HistoryRecorder()
    acknowledged: list[tuple[str, int]] = []
    heal_start_ms = sim_config.chaos_ms
    healed_writes = 0
    for name in clients:
        client = simulation.core(name)
        assert isinstance(client, KvClient)
        clock = simulation.clock(name)

        def true_ms(local_ms: float, clock: NodeClock = clock) -> float:
            return (local_ms - clock.offset_ms) / clock.rate

        unfinished = [client.in_flight] if client.in_flight is not None else []
        for op in (*client.history, *unfinished):
            _record(recorder, name, op, true_ms(op.start_ms), true_ms(op.end_ms))
            if op.operation[0] != "get" and op.outcome == "ok":
                acknowledged.append((name, op.seq))
                if true_ms(op.start_ms) >= heal_start_ms:
                    healed_writes += 1
    missing = [item for item in acknowledged if item not in ledger.applied_commands]
    if missing:
        violations.append(f"{len(missing)} acknowledged writes were never applied: {missing[:5]}")
    history = recorder.history()
    linearizable = check_linearizability(history)
    violations += [v.message for v in linearizable.violations]
    if healed_writes == 0:
        violations.append("liveness: no write invoked after healing began was acknowledged")
    stats = {
        "operations": float(len(history)),
        "writes_acknowledged": float(len(acknowledged)),
        "writes_after_heal": float(healed_writes),
        "slots_chosen": float(len(ledger.first)),
        "indeterminate": float(sum(1 for op in history if op.is_info)),
        "leaderships": float(sum(core.statistics().leaderships for core in replica_cores)),
    }
    return result_from_simulation(NAME, seed, simulation, violations, stats)


def _record(recorder: HistoryRecorder, client: str, op: ClientOp, start_ms: float, end_ms: float) -> None:
    op_id = recorder.invoke(client, op.operation, start_ms)
    if op.outcome == "ok":
        recorder.ok(op_id, op.result, max(end_ms, start_ms))
    elif op.outcome == "fail":
        recorder.fail(op_id, max(end_ms, start_ms), "refused")
    else:
        recorder.info(op_id, None, "timeout")


register_scenario(NAME, paxos_scenario)
