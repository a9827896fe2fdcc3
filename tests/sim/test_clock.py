"""Per-node clock skew and drift: bounded, monotonic, and what cores are given."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from synod.core import SetTimer
from synod.sim import NodeClock, SimConfig, Simulation
from tests.sim.cores import ScriptCore, script


@given(
    seed=st.integers(0, 2**32),
    skew=st.floats(0, 1000),
    drift_ppm=st.floats(0, 50_000),
    times=st.lists(st.floats(0, 1e7), min_size=2, max_size=20),
)
def test_a_clock_is_monotonic_and_within_its_bounds(
    seed: int, skew: float, drift_ppm: float, times: list[float]
) -> None:
    clock = NodeClock.draw(random.Random(seed), skew, drift_ppm)
    readings = [clock.local_ms(t) for t in sorted(times)]
    assert readings == sorted(readings)
    for t in times:
        assert abs(clock.local_ms(t) - t) <= skew + t * drift_ppm / 1e6 + 1e-6


def test_nodes_see_skewed_drifting_clocks() -> None:
    config = SimConfig.calm().replace(clock_skew_ms_max=100.0, clock_drift_ppm_max=10_000.0)
    sim = Simulation(4, config)
    for name in ("a", "b", "c"):
        sim.add_node(name, script(
            on_start=lambda c, now, r: [SetTimer(key="t", delay_ms=10.0)],
            on_timer=lambda c, now, key: [SetTimer(key="t", delay_ms=10.0)],
        ))
    sim.start()
    sim.run_until(5000.0)
    offsets = set()
    for name in ("a", "b", "c"):
        core = sim.core(name)
        assert isinstance(core, ScriptCore)
        seen = [s.now_ms for s in core.seen]
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        local = sim.local_ms(name)
        assert abs(local - 5000.0) <= 100.0 + 5000.0 * 0.01
        offsets.add(round(local - 5000.0, 3))
        # Timers run on the local clock: 10 local ms apart.
        gaps = {round(b - a, 6) for a, b in itertools.pairwise(seen[1:])}
        assert gaps == {10.0}
    assert len(offsets) == 3


def test_a_clock_survives_restarts() -> None:
    sim = Simulation(4, SimConfig.calm().replace(clock_skew_ms_max=100.0, clock_drift_ppm_max=1000.0))
    sim.add_node("a", script())
    sim.start()
    sim.run_until(100.0)
    before = sim.local_ms("a")
    sim.crash("a")
    sim.run_until(150.0)
    sim.restart("a")
    core = sim.core("a")
    assert isinstance(core, ScriptCore)
    assert core.seen[0].now_ms > before
    assert core.seen[0].now_ms == sim.clock("a").local_ms(150.0)


def test_calm_clocks_are_true_time() -> None:
    sim = Simulation(4, SimConfig.calm())
    sim.add_node("a", script())
    sim.run_until(123.0)
    assert sim.local_ms("a") == 123.0
