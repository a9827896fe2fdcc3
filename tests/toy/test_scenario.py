"""The ``toy`` scenario over many seeds: durability and convergence under chaos."""

from __future__ import annotations

import pytest

import synod.toy.scenario  # noqa: F401  (registers "toy")
from synod.sim import assert_scenario_passes, run_scenario

#: Chaos and healing shortened so that 50 seeds stay well under 20 s.
FAST = {"chaos_ms": "2000", "heal_ms": "1000"}


def test_toy_passes_fifty_seeds() -> None:
    results = assert_scenario_passes("toy", range(50), FAST)
    assert sum(r.statistics["crashes"] for r in results) > 100
    assert all(r.statistics["writes_acknowledged"] > 0 for r in results)


def test_toy_passes_with_five_nodes_and_harsh_options() -> None:
    options = {**FAST, "nodes": "5", "clients": "3", "sim.loss_probability": "0.05", "sim.duplicate_probability": "0.05"}
    assert_scenario_passes("toy", range(5), options)


def test_a_run_reports_its_statistics() -> None:
    result = run_scenario("toy", 1, dict(FAST))
    assert result.ok
    for key in ("events", "messages_delivered", "fsyncs", "crashes", "restarts", "operations"):
        assert result.statistics[key] > 0


@pytest.mark.slow
def test_toy_passes_five_hundred_seeds_at_full_length() -> None:
    assert_scenario_passes("toy", range(1000, 1500))


@pytest.mark.slow
def test_toy_passes_harsh_config_seeds() -> None:
    options = {"nodes": "5", "sim.loss_probability": "0.05", "sim.duplicate_probability": "0.05",
               "sim.fault_interval_ms_mean": "120", "sim.fsync_ms_max": "20"}
    assert_scenario_passes("toy", range(2000, 2100), options)
