"""The ``txn`` simulation scenario: passes over seeds, replays exactly, and its
checks catch each planted bug."""

from __future__ import annotations

import pytest

import synod.txn.scenarios  # noqa: F401  (registers the scenario)
from synod.sim import assert_mutant_caught, assert_scenario_passes, run_scenario


def test_txn_scenario_passes_a_seed() -> None:
    results = assert_scenario_passes("txn", [0])
    assert results[0].statistics["txns_ok"] > 0
    assert results[0].statistics["commits_after_heal"] > 0


@pytest.mark.slow
def test_txn_scenario_passes_many_seeds_with_four_shards() -> None:
    assert_scenario_passes("txn", range(100, 106), {"shards": "4"})
    assert_scenario_passes("txn", range(6))


@pytest.mark.slow
def test_the_same_seed_replays_to_the_same_trace() -> None:
    first = run_scenario("txn", 7, {"chaos_ms": "1500", "heal_ms": "3000"})
    again = run_scenario("txn", 7, {"chaos_ms": "1500", "heal_ms": "3000"})
    assert first.ok and first.trace_digest == again.trace_digest


@pytest.mark.slow
def test_commit_without_prepare_is_caught() -> None:
    assert_mutant_caught("txn", "txn.commit_without_prepare", range(3))


@pytest.mark.slow
def test_wounding_a_prepared_transaction_is_caught() -> None:
    assert_mutant_caught("txn", "txn.wound_prepared", range(3))


@pytest.mark.slow
def test_a_vote_from_stale_ballot_locks_is_caught() -> None:
    assert_mutant_caught("txn", "txn.vote_with_stale_ballot_locks", range(2, 5))
