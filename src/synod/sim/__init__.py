"""``synod.sim``: the deterministic simulator that runs any synod core under faults.

Start with ``Simulation`` (one seeded, single-threaded world: virtual time, one
event heap, a simulated network and disks, crashes and restarts, skewed clocks,
BUGGIFY, a fault schedule drawn from the seed, a healing phase) and ``SimConfig``.
Scenarios (``register_scenario``, ``run_scenario``) are named runs with checks,
driven by ``synod sim <scenario> --seeds N``. ``assert_mutant_caught`` proves a
scenario's checks catch a planted bug. See ``docs/architecture.md``.
"""

from synod.sim.clock import NodeClock
from synod.sim.config import SimConfig
from synod.sim.disk import NodeDisk, StorageViolation
from synod.sim.scenarios import (
    MUTANT_ENVIRONMENT_VARIABLE,
    ScenarioOptions,
    ScenarioResult,
    assert_mutant_caught,
    assert_scenario_passes,
    mutant_from_environment,
    register_scenario,
    replay_command,
    result_from_simulation,
    run_scenario,
    scenarios,
)
from synod.sim.schedule import Clog, Crash, Fault, LossBurst, OneWayCut, Partition, draw_schedule
from synod.sim.simulation import SimHost, SimStatistics, Simulation, SimulationFailure, Violation

__all__ = [
    "MUTANT_ENVIRONMENT_VARIABLE",
    "Clog",
    "Crash",
    "Fault",
    "LossBurst",
    "NodeClock",
    "NodeDisk",
    "OneWayCut",
    "Partition",
    "ScenarioOptions",
    "ScenarioResult",
    "SimConfig",
    "SimHost",
    "SimStatistics",
    "Simulation",
    "SimulationFailure",
    "StorageViolation",
    "Violation",
    "assert_mutant_caught",
    "assert_scenario_passes",
    "draw_schedule",
    "mutant_from_environment",
    "register_scenario",
    "replay_command",
    "result_from_simulation",
    "run_scenario",
    "scenarios",
]
