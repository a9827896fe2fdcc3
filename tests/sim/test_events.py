"""The event heap, timers, effect order, invariant checks and failure reports."""

from __future__ import annotations

import pytest

from synod.core import CancelTimer, InvariantViolation, Send, SetTimer
from synod.core.ids import NodeId
from synod.sim import SimConfig, Simulation, SimulationFailure
from tests.sim.cores import Note, ScriptCore, script


def calm(seed: int = 1) -> Simulation:
    return Simulation(seed, SimConfig.calm())


def core(sim: Simulation, node: str) -> ScriptCore:
    found = sim.core(node)
    assert isinstance(found, ScriptCore)
    return found


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    sim = calm()
    order: list[str] = []
    for delay, label in ((5.0, "e"), (1.0, "a"), (3.0, "c"), (1.0, "b"), (3.0, "d")):
        sim.schedule(delay, label, lambda label=label: order.append(f"{label}@{sim.now_ms}"))  # type: ignore[misc]
    sim.run_until(10.0)
    assert order == ["a@1.0", "b@1.0", "c@3.0", "d@3.0", "e@5.0"]
    assert sim.now_ms == 10.0


def test_run_until_stops_at_the_bound() -> None:
    sim = calm()
    fired: list[float] = []
    sim.schedule(4.0, "x", lambda: fired.append(sim.now_ms))
    sim.schedule(6.0, "y", lambda: fired.append(sim.now_ms))
    sim.run_until(4.0)
    assert fired == [4.0]
    sim.run_for(2.0)
    assert fired == [4.0, 6.0]


def test_rearming_a_timer_replaces_it() -> None:
    sim = calm()
    sim.add_node("a", script(
        on_start=lambda c, now, r: [SetTimer(key="t", delay_ms=10.0), SetTimer(key="t", delay_ms=20.0)],
    ))
    sim.start()
    sim.run_until(100.0)
    timers = [s for s in core(sim, "a").seen if s.kind == "timer"]
    assert [(s.now_ms, s.detail) for s in timers] == [(20.0, "t")]


def test_a_cancelled_timer_never_fires_and_others_do() -> None:
    sim = calm()
    sim.add_node("a", script(
        on_start=lambda c, now, r: [
            SetTimer(key="keep", delay_ms=5.0), SetTimer(key="drop", delay_ms=3.0), CancelTimer(key="drop"),
        ],
    ))
    sim.start()
    sim.run_until(50.0)
    assert [s.detail for s in core(sim, "a").seen if s.kind == "timer"] == ["keep"]


def test_a_timer_armed_in_a_handler_can_be_cancelled_by_a_later_event() -> None:
    def on_timer(c: ScriptCore, now: float, key: str) -> list[object]:
        return [CancelTimer(key="late")] if key == "early" else []

    sim = calm()
    sim.add_node("a", script(
        on_start=lambda c, now, r: [SetTimer(key="late", delay_ms=10.0), SetTimer(key="early", delay_ms=2.0)],
        on_timer=on_timer,
    ))
    sim.start()
    sim.run_until(50.0)
    assert [s.detail for s in core(sim, "a").seen if s.kind == "timer"] == ["early"]


def test_timers_do_not_survive_a_crash() -> None:
    sim = calm()
    sim.add_node("a", script(on_start=lambda c, now, r: [SetTimer(key="t", delay_ms=10.0)] if not c.seen[:-1] else []))
    sim.start()
    first = core(sim, "a")
    sim.run_until(5.0)
    sim.crash("a")
    sim.run_until(8.0)
    sim.restart("a")
    sim.run_until(100.0)
    assert [s for s in first.seen if s.kind == "timer"] == []
    # The fresh core armed its own timer at 8 ms (fires at 18); the old one never fires.
    assert [(s.now_ms, s.detail) for s in core(sim, "a").seen if s.kind == "timer"] == [(18.0, "t")]


def test_effects_run_in_list_order() -> None:
    sim = calm()
    sim.add_node("a", script(on_start=lambda c, now, r: [Send(to=NodeId("b"), message=Note(number=i)) for i in range(3)]))
    sim.add_node("b", script())
    sim.start()
    sim.run_until(100.0)
    # Calm network: latency is random but every copy is delivered exactly once.
    assert sorted(m.number for _, m in core(sim, "b").messages()) == [0, 1, 2]  # type: ignore[attr-defined]


