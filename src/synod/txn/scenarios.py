"""The ``txn`` simulation scenario: sharded 2PC over Paxos groups under the full fault model.

``shards`` groups (``s1`` ..) of ``replicas`` replicas each (``n1`` ..), one replica
per node, and ``clients`` client nodes (``c1`` ..) running the bank and
list-append workloads (``synod.txn.workload``) through the simulator's
chaos-then-heal schedule: loss, duplication, reordering, partitions, one-way
cuts, clogs, crashes mid-write, restarts, skewed and drifting clocks, BUGGIFY.
A nemesis aimed at 2PC strikes shard leaders on top of it: it crashes one or cuts
it off from its group, half the time choosing a leader in the middle of 2PC (a
coordinator between prepare and decision, or a participant holding prepared
transactions; counted as ``mid_2pc_leader_crashes``), so coordinators and
participants resume from their logs many times per seed.

Checks:

* one value per slot, per group, across all replicas and lives;
* bank: after healing the total over all accounts is what it was, no balance is
  negative, and every committed audit (a read-only transaction over every
  account) saw that same total;
* pairs (``-o pair_fraction``): every committed read of a pair saw its two
  keys equal;
* list-append: the committed history is serializable (``check_serializability``:
  G0, G1a/b/c, G2, lost update ...);
* no transaction in doubt after healing: no prepare record and no pending
  transaction record remains on any replica;
* convergence: the replicas of each group hold the same state digest;
* liveness: a transaction invoked after healing began committed.

Options (``-o key=value``): ``shards`` (2, up to 4), ``replicas`` (3),
``clients`` (4), ``accounts`` (6), ``list_keys`` (4), ``churn_ms`` (250; 0 off),
``pair_fraction`` (0: the share of pair transactions, whose blind writes
share a lock; a committed read of a pair must see both keys equal), ``window``
(8: the shards' Paxos window; at 1, operations queue behind a
full window and leave together in ``OpBatch``es),
``resend_backoff_max`` (1: ``TxnConfig.resend_backoff_max``), ``hedged_reads``
(0; 1: every read goes to every replica of its group, the first answer wins,
so deposed leaders answer reads often),
``chaos_ms``, ``heal_ms``, and any ``sim.<SimConfig field>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from synod.check.history import HistoryRecorder
from synod.check.invariants import check_converged
from synod.check.serializability import check_serializability
from synod.core.errors import ConfigError
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.messages import Value
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
from synod.txn.config import TxnConfig
from synod.txn.server import ShardServer, ShardServerFactory
from synod.txn.shardmap import ShardMap, uniform_map
from synod.txn.workload import BankConfig, TxnClient, TxnClientFactory, TxnRecord, account_key

NAME = "txn"


class _Ledger:
    """What every replica of every group applied, slot by slot."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, int], tuple[NodeId, Value]] = {}

    def observer(self, group: str):  # type: ignore[no-untyped-def]
        def observe(node: NodeId, slot: int, value: Value) -> None:
            seen = self.first.setdefault((group, slot), (node, value))
            if seen[1] != value:
                raise Violation(f"group {group}: two values chosen in slot {slot} ({seen[0]} and {node})")
        return observe


class _LeaderChurn:
    """During chaos, every ``churn_ms`` on average: crash a shard leader (half
    the time mid-write), or cut it off from its group for a while."""

    def __init__(self, simulation: Simulation, shard_map: ShardMap, chaos_ms: float, churn_ms: float) -> None:
        self.simulation = simulation
        self.shard_map = shard_map
        self.chaos_ms = chaos_ms
        self.churn_ms = churn_ms
        self.rng = simulation.rng("txn/churn")
        self.mid_2pc_crashes = 0

    def arm(self) -> None:
        self.simulation.schedule(self.rng.expovariate(1.0 / self.churn_ms), "txn churn", self.strike)

    def strike(self) -> None:
        if self.simulation.now_ms >= self.chaos_ms:
            return
        self.arm()
        leaders: list[ShardServer] = []
        for node in self.simulation.fault_prone_nodes:
            if self.simulation.is_up(node):
                core = self.simulation.core(node)
                if isinstance(core, ShardServer) and core.is_ready:
                    leaders.append(core)
        if not leaders:
            return
        # Aim at 2PC half the time: a coordinator between prepare and decision,
        # or a participant holding prepared transactions.
        busy = [s for s in leaders if s.statistics().coordinating or s.statistics().in_doubt
                or s.statistics().preparing]
        target = self.rng.choice(busy if busy and self.rng.random() < 0.5 else leaders)
        leader = target.node
        shard = self.shard_map.shard(target.group)
        others: list[str] = [n for n in shard.replicas if n != leader]
        all_up = all(self.simulation.is_up(n) for n in self.simulation.fault_prone_nodes)
        if self.rng.random() < 0.5 and all_up:
            if target in busy:
                self.mid_2pc_crashes += 1
            self.simulation.inject(Crash(at_ms=self.simulation.now_ms, node=leader,
                                         down_ms=self.rng.uniform(20.0, 300.0), mid_write=self.rng.random() < 0.5))
        else:
            self.simulation.partition([leader], others, self.rng.uniform(50.0, 500.0))


