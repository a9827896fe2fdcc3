"""The fault schedule drawn from the seed, and the healing phase."""

from __future__ import annotations

import random

from synod.core import Send, SetTimer
from synod.core.ids import NodeId
from synod.sim import Crash, Partition, SimConfig, Simulation, draw_schedule
from tests.sim.cores import Note, ScriptCore, script

NODES = ["n1", "n2", "n3", "n4", "n5", "c1"]
SERVERS = NODES[:5]


def test_the_schedule_is_a_function_of_the_seed() -> None:
    config = SimConfig()
    first = draw_schedule(random.Random("7/faults"), NODES, SERVERS, config)
    again = draw_schedule(random.Random("7/faults"), NODES, SERVERS, config)
    other = draw_schedule(random.Random("8/faults"), NODES, SERVERS, config)
    assert first == again
    assert first != other
    assert len(first) > 5


def test_the_schedule_respects_its_bounds() -> None:
    config = SimConfig(crashed_nodes_max=2, chaos_ms=20_000.0, fault_interval_ms_mean=50.0)
    for seed in range(20):
        faults = draw_schedule(random.Random(seed), NODES, SERVERS, config, start_ms=100.0)
        assert all(100.0 <= f.at_ms < 100.0 + config.chaos_ms for f in faults)
        crashes = [f for f in faults if isinstance(f, Crash)]
        assert crashes and all(c.node in SERVERS for c in crashes)
        for crash in crashes:
            assert config.down_ms_min <= crash.down_ms <= config.down_ms_max
            # Down intervals (with the mid-write wait) overlap at most crashed_nodes_max at once.
            overlapping = [
                c for c in crashes
                if c.at_ms <= crash.at_ms
                < c.at_ms + c.down_ms + (config.mid_write_wait_ms_max if c.mid_write else 0.0)
            ]
            assert len(overlapping) <= config.crashed_nodes_max
        for fault in faults:
            if isinstance(fault, Partition):
                assert set(fault.side_a).isdisjoint(fault.side_b)
                assert sorted(fault.side_a + fault.side_b) == sorted(NODES)


def test_no_faults_no_schedule() -> None:
    assert draw_schedule(random.Random(1), NODES, SERVERS, SimConfig.calm()) == []


def chatty(peers: list[str]) -> object:
    def on_timer(c: ScriptCore, now: float, key: str) -> list[object]:
        sends: list[object] = [Send(to=NodeId(p), message=Note(number=int(now))) for p in peers if p != c.node]
        return [*sends, SetTimer(key="t", delay_ms=5.0)]

    return script(on_start=lambda c, now, r: [SetTimer(key="t", delay_ms=5.0)], on_timer=on_timer)


def test_healing_repairs_the_network_and_restarts_every_node() -> None:
    config = SimConfig(chaos_ms=3000.0, heal_ms=500.0, fault_interval_ms_mean=100.0, crashed_nodes_max=2)
    sim = Simulation(21, config)
    names = ["n1", "n2", "n3"]
    for name in names:
        sim.add_node(name, chatty(names))  # type: ignore[arg-type]
    sim.start()
    faults = sim.plan_chaos()
    assert faults
    sim.run_until(config.chaos_ms)
    crashes_before = sim.statistics().crashes
    sim.heal()
    assert all(sim.is_up(n) for n in names)
    # heal_restart_all: every node that was up was crashed and restarted.
    assert sim.statistics().crashes >= crashes_before + 1
    delivered_at_heal = sim.statistics().messages_delivered
    sim.run_for(config.heal_ms)
    stats = sim.statistics()
    # After healing: no chaos is left, the calm network delivers almost everything.
    assert 0 < stats.faults_injected <= len(faults)
    sent_during_heal = 3 * 2 * (config.heal_ms / 5.0)
    assert stats.messages_delivered - delivered_at_heal > 0.9 * sent_during_heal
    assert all(sim.is_up(n) for n in names)


def test_a_standard_run_injects_its_faults_and_ends_healed() -> None:
    config = SimConfig(chaos_ms=2000.0, heal_ms=500.0)
    sim = Simulation(5, config)
    for name in ("n1", "n2", "n3"):
        sim.add_node(name, chatty(["n1", "n2", "n3"]))  # type: ignore[arg-type]
    faults = sim.run_chaos_then_heal()
    stats = sim.statistics()
    assert stats.faults_injected == len(faults) > 0
    assert stats.crashes >= 3  # at least the healing restarts
    assert stats.restarts == stats.crashes
    assert sim.now_ms == 2500.0