def test_check_invariants_runs_after_every_step() -> None:
    sim = calm()
    sim.add_node("a", script(
        on_start=lambda c, now, r: [SetTimer(key="t", delay_ms=1.0)],
        on_timer=lambda c, now, key: [SetTimer(key="t", delay_ms=1.0)] if now < 10 else [],
    ))
    sim.start()
    sim.run_until(100.0)
    a = core(sim, "a")
    assert a.invariant_checks == len(a.seen)  # one per start, timer


def test_a_broken_invariant_stops_the_run_with_time_and_node() -> None:
    def invariant(c: ScriptCore) -> None:
        if any(s.kind == "timer" for s in c.seen):
            raise InvariantViolation("planted")

    sim = calm()
    sim.add_node("a", script(on_start=lambda c, now, r: [SetTimer(key="t", delay_ms=7.0)], invariant=invariant))
    sim.start()
    with pytest.raises(SimulationFailure) as caught:
        sim.run_until(100.0)
    assert caught.value.node == "a"
    assert caught.value.time_ms == 7.0
    assert "planted" in str(caught.value)
    assert any("timer" in line for line in caught.value.trace_tail)


def test_a_core_that_raises_stops_the_run() -> None:
    def boom(c: ScriptCore, now: float, source: NodeId, message: object) -> list[object]:
        raise ValueError("bad core")

    sim = calm()
    sim.add_node("a", script(on_start=lambda c, now, r: [Send(to=NodeId("b"), message=Note(number=1))]))
    sim.add_node("b", script(on_message=boom))
    sim.start()
    with pytest.raises(SimulationFailure, match="bad core"):
        sim.run_until(100.0)


def test_a_negative_timer_delay_is_a_failure() -> None:
    sim = calm()
    sim.add_node("a", script(on_start=lambda c, now, r: [SetTimer(key="t", delay_ms=-1.0)]))
    with pytest.raises(SimulationFailure, match="delay_ms"):
        sim.start()


def test_the_pending_event_bound_stops_a_flood() -> None:
    sim = Simulation(1, SimConfig.calm().replace(pending_events_max=100))
    sim.add_node("a", script(on_start=lambda c, now, r: [Send(to=NodeId("a"), message=Note(number=i)) for i in range(200)]))
    with pytest.raises(SimulationFailure, match="pending_events_max"):
        sim.start()


def test_the_event_bound_stops_a_livelock() -> None:
    sim = Simulation(1, SimConfig.calm().replace(events_max=50))
    sim.add_node("a", script(
        on_start=lambda c, now, r: [SetTimer(key="t", delay_ms=0.0)],
        on_timer=lambda c, now, key: [SetTimer(key="t", delay_ms=0.0)],
    ))
    sim.start()
    with pytest.raises(SimulationFailure, match="events_max"):
        sim.run_until(1.0)


def test_nodes_get_generators_derived_from_seed_and_name() -> None:
    draws = {}
    for seed in (1, 1, 2):
        sim = Simulation(seed, SimConfig.calm())
        sim.add_node("a", script())
        sim.add_node("b", script())
        sim.start()
        draws.setdefault(seed, []).append((core(sim, "a").rng.random(), core(sim, "b").rng.random()))
    assert draws[1][0] == draws[1][1]
    assert draws[1][0] != draws[2][0]
    assert draws[1][0][0] != draws[1][0][1]


def test_node_names_are_validated_and_unique() -> None:
    from synod.core import ConfigError

    sim = calm()
    sim.add_node("a", script())
    with pytest.raises(ConfigError):
        sim.add_node("a", script())
    with pytest.raises(ConfigError):
        sim.add_node("not a node id", script())


def test_a_sim_host_gives_glue_code_the_node_clock_rng_and_effects() -> None:
    sim = Simulation(2, SimConfig.calm().replace(clock_skew_ms_max=50.0))
    sim.add_node("a", script())
    sim.add_node("b", script())
    sim.start()
    sim.run_until(10.0)
    host = sim.host("a")
    assert host.node == "a"
    assert host.now_ms() == sim.local_ms("a")
    assert host.rng("x").random() == sim.host("a").rng("x").random() != host.rng("y").random()
    host.execute([Send(to=NodeId("b"), message=Note(number=9))])
    sim.run_until(100.0)
    assert [m.number for _, m in core(sim, "b").messages()] == [9]  # type: ignore[attr-defined]
