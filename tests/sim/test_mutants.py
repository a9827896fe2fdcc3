"""Planted bugs: the toy scenario's checks must catch each storage mutant, and
pass without one. Other blocks add theirs the same way, one line per mutant:

    assert_mutant_caught("paxos", "paxos.answer_before_persist", range(8))
"""

from __future__ import annotations

import pytest

import synod.toy.scenario  # noqa: F401  (registers "toy")
from synod.sim import assert_mutant_caught, assert_scenario_passes, run_scenario

SEEDS = range(6)
SHORT = {"chaos_ms": "2000", "heal_ms": "1500"}
#: A disk that tears every write a crash hits into small sectors, and records big
#: enough to span several of them: a CRC-less recovery then accepts garbage.
TEARING = {**SHORT, "sim.disk_sector_bytes": "16", "sim.disk_tear_probability": "1.0", "value_bytes": "64"}


def test_no_mutant_no_violation() -> None:
    assert_scenario_passes("toy", SEEDS, SHORT)
    assert_scenario_passes("toy", SEEDS, TEARING)


def test_ack_before_fsync_is_caught() -> None:
    caught = assert_mutant_caught("toy", "storage.ack_before_fsync", SEEDS, SHORT)
    assert all(result.violations for result in caught)


def test_ack_before_fsync_is_caught_by_the_scenario_alone() -> None:
    # Without the simulator's storage check, the toy's durability check must
    # still see acknowledged writes vanish.
    options = {**SHORT, "sim.storage_check": "false"}
    caught = assert_mutant_caught("toy", "storage.ack_before_fsync", SEEDS, options)
    assert any("durability" in v for result in caught for v in result.violations)


def test_skip_crc_is_caught() -> None:
    caught = assert_mutant_caught("toy", "storage.skip_crc", range(10), TEARING)
    assert any("StorageViolation" in v for result in caught for v in result.violations)


def test_the_helper_fails_when_a_mutant_goes_unseen() -> None:
    # With no crashes, an fsync that is skipped is never noticed: the helper must say so.
    calm = {**SHORT, "sim.faults": "false", "sim.heal_restart_all": "false"}
    with pytest.raises(AssertionError, match="cannot see this bug"):
        assert_mutant_caught("toy", "storage.ack_before_fsync", range(2), calm)


def test_mutants_are_switched_off_after_a_run() -> None:
    run_scenario("toy", 0, dict(SHORT), mutant="storage.ack_before_fsync")
    assert run_scenario("toy", 0, dict(SHORT)).ok
