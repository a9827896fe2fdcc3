"""``synod sim``: run simulation scenarios over many seeds, or replay one.

    synod sim --list                      # scenarios and planted bugs
    synod sim toy --seeds 100             # seeds 0..99, a progress line, a summary
    synod sim toy --seeds 100 --first-seed 5000
    synod sim toy --seed 17 --trace       # one run, verbose, every trace line
    synod sim toy --seeds 20 --mutant storage.ack_before_fsync   # must fail
    synod sim toy --seed 3 -o nodes=5 -o sim.loss_probability=0.1

A failing run prints its seed, its violations and the exact command that replays
it; the exit status is 1 if any run failed. ``SYNOD_MUTANT=<name>`` has the same
effect as ``--mutant <name>``.

Scenarios live in their blocks' packages; the modules listed in
``SCENARIO_MODULES`` are imported here (a module that does not exist yet is
skipped), which registers their scenarios. The simulator never imports a block.
"""

from __future__ import annotations

import importlib
import sys
import time

import click

from synod.core.config import parse_overrides
from synod.core.errors import ConfigError
from synod.core.faults import declared_mutants
from synod.sim import (
    ScenarioOptions,
    ScenarioResult,
    mutant_from_environment,
    replay_command,
    run_scenario,
    scenarios,
)

#: Modules that register scenarios when imported. ONLY the list lives here.
SCENARIO_MODULES = (
    "synod.toy.scenario",
    "synod.paxos.scenario",
    "synod.gossip.scenarios",
    "synod.lock.scenarios",
    "synod.txn.scenarios",
    "synod.mapreduce.scenarios",
)


def load_scenario_modules() -> list[str]:
    """Import every scenario module that exists; return the names imported."""
    loaded = []
    for name in SCENARIO_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            # Skip a block (or its scenarios module) that has not landed yet; a
            # module that exists but fails to import is a bug and propagates.
            if error.name is not None and name.startswith(error.name):
                continue
            raise
        loaded.append(name)
    return loaded


def _print_listing() -> None:
    click.echo("scenarios:")
    for name, description in scenarios().items():
        click.echo(f"  {name:<16} {description}")
    click.echo("planted bugs (--mutant NAME):")
    for name, description in sorted(declared_mutants().items()):
        click.echo(f"  {name:<32} {description}")


def _print_failure(result: ScenarioResult, values: dict[str, str], mutant: str | None) -> None:
    click.echo(f"FAILED {result.scenario} seed {result.seed}:", err=True)
    for violation in result.violations:
        for line in violation.splitlines():
            click.echo(f"  {line}", err=True)
    click.echo(f"  replay: {replay_command(result.scenario, result.seed, values, mutant)}", err=True)


def _run_one(scenario: str, seed: int, values: dict[str, str], mutant: str | None, trace: bool) -> int:
    sink = click.echo if trace else None
    click.echo(f"scenario {scenario}, seed {seed}" + (f", mutant {mutant}" if mutant else ""))
    if values:
        click.echo("options: " + " ".join(f"{k}={v}" for k, v in sorted(values.items())))
    started = time.perf_counter()
    result = run_scenario(scenario, seed, ScenarioOptions(values, trace_sink=sink), mutant=mutant)
    elapsed = time.perf_counter() - started
    for key, value in result.statistics.items():
        shown = f"{value:.1f}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"
        click.echo(f"  {key:<22} {shown}")
    click.echo(f"trace digest {result.trace_digest}")
    if result.ok:
        click.echo(f"ok ({elapsed:.2f}s wall)")
        return 0
    _print_failure(result, values, mutant)
    return 1


def _run_many(
    scenario: str, first: int, count: int, values: dict[str, str], mutant: str | None, fail_fast: bool
) -> int:
    interactive = sys.stdout.isatty()
    report_every = max(1, count // 10)
    failed: list[ScenarioResult] = []
    started = time.perf_counter()
    done = 0
    for seed in range(first, first + count):
        result = run_scenario(scenario, seed, dict(values), mutant=mutant)
        done += 1
        if not result.ok:
            failed.append(result)
            if interactive:
                click.echo()
            _print_failure(result, values, mutant)
        line = f"[{done}/{count}] {scenario}: {done - len(failed)} ok, {len(failed)} failed (seed {seed})"
        if interactive:
            click.echo("\r" + line, nl=False)
        elif done % report_every == 0 or done == count:
            click.echo(line)
        if failed and fail_fast:
            break
    if interactive:
        click.echo()
    elapsed = time.perf_counter() - started
    summary = (
        f"{scenario}: {done} seeds from {first}, {done - len(failed)} passed, {len(failed)} failed"
        f" in {elapsed:.1f}s" + (f" (mutant {mutant})" if mutant else "")
    )
    click.echo(summary)
    if failed:
        click.echo("failing seeds: " + " ".join(str(r.seed) for r in failed))
        return 1
    return 0


@click.command("sim")
@click.argument("scenario", required=False)
@click.option("--seeds", type=click.IntRange(min=1), help="Run this many seeds (from --first-seed).")
@click.option("--first-seed", type=int, default=0, show_default=True, help="First seed of --seeds.")
@click.option("--seed", type=int, help="Run one seed, verbosely (replay).")
@click.option("--mutant", help="Switch on a planted bug (or set SYNOD_MUTANT).")
@click.option("--nodes", type=click.IntRange(min=1), help="Shorthand for -o nodes=N.")
@click.option("--replicas", type=click.IntRange(min=1), help="Shorthand for -o replicas=N.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A scenario option; sim.<field> sets a SimConfig field.")
@click.option("--trace", is_flag=True, help="With --seed: print every trace line.")
@click.option("--fail-fast", is_flag=True, help="With --seeds: stop at the first failure.")
@click.option("--list", "list_", is_flag=True, help="List scenarios and planted bugs.")
def sim_command(
    scenario: str | None, seeds: int | None, first_seed: int, seed: int | None, mutant: str | None,
    nodes: int | None, replicas: int | None, options: tuple[str, ...], trace: bool, fail_fast: bool,
    list_: bool,
) -> None:
    """Run SCENARIO in the deterministic simulator over many seeds, or replay one."""
    load_scenario_modules()
    if list_ or scenario is None:
        _print_listing()
        return
    if seed is not None and seeds is not None:
        raise click.UsageError("give --seed S (one run) or --seeds N (many), not both")
    mutant = mutant or mutant_from_environment()
    try:
        values = parse_overrides(list(options))
        if nodes is not None:
            values["nodes"] = str(nodes)
        if replicas is not None:
            values["replicas"] = str(replicas)
        if seed is not None:
            status = _run_one(scenario, seed, values, mutant, trace)
        else:
            status = _run_many(scenario, first_seed, seeds or 10, values, mutant, fail_fast)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    sys.exit(status)


def register(group: click.Group) -> None:
    group.add_command(sim_command)
