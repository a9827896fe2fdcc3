"""Planted bugs (mutants) and simulation-only fault points (BUGGIFY).

Mutants
-------
A *mutant* is a known bug planted on purpose, by name, so that a test can prove
a checker catches it (a checker nothing can trip is not a checker). Code that
hosts a mutant reads::

    if mutant("wal.ack_before_fsync"):
        ...the buggy path...

Every mutant name is declared once with ``declare_mutant`` at import time of the
module that hosts it, so ``synod sim --mutant NAME`` can refuse a typo. Mutants are
off unless switched on by ``enable_mutant`` (the simulator and the test helpers do
this from ``SYNOD_MUTANT=<name>``; a core never reads the environment itself).

BUGGIFY
-------
FoundationDB's idea: points in the code where, *in simulation only*, a rare path is
made common (a short timeout, an extra delay, a smaller batch). ``buggify(rng,
site)`` is always False outside the simulator. Inside it, each site is switched on
for the whole run with probability 1/4 (decided by the run's seed) and then fires
with probability ``probability`` each time it is reached, drawn from the core's own
seeded RNG so that runs replay exactly.
"""

from __future__ import annotations

import random

from synod.core.errors import ConfigError

_declared: dict[str, str] = {}
_enabled: set[str] = set()

_buggify_enabled = False
_buggify_sites: dict[str, bool] = {}
_buggify_rng: random.Random | None = None


def declare_mutant(name: str, description: str) -> str:
    """Register a planted bug by name; returns the name for use as a constant."""
    _declared[name] = description
    return name


def declared_mutants() -> dict[str, str]:
    """All declared mutant names with their descriptions."""
    return dict(_declared)


def enable_mutant(name: str) -> None:
    """Switch a declared mutant on (tests and the simulator only)."""
    if name not in _declared:
        known = ", ".join(sorted(_declared)) or "none"
        raise ConfigError(f"unknown mutant {name!r} (known: {known})")
    _enabled.add(name)


def disable_mutants() -> None:
    """Switch every mutant off."""
    _enabled.clear()


def mutant(name: str) -> bool:
    """True when the planted bug ``name`` is switched on."""
    return name in _enabled


def enable_buggify(seed: int) -> None:
    """Turn BUGGIFY points on for a simulation run with this seed."""
    global _buggify_enabled, _buggify_rng
    _buggify_enabled = True
    _buggify_sites.clear()
    _buggify_rng = random.Random(f"buggify-sites/{seed}")


def disable_buggify() -> None:
    """Turn BUGGIFY points off (the default, and always so outside simulation)."""
    global _buggify_enabled, _buggify_rng
    _buggify_enabled = False
    _buggify_sites.clear()
    _buggify_rng = None


def buggify(rng: random.Random, site: str, probability: float = 0.05) -> bool:
    """True, in simulation only, when the fault point ``site`` fires now."""
    if not _buggify_enabled:
        return False
    active = _buggify_sites.get(site)
    if active is None:
        assert _buggify_rng is not None
        active = _buggify_rng.random() < 0.25
        _buggify_sites[site] = active
    return active and rng.random() < probability
