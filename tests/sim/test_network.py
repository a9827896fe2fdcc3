"""The simulated network: latency, loss, duplication, reordering, partitions, clogs."""

from __future__ import annotations

import pytest

from synod.codec.registry import Message
from synod.core import Send, SetTimer
from synod.core.ids import NodeId
from synod.sim import SimConfig, Simulation, SimulationFailure
from tests.sim.cores import Note, ScriptCore, script


def sender(count: int, every_ms: float = 1.0, to: str = "b") -> object:
    """A factory whose core sends Note(0..count-1) to ``to``, one per ``every_ms``."""

    def on_timer(c: ScriptCore, now: float, key: str) -> list[object]:
        n = int(key)
        effects: list[object] = [Send(to=NodeId(to), message=Note(number=n))]
        if n + 1 < count:
            effects.append(SetTimer(key=str(n + 1), delay_ms=every_ms))
        return effects

    return script(on_start=lambda c, now, r: [SetTimer(key="0", delay_ms=every_ms)] if count else [], on_timer=on_timer)


def build(config: SimConfig, count: int, seed: int = 3, every_ms: float = 1.0) -> Simulation:
    sim = Simulation(seed, config)
    sim.add_node("a", sender(count, every_ms))  # type: ignore[arg-type]
    sim.add_node("b", script())
    return sim


def received(sim: Simulation, node: str = "b") -> list[tuple[float, int]]:
    core = sim.core(node)
    assert isinstance(core, ScriptCore)
    return [(s.now_ms, s.detail[1].number) for s in core.seen if s.kind == "message"]  # type: ignore[index]


def test_latency_stays_within_its_bounds() -> None:
    config = SimConfig.calm().replace(latency_ms_base=2.0, latency_ms_tail_mean=3.0, latency_ms_max=9.0)
    sim = build(config, 300)
    sim.start()
    sim.run_until(1000.0)
    got = received(sim)
    assert len(got) == 300
    for at_ms, number in got:
        latency = at_ms - (number + 1) * 1.0
        assert 2.0 <= latency <= 9.0


def test_random_latency_reorders_messages() -> None:
    sim = build(SimConfig.calm().replace(latency_ms_tail_mean=5.0), 200, every_ms=0.5)
    sim.start()
    sim.run_until(1000.0)
    numbers = [n for _, n in received(sim)]
    assert sorted(numbers) == list(range(200))
    assert numbers != sorted(numbers)


def test_total_loss_delivers_nothing() -> None:
    sim = build(SimConfig.calm().replace(loss_probability=1.0), 50)
    sim.start()
    sim.run_until(1000.0)
    assert received(sim) == []
    assert sim.statistics().dropped_loss == 50


def test_partial_loss_drops_some() -> None:
    sim = build(SimConfig.calm().replace(loss_probability=0.3), 400)
    sim.start()
    sim.run_until(1000.0)
    assert 200 < len(received(sim)) < 360


def test_duplication_delivers_independent_copies() -> None:
    sim = build(SimConfig.calm().replace(duplicate_probability=1.0), 20)
    sim.start()
    sim.run_until(1000.0)
    core = sim.core("b")
    assert isinstance(core, ScriptCore)
    messages: list[Message] = [m for _, m in core.messages()]
    assert sorted(m.number for m in messages) == sorted(list(range(20)) * 2)  # type: ignore[attr-defined]
    first = [m for m in messages if m.number == 0]  # type: ignore[attr-defined]
    assert first[0] == first[1] and first[0] is not first[1]


def test_symmetric_partition_drops_both_ways_until_it_ends() -> None:
    # Fixed 1 ms latency: Note n is sent at n + 1 ms and arrives at n + 2 ms.
    sim = Simulation(1, SimConfig.calm().replace(latency_ms_base=1.0, latency_ms_tail_mean=0.0))
    sim.add_node("a", sender(100, to="b"))  # type: ignore[arg-type]
    sim.add_node("b", sender(100, to="a"))  # type: ignore[arg-type]
    sim.start()
    sim.run_until(20.0)
    sim.partition(["a"], ["b"], duration_ms=30.0)  # [20, 50)
    sim.run_until(1000.0)
    for node in ("a", "b"):
        numbers = sorted(n for _, n in received(sim, node))
        assert numbers == list(range(0, 19)) + list(range(49, 100))


def test_one_way_cut_drops_one_direction_only() -> None:
    sim = Simulation(1, SimConfig.calm())
    sim.add_node("a", sender(50, to="b"))  # type: ignore[arg-type]
    sim.add_node("b", sender(50, to="a"))  # type: ignore[arg-type]
    sim.start()
    sim.cut("a", "b", duration_ms=1000.0)
    sim.run_until(500.0)
    assert received(sim, "b") == []
    assert len(received(sim, "a")) == 50


def test_a_partition_also_drops_messages_in_flight() -> None:
    config = SimConfig.calm().replace(latency_ms_base=10.0, latency_ms_tail_mean=0.0, latency_ms_max=10.0)
    sim = build(config, 1)
    sim.start()
    sim.run_until(2.0)  # sent at 1 ms, due at 11 ms
    sim.partition(["a"], ["b"], duration_ms=20.0)
    sim.run_until(100.0)
    assert received(sim) == []
    assert sim.statistics().dropped_partition == 1


def test_a_clogged_node_holds_messages_until_the_clog_ends() -> None:
    config = SimConfig.calm().replace(latency_ms_base=1.0, latency_ms_tail_mean=0.0)
    sim = build(config, 10)
    sim.start()
    sim.clog("b", duration_ms=50.0)
    sim.run_until(1000.0)
    got = received(sim)
    assert len(got) == 10
    assert all(at_ms == 51.0 for at_ms, _ in got)


def test_a_clogged_link_delays_only_that_link() -> None:
    config = SimConfig.calm().replace(latency_ms_base=1.0, latency_ms_tail_mean=0.0)
    sim = Simulation(1, config)
    sim.add_node("a", sender(1, to="b"))  # type: ignore[arg-type]
    sim.add_node("b", sender(1, to="a"))  # type: ignore[arg-type]
    sim.start()
    sim.clog("a", duration_ms=40.0, destination="b")
    sim.run_until(1000.0)
    assert received(sim, "b") == [(41.0, 0)]
    assert received(sim, "a") == [(2.0, 0)]


def test_repair_removes_every_network_fault() -> None:
    sim = build(SimConfig.calm(), 20)
    sim.start()
    sim.partition(["a"], ["b"], duration_ms=10_000.0)
    sim.loss_burst(1.0, duration_ms=10_000.0)
    sim.run_until(5.5)
    sim.repair_network()
    sim.run_until(1000.0)
    assert [n for _, n in received(sim)] and min(n for _, n in received(sim)) >= 5


def test_messages_to_a_down_node_are_dropped() -> None:
    sim = build(SimConfig.calm(), 10)
    sim.start()
    sim.crash("b")
    sim.run_until(1000.0)
    assert sim.statistics().dropped_down == 10


def test_an_unregistered_message_cannot_cross_the_network() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Unregistered(Message):
        number: int

    sim = Simulation(1, SimConfig.calm())
    sim.add_node("a", script(on_start=lambda c, now, r: [Send(to=NodeId("a"), message=Unregistered(number=1))]))
    with pytest.raises(SimulationFailure, match="not a registered message"):
        sim.start()
