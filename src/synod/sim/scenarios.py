"""Scenarios: named simulation runs with checks, a registry, and the mutant helpers.

A scenario is a function ``(seed, options) -> ScenarioResult`` registered under a
name with ``register_scenario``. It builds a ``Simulation``, adds nodes hosting
its cores, runs (usually ``run_chaos_then_heal``), checks what it must (for
example: every acknowledged write survived, the nodes converged) and returns a
result. A ``SimulationFailure`` raised inside (a core crashed, an invariant or a
check failed) is turned into a failed result by ``run_scenario``, so a scenario
only writes the happy path and its checks.

Blocks register their scenarios from their own packages (``synod.toy.scenario``,
later ``synod.paxos.scenarios`` ...); the simulator never imports a block. The
``synod sim`` command imports the scenario modules it knows of.

Planted bugs: ``assert_mutant_caught(scenario, mutant, seeds)`` runs a scenario
with a mutant switched on and fails unless some seed reports a violation; a
block proves its checker can fail with one line per mutant in its tests.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from synod.core.config import config_from_mapping
from synod.core.errors import ConfigError
from synod.core.faults import declared_mutants, disable_buggify, disable_mutants, enable_mutant
from synod.sim.config import SimConfig
from synod.sim.simulation import Simulation, SimulationFailure

MUTANT_ENVIRONMENT_VARIABLE = "SYNOD_MUTANT"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioResult:
    """The outcome of one run of one scenario with one seed."""

    scenario: str
    seed: int
    ok: bool
    violations: tuple[str, ...] = ()
    trace_digest: str = ""
    statistics: Mapping[str, float] = field(default_factory=dict)


class ScenarioOptions:
    """A scenario's ``key=value`` options (``-o key=value`` on the command line),
    read through typed getters with defaults. Keys starting with ``sim.`` override
    ``SimConfig`` fields (``-o sim.loss_probability=0.1``). ``unused()`` lists keys
    nobody read, so that a typo fails loudly instead of silently changing nothing."""

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        *,
        trace_sink: Callable[[str], None] | None = None,
    ) -> None:
        self._values = dict(values or {})
        self._read: set[str] = set()
        self.trace_sink = trace_sink

    def _get(self, key: str) -> str | None:
        self._read.add(key)
        return self._values.get(key)

    def get_int(self, key: str, default: int) -> int:
        raw = self._get(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"option {key}: expected an integer, got {raw!r}") from None

    def get_float(self, key: str, default: float) -> float:
        raw = self._get(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"option {key}: expected a number, got {raw!r}") from None

    def get_str(self, key: str, default: str) -> str:
        raw = self._get(key)
        return default if raw is None else raw

    def sim_config(self, base: SimConfig | None = None) -> SimConfig:
        """``base`` (or the default ``SimConfig``) with every ``sim.*`` option applied."""
        overrides = {}
        for key, value in self._values.items():
            if key.startswith("sim."):
                self._read.add(key)
                overrides[key.removeprefix("sim.")] = value
        start = base if base is not None else SimConfig()
        return config_from_mapping(SimConfig, overrides, base=start)

    def unused(self) -> list[str]:
        return sorted(key for key in self._values if key not in self._read)

    def items(self) -> list[tuple[str, str]]:
        return sorted(self._values.items())


ScenarioFunction = Callable[[int, ScenarioOptions], ScenarioResult]


@dataclass(frozen=True, slots=True)
class _Registered:
    function: ScenarioFunction
    description: str


_scenarios: dict[str, _Registered] = {}


def register_scenario(name: str, function: ScenarioFunction, description: str = "") -> None:
    """Register ``function`` as scenario ``name`` (re-registering replaces it)."""
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"invalid scenario name {name!r}")
    _scenarios[name] = _Registered(function, description or (function.__doc__ or "").strip().split("\n")[0])


def scenarios() -> dict[str, str]:
    """Every registered scenario name with its one-line description."""
    return {name: entry.description for name, entry in sorted(_scenarios.items())}


def mutant_from_environment() -> str | None:
    """The mutant named by ``SYNOD_MUTANT``, if set and not empty."""
    return os.environ.get(MUTANT_ENVIRONMENT_VARIABLE) or None


def result_from_simulation(
    name: str, seed: int, simulation: Simulation, violations: Iterable[str] = (),
    extra_statistics: Mapping[str, float] | None = None,
) -> ScenarioResult:
    """Build a ``ScenarioResult`` from a finished simulation and the checks' findings."""
    statistics: dict[str, float] = {
        key: value for key, value in dataclasses.asdict(simulation.statistics()).items()
    }
    statistics.update(extra_statistics or {})
    found = tuple(violations)
    return ScenarioResult(
        scenario=name, seed=seed, ok=not found, violations=found,
        trace_digest=simulation.trace_digest(), statistics=statistics,
    )


