"""Same seed, same trace; different seed, different trace -- also across processes
with different string hashing (PYTHONHASHSEED)."""

from __future__ import annotations

import os
import subprocess
import sys

import synod.toy.scenario  # noqa: F401  (registers "toy")
from synod.sim import run_scenario

SHORT = {"chaos_ms": "1500", "heal_ms": "1500"}


def test_same_seed_same_digest() -> None:
    first = run_scenario("toy", 11, dict(SHORT))
    second = run_scenario("toy", 11, dict(SHORT))
    assert first.ok and second.ok
    assert first.trace_digest == second.trace_digest
    assert first.statistics == second.statistics


def test_different_seeds_differ() -> None:
    digests = {run_scenario("toy", seed, dict(SHORT)).trace_digest for seed in range(5)}
    assert len(digests) == 5


def test_digest_does_not_depend_on_string_hashing() -> None:
    code = (
        "import synod.toy.scenario\n"
        "from synod.sim import run_scenario\n"
        "print(run_scenario('toy', 7, {'chaos_ms': '1000', 'heal_ms': '1000'}).trace_digest)\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert run_scenario("toy", 7, {"chaos_ms": "1000", "heal_ms": "1000"}).trace_digest in digests


def test_trace_lines_replay_exactly() -> None:
    from synod.sim import ScenarioOptions

    runs: list[list[str]] = [[], []]
    for lines in runs:
        run_scenario("toy", 3, ScenarioOptions(dict(SHORT), trace_sink=lines.append))
    assert runs[0] == runs[1]
    assert len(runs[0]) > 1000