def txn_scenario(seed: int, options: ScenarioOptions) -> ScenarioResult:
    """Sharded 2PC over Paxos under chaos: bank invariants, serializable list-append, nothing in doubt."""
    shard_count = options.get_int("shards", 2)
    replica_count = options.get_int("replicas", 3)
    client_count = options.get_int("clients", 4)
    if not 1 <= shard_count <= 8 or replica_count not in (1, 3, 5):
        raise ConfigError("txn scenario: shards 1..8, replicas 1, 3 or 5")
    base = SimConfig(crashed_nodes_max=1)
    base = dataclasses.replace(base, chaos_ms=options.get_float("chaos_ms", base.chaos_ms),
                               heal_ms=options.get_float("heal_ms", 4000.0))
    paxos_config = dataclasses.replace(
        PaxosConfig.sim(), election_timeout_ms=50.0, heartbeat_interval_ms=10.0, lease_ms=100.0,
        clock_drift_bound_ms=10.0, check_quorum_ms=200.0,
        window_slots_max=options.get_int("window", PaxosConfig.sim().window_slots_max),
    )
    drift_ppm = 0.9 * paxos_config.clock_drift_bound_ms / (2 * paxos_config.lease_ms) * 1e6
    base = dataclasses.replace(base, clock_drift_ppm_max=drift_ppm)
    sim_config = options.sim_config(base)
    shard_map = uniform_map(shard_count, replica_count)
    txn_config = dataclasses.replace(TxnConfig.sim(), resend_backoff_max=options.get_int("resend_backoff_max", 1))
    bank = BankConfig(accounts=options.get_int("accounts", 6), list_keys=options.get_int("list_keys", 4),
                      stop_ms=sim_config.chaos_ms + sim_config.heal_ms * 0.5,
                      hedged_reads=options.get_int("hedged_reads", 0) != 0,
                      pair_fraction=options.get_float("pair_fraction", 0.0), pairs=options.get_int("pairs", 2))
    churn_ms = options.get_float("churn_ms", 250.0)

    ledger = _Ledger()
    simulation = Simulation(seed, sim_config, trace_sink=options.trace_sink)
    for shard in shard_map.shards:
        factory = ShardServerFactory(group=shard.group, shard_map=shard_map, config=txn_config,
                                     paxos_config=paxos_config, observer=ledger.observer(shard.group))
        for node in shard.replicas:
            simulation.add_node(node, factory)
    clients = [NodeId(f"c{i}") for i in range(1, client_count + 1)]
    for node in clients:
        simulation.add_node(node, TxnClientFactory(shard_map=shard_map, config=bank), fault_prone=False)
    churn = _LeaderChurn(simulation, shard_map, sim_config.chaos_ms, churn_ms)
    if churn_ms > 0:
        churn.arm()
    simulation.run_chaos_then_heal()

    violations: list[str] = []
    servers: dict[str, list[ShardServer]] = {}
    for shard in shard_map.shards:
        for node in shard.replicas:
            core = simulation.core(node)
            assert isinstance(core, ShardServer)
            servers.setdefault(shard.group, []).append(core)
    for group, group_servers in servers.items():
        digests: dict[Hashable, object] = {s.node: (s.machine.digest(), s.replica.chosen_index)
                                           for s in group_servers}
        violations += [f"group {group}: {v}" for v in check_converged(digests)]
        for server in group_servers:
            in_doubt = server.in_doubt()
            if in_doubt:
                violations.append(f"{server.node} ({group}): {len(in_doubt)} transactions still in doubt "
                                  f"after healing: {in_doubt[:3]}")
            pending = [r.txn for state, r in server.machine.records() if state == "pending"]
            if pending:
                violations.append(f"{server.node} ({group}): {len(pending)} transaction records still pending "
                                  f"after healing: {pending[:3]}")

    # The bank.
    total_expected = bank.accounts * bank.initial_balance
    balances: dict[str, int] = {}
    for i in range(bank.accounts):
        key = account_key(i)
        owner = servers[shard_map.shard_for(key).group][0]
        value, _ = owner.machine.get(key)
        balances[key] = bank.initial_balance if value is None else int(value)
    if sum(balances.values()) != total_expected:
        violations.append(f"bank: total is {sum(balances.values())}, expected {total_expected}: {balances}")
    negative = {k: v for k, v in balances.items() if v < 0}
    if negative:
        violations.append(f"bank: negative balances {negative}")

    recorder = HistoryRecorder()
    heal_start_ms = sim_config.chaos_ms
    counts = {"ok": 0, "fail": 0, "info": 0}
    healed_commits = 0
    audits_ok = 0
    pair_reads_ok = 0
    for name in clients:
        client = simulation.core(name)
        assert isinstance(client, TxnClient)
        clock = simulation.clock(name)

        def true_ms(local_ms: float, clock: NodeClock = clock) -> float:
            return (local_ms - clock.offset_ms) / clock.rate

        for txn in client.history:
            counts[txn.outcome] = counts.get(txn.outcome, 0) + 1
            if txn.outcome == "ok" and true_ms(txn.start_ms) >= heal_start_ms:
                healed_commits += 1
            if txn.kind == "audit" and txn.outcome == "ok":
                audits_ok += 1
                total = sum(txn.seen.values())
                if total != total_expected:
                    violations.append(f"bank: audit by {name} at {true_ms(txn.end_ms):.0f} ms saw total {total}, "
                                      f"expected {total_expected}: {txn.seen}")
            pair_reads_ok += txn.kind == "pair_read" and txn.outcome == "ok"
            if txn.kind == "pair_read" and txn.outcome == "ok" and txn.pair[0] != txn.pair[1]:
                violations.append(f"pairs: {name} at {true_ms(txn.end_ms):.0f} ms read a pair half-written: "
                                  f"{txn.pair}")
            if txn.kind == "append":
                _record(recorder, name, txn, true_ms(txn.start_ms), true_ms(max(txn.end_ms, txn.start_ms)))
        if client.current is not None and client.current.kind == "append":
            _record(recorder, name, client.current, true_ms(client.current.start_ms), None)
    history = recorder.history()
    serializable = check_serializability(history)
    violations += [f"serializability: {v.message}" for v in serializable.violations]
    if healed_commits == 0:
        violations.append("liveness: no transaction invoked after healing began committed")
    stats = {
        "txns_ok": float(counts["ok"]), "txns_failed": float(counts["fail"]),
        "txns_indeterminate": float(counts["info"]), "audits_ok": float(audits_ok),
        "pair_reads_ok": float(pair_reads_ok),
        "append_txns": float(len(history)), "commits_after_heal": float(healed_commits),
        "slots_chosen": float(len(ledger.first)),
        "mid_2pc_leader_crashes": float(churn.mid_2pc_crashes),
        "wounds": float(sum(s.locks.wounds for group in servers.values() for s in group)),
    }
    return result_from_simulation(NAME, seed, simulation, violations, stats)


def _record(recorder: HistoryRecorder, client: str, txn: TxnRecord, start_ms: float, end_ms: float | None) -> None:
    invoked = tuple(("append", k, v) if name == "append" else ("r", k, None) for name, k, v in txn.micro)
    op_id = recorder.invoke(client, ("txn", invoked), start_ms)
    if txn.outcome == "ok" and end_ms is not None:
        recorder.ok(op_id, tuple(txn.micro), end_ms)
    elif txn.outcome == "fail" and end_ms is not None:
        recorder.fail(op_id, end_ms, "aborted")
    else:
        recorder.info(op_id, end_ms, "unknown")


register_scenario(NAME, txn_scenario)