def run_scenario(
    name: str,
    seed: int,
    options: ScenarioOptions | Mapping[str, str] | None = None,
    *,
    mutant: str | None = None,
) -> ScenarioResult:
    """Run scenario ``name`` with ``seed``, with ``mutant`` switched on if given.

    Bugs found during the run (``SimulationFailure``, any exception from the
    scenario) become a failed result. Bad options raise ``ConfigError``.
    """
    entry = _scenarios.get(name)
    if entry is None:
        known = ", ".join(sorted(_scenarios)) or "none"
        raise ConfigError(f"unknown scenario {name!r} (known: {known})")
    opts = options if isinstance(options, ScenarioOptions) else ScenarioOptions(options)
    disable_mutants()
    if mutant:
        enable_mutant(mutant)
    try:
        result = entry.function(seed, opts)
    except SimulationFailure as failure:
        result = ScenarioResult(
            scenario=name, seed=seed, ok=False, violations=(failure.report(),),
            trace_digest=failure.trace_digest,
        )
    except ConfigError:
        raise
    except Exception as error:
        detail = "".join(traceback.format_exception(error)).rstrip()
        result = ScenarioResult(scenario=name, seed=seed, ok=False, violations=(f"scenario raised:\n{detail}",))
    finally:
        disable_mutants()
        disable_buggify()
    unused = opts.unused()
    if unused:
        complaint = f"scenario {name!r} does not know option(s): {', '.join(unused)}"
        if result.ok:
            raise ConfigError(complaint)
        # The run may have failed before reading them: keep the failure visible.
        return dataclasses.replace(result, violations=(*result.violations, f"note: {complaint}"))
    return result


def replay_command(
    name: str, seed: int, options: ScenarioOptions | Mapping[str, str] | None = None,
    mutant: str | None = None,
) -> str:
    """The exact command line that replays one run."""
    pairs = options.items() if isinstance(options, ScenarioOptions) else sorted((options or {}).items())
    parts = ["uv", "run", "synod", "sim", name, "--seed", str(seed)]
    if mutant:
        parts += ["--mutant", mutant]
    for key, value in pairs:
        parts += ["-o", f"{key}={value}"]
    return " ".join(parts)


def assert_scenario_passes(
    name: str, seeds: Iterable[int], options: Mapping[str, str] | None = None
) -> list[ScenarioResult]:
    """Run ``name`` over ``seeds`` without mutants; raise ``AssertionError`` naming
    every failing seed (with its replay command) if any fails."""
    results = [run_scenario(name, seed, dict(options or {})) for seed in seeds]
    failed = [r for r in results if not r.ok]
    if failed:
        lines = [f"{len(failed)} of {len(results)} seeds of {name!r} failed:"]
        for result in failed:
            lines.append(f"seed {result.seed}: {replay_command(name, result.seed, options)}")
            lines += [f"  {v}" for v in result.violations]
        raise AssertionError("\n".join(lines))
    return results


def assert_mutant_caught(
    name: str,
    mutant: str,
    seeds: Iterable[int],
    options: Mapping[str, str] | None = None,
    *,
    caught_min: int = 1,
) -> list[ScenarioResult]:
    """Run ``name`` over ``seeds`` with ``mutant`` on; raise ``AssertionError`` unless
    at least ``caught_min`` runs report a violation. Returns the failed runs."""
    if mutant not in declared_mutants():
        raise ConfigError(f"mutant {mutant!r} is not declared (is its module imported?)")
    seed_list = list(seeds)
    results = [run_scenario(name, seed, dict(options or {}), mutant=mutant) for seed in seed_list]
    caught = [r for r in results if not r.ok]
    if len(caught) < caught_min:
        raise AssertionError(
            f"mutant {mutant!r} caught by {len(caught)} of {len(seed_list)} seeds of {name!r} "
            f"(wanted at least {caught_min}): the checks cannot see this bug"
        )
    return caught
