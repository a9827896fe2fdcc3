"""The ``paxos`` simulation scenario over many seeds, and the planted bugs it catches.

Default (CI): the fixed set of 200 seeds with 3 replicas (about two minutes of
one core), a few with 5, and one known-catching seed per planted bug. Under
``-m slow``: 50 seeds with 5 replicas, and each planted bug over 40 seeds.
"""

from __future__ import annotations

import pytest

import synod.paxos.scenario  # noqa: F401  (registers the scenario)
from synod.paxos.replica import (
    MUTANT_ANSWER_BEFORE_PERSIST,
    MUTANT_LEASE_IGNORES_DRIFT,
    MUTANT_PROMISE_EQUAL_BALLOT,
    MUTANT_SKIP_GAP_FILL,
)
from synod.paxos.statemachine import MUTANT_SNAPSHOT_DROPS_CLIENT_TABLE
from synod.sim import assert_mutant_caught, assert_scenario_passes

#: The fixed seed set CI runs.
CI_SEEDS = range(1, 201)
#: Seeds that ever failed without a mutant, kept as regression tests. Seed 3
#: was reported not linearizable while the checker was being rewritten (a
#: checker bug, fixed there); it stays here all the same. Seed 107764 (of the
#: 10,000-seed run) failed the liveness watch: a leader whose links were cut or
#: lossy stayed in office on one lucky ack without progress; the watch now
#: demands progress only over fault-free links to a majority.
REGRESSION_SEEDS = (3, 107764)

#: The lease mutant needs a lease long enough that the drift bound (a tenth of
#: it) dwarfs network delays, and few enough faults that leaders change by
#: isolation rather than by crashes.
LEASE_OPTIONS = {"lease_ms": "300", "sim.faults": "false"}

#: Per mutant: options, and seeds known to catch it with the code as it is (found
#: by running seeds 1-40; rates in docs/paxos.md).
MUTANTS: dict[str, tuple[dict[str, str], tuple[int, ...]]] = {
    MUTANT_ANSWER_BEFORE_PERSIST: ({}, (25,)),
    MUTANT_PROMISE_EQUAL_BALLOT: ({}, (2,)),
    # Since snapshots became SaveSnapshot effects (queued behind earlier persists,
    # WAL truncated) the runs differ: over seeds 1..40 these two are caught by
    # one seed each (were 3 and 4).
    MUTANT_SKIP_GAP_FILL: ({}, (24,)),
    MUTANT_SNAPSHOT_DROPS_CLIENT_TABLE: ({}, (19,)),
    MUTANT_LEASE_IGNORES_DRIFT: (LEASE_OPTIONS, (10,)),
}


def test_the_scenario_passes_a_few_seeds_with_3_replicas() -> None:
    assert_scenario_passes("paxos", range(1, 4))


def test_the_scenario_passes_with_5_replicas() -> None:
    assert_scenario_passes("paxos", (1,), {"replicas": "5"})


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_regression_seed(seed: int) -> None:
    assert_scenario_passes("paxos", (seed,))


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_each_planted_bug_is_caught(mutant: str) -> None:
    options, seeds = MUTANTS[mutant]
    assert_mutant_caught("paxos", mutant, seeds[:1], options)


@pytest.mark.parametrize("chunk", range(8))
def test_the_ci_seed_set_passes_with_3_replicas(chunk: int) -> None:
    # In eight parts of 25 seeds, so each stays far from the per-test timeout.
    assert_scenario_passes("paxos", CI_SEEDS[chunk * 25:(chunk + 1) * 25])


@pytest.mark.slow
def test_50_seeds_pass_with_5_replicas() -> None:
    assert_scenario_passes("paxos", range(1, 51), {"replicas": "5"})


@pytest.mark.slow
def test_the_lease_scenario_options_pass_without_mutants() -> None:
    assert_scenario_passes("paxos", range(1, 41), LEASE_OPTIONS)


@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_each_planted_bug_is_caught_over_40_seeds(mutant: str) -> None:
    options, seeds = MUTANTS[mutant]
    caught = assert_mutant_caught("paxos", mutant, range(1, 41), options)
    assert set(seeds) <= {result.seed for result in caught}
