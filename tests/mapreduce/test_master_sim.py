"""The master core under worker deaths, duplicates, stragglers and a poison
record, over many seeds, judged by an outside checker (master_harness.py)."""

from __future__ import annotations

import pytest

from synod.core import faults
from synod.core.errors import InvariantViolation
from synod.mapreduce.master import ACCEPT_LATE_MAP_COMPLETION
from synod.mapreduce.scenarios import CheckFailed, check_run, simulate

SEEDS = range(300)


@pytest.mark.parametrize("chunk", range(6))
def test_master_survives_faults_over_many_seeds(chunk: int) -> None:
    for seed in SEEDS[chunk::6]:
        run = simulate(seed)
        try:
            check_run(run)
        except CheckFailed:
            print("\n".join(run.trace[-40:]))
            raise


@pytest.mark.slow
def test_master_survives_faults_over_more_seeds() -> None:
    for seed in range(300, 5000):
        check_run(simulate(seed))


def test_same_seed_same_trace() -> None:
    assert simulate(17).trace == simulate(17).trace


def test_runs_exercise_the_hard_paths() -> None:
    totals = {"backups": 0, "reexecutions": 0, "duplicates": 0, "skipped": 0}
    for seed in range(120):
        stats = simulate(seed).master.statistics()
        totals["backups"] += stats.backups_started
        totals["reexecutions"] += stats.map_reexecutions
        totals["duplicates"] += stats.duplicates_ignored
        totals["skipped"] += stats.skipped_records
    assert all(count > 0 for count in totals.values()), totals


def test_checker_catches_accept_late_map_completion() -> None:
    """The planted bug re-binds later reducers to a second attempt of a map task.
    The checker alone (core invariants off) must catch it on some seed."""
    faults.enable_mutant(ACCEPT_LATE_MAP_COMPLETION)
    caught = []
    for seed in SEEDS:
        try:
            check_run(simulate(seed, check_invariants=False))
        except CheckFailed:
            caught.append(seed)
    assert caught, "no seed caught the planted bug"


def test_invariants_catch_accept_late_map_completion() -> None:
    faults.enable_mutant(ACCEPT_LATE_MAP_COMPLETION)
    with pytest.raises(InvariantViolation):
        for seed in SEEDS:
            simulate(seed)


def test_registered_scenario_runs_and_catches_the_planted_bug() -> None:
    from synod.sim import assert_mutant_caught, run_scenario

    result = run_scenario("mapreduce", 3)
    assert result.ok and result.statistics["attempts"] > 0
    assert run_scenario("mapreduce", 3).trace_digest == result.trace_digest
    assert_mutant_caught("mapreduce", ACCEPT_LATE_MAP_COMPLETION, range(60))
