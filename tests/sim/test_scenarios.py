"""The scenario registry, options, replay commands, and the ``synod sim`` command."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import synod.toy.scenario  # noqa: F401  (registers "toy")
from synod.cli import main
from synod.cli.sim import SCENARIO_MODULES, load_scenario_modules
from synod.core import ConfigError
from synod.sim import (
    ScenarioOptions,
    ScenarioResult,
    SimConfig,
    Simulation,
    register_scenario,
    replay_command,
    run_scenario,
    scenarios,
)
from synod.sim.simulation import Violation

SHORT = ["-o", "chaos_ms=1000", "-o", "heal_ms=1000"]


def test_options_are_typed_and_a_typo_is_refused() -> None:
    options = ScenarioOptions({"nodes": "5", "rate": "0.5", "sim.loss_probability": "0.2", "typo": "1"})
    assert options.get_int("nodes", 3) == 5
    assert options.get_float("rate", 1.0) == 0.5
    assert options.get_str("absent", "x") == "x"
    assert options.sim_config().loss_probability == 0.2
    assert options.unused() == ["typo"]
    with pytest.raises(ConfigError, match="integer"):
        ScenarioOptions({"nodes": "many"}).get_int("nodes", 3)
    with pytest.raises(ConfigError, match="unknown config field"):
        ScenarioOptions({"sim.nope": "1"}).sim_config()
    with pytest.raises(ConfigError):
        ScenarioOptions({"sim.loss_probability": "2"}).sim_config()


def test_unknown_scenario_and_unknown_option_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown scenario"):
        run_scenario("no-such-scenario", 1)
    with pytest.raises(ConfigError, match="typo"):
        run_scenario("toy", 1, {"chaos_ms": "100", "heal_ms": "500", "typo": "1"})


def test_a_failure_inside_a_scenario_becomes_a_failed_result() -> None:
    def failing(seed: int, options: ScenarioOptions) -> ScenarioResult:
        sim = Simulation(seed, SimConfig.calm())
        sim.schedule(5.0, "boom", lambda: (_ for _ in ()).throw(Violation("planted violation")))
        sim.run_until(10.0)
        raise AssertionError("not reached")

    register_scenario("test-failing", failing, "always fails")
    assert scenarios()["test-failing"] == "always fails"
    result = run_scenario("test-failing", 4)
    assert not result.ok
    assert "planted violation" in result.violations[0]
    assert "5.000ms" in result.violations[0]
    assert result.trace_digest


def test_a_failed_run_is_not_masked_by_options_it_never_read() -> None:
    def early_failure(seed: int, options: ScenarioOptions) -> ScenarioResult:
        sim = Simulation(seed, SimConfig.calm())
        sim.schedule(1.0, "boom", lambda: (_ for _ in ()).throw(Violation("early")))
        sim.run_until(2.0)
        options.get_int("late", 0)
        raise AssertionError("not reached")

    register_scenario("test-early-failure", early_failure)
    result = run_scenario("test-early-failure", 1, {"late": "1"})
    assert not result.ok
    assert "early" in result.violations[0]
    assert "late" in result.violations[-1]


def test_replay_command_is_exact() -> None:
    assert replay_command("toy", 17, {"nodes": "5", "a": "1"}, "storage.skip_crc") == (
        "uv run synod sim toy --seed 17 --mutant storage.skip_crc -o a=1 -o nodes=5"
    )


def test_the_command_lists_scenarios_and_mutants() -> None:
    result = CliRunner().invoke(main, ["sim", "--list"])
    assert result.exit_code == 0
    assert "toy" in result.output and "storage.skip_crc" in result.output


def test_the_command_runs_many_seeds_and_summarises() -> None:
    result = CliRunner().invoke(main, ["sim", "toy", "--seeds", "3", "--first-seed", "10", *SHORT])
    assert result.exit_code == 0, result.output
    assert "3 seeds from 10, 3 passed, 0 failed" in result.output


def test_a_failing_run_prints_its_seed_and_replay_command_and_exits_non_zero() -> None:
    result = CliRunner().invoke(main, ["sim", "toy", "--seeds", "2", "--mutant", "storage.ack_before_fsync", *SHORT])
    assert result.exit_code == 1
    assert "FAILED toy seed 0" in result.output
    assert "replay: uv run synod sim toy --seed 0 --mutant storage.ack_before_fsync -o chaos_ms=1000 -o heal_ms=1000" in result.output


def test_the_mutant_can_come_from_the_environment() -> None:
    result = CliRunner().invoke(
        main, ["sim", "toy", "--seeds", "1", *SHORT], env={"SYNOD_MUTANT": "storage.ack_before_fsync"}
    )
    assert result.exit_code == 1
    assert "--mutant storage.ack_before_fsync" in result.output


def test_one_seed_is_verbose_and_replays_the_same_digest() -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["sim", "toy", "--seed", "5", *SHORT])
    second = runner.invoke(main, ["sim", "toy", "--seed", "5", *SHORT, "--trace"])
    assert first.exit_code == 0 and second.exit_code == 0
    digest = [line for line in first.output.splitlines() if line.startswith("trace digest")]
    assert digest and digest[0] in second.output
    assert " recv " in second.output and "writes_acknowledged" in first.output
    assert run_scenario("toy", 5, {"chaos_ms": "1000", "heal_ms": "1000"}).trace_digest in digest[0]


def test_bad_input_is_a_usage_error() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["sim", "toy", "--seed", "1", "--seeds", "2"]).exit_code == 2
    assert runner.invoke(main, ["sim", "toy", "--seed", "1", "--mutant", "nope"]).exit_code == 2
    assert runner.invoke(main, ["sim", "nope", "--seed", "1"]).exit_code == 2
    assert runner.invoke(main, ["sim", "toy", "--seed", "1", "-o", "novalue"]).exit_code == 2


def test_scenario_modules_that_do_not_exist_yet_are_skipped() -> None:
    loaded = load_scenario_modules()
    assert "synod.toy.scenario" in loaded
    assert set(loaded) <= set(SCENARIO_MODULES)


def test_the_simulator_imports_no_block() -> None:
    import ast
    from pathlib import Path

    import synod.sim

    blocks = ("synod.paxos", "synod.gossip", "synod.lock", "synod.txn", "synod.mapreduce", "synod.toy",
              "synod.runtime", "synod.node", "synod.cli")
    for path in Path(synod.sim.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(blocks), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(blocks) for a in node.names), path.name
