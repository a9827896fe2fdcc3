"""The kernel's config loader, mutants and BUGGIFY switches."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from synod.core import ConfigError, InvariantViolation, invariant, node_id
from synod.core.config import config_from_mapping, load_toml, parse_overrides
from synod.core.faults import (
    buggify,
    declare_mutant,
    declared_mutants,
    disable_buggify,
    enable_buggify,
    enable_mutant,
    mutant,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoConfig:
    timeout_ms: float = 100.0
    retries_max: int = 3
    name: str = "x"
    verbose: bool = False
    seeds: tuple[str, ...] = ()
    limit_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0:
            raise ConfigError("DemoConfig.timeout_ms: must be positive")


def test_config_from_mapping_coerces_and_validates() -> None:
    cfg = config_from_mapping(DemoConfig, {"timeout_ms": 5, "retries-max": "7", "verbose": "yes",
                                           "seeds": "a:1,b:2", "limit_bytes": "10"})
    assert cfg == DemoConfig(timeout_ms=5.0, retries_max=7, verbose=True, seeds=("a:1", "b:2"), limit_bytes=10)


@pytest.mark.parametrize(
    "values,match",
    [
        ({"nope": 1}, "unknown config field 'nope'"),
        ({"retries_max": "many"}, "DemoConfig.retries_max"),
        ({"timeout_ms": -1}, "timeout_ms: must be positive"),
        ({"verbose": "perhaps"}, "DemoConfig.verbose"),
    ],
)
def test_config_errors_name_the_field(values: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_mapping(DemoConfig, values)


def test_load_toml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('timeout_ms = 20\nname = "n1"\n')
    assert config_from_mapping(DemoConfig, load_toml(path)).name == "n1"
    path.write_text("timeout_ms = = 20")
    with pytest.raises(ConfigError, match=r"c\.toml"):
        load_toml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    assert parse_overrides(["a=1", "b = x"]) == {"a": "1", "b": "x"}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])


def test_invariant_survives_and_raises() -> None:
    invariant(True, "fine")
    with pytest.raises(InvariantViolation, match="broken"):
        invariant(False, "broken")


def test_node_ids_are_validated() -> None:
    assert node_id("n-1.a_b") == "n-1.a_b"
    for bad in ("", "-x", "a b", "x" * 65, "a/b"):
        with pytest.raises(ConfigError):
            node_id(bad)


def test_mutants_are_declared_and_switched() -> None:
    name = declare_mutant("test.demo", "a demo bug")
    assert name in declared_mutants()
    assert not mutant(name)
    enable_mutant(name)
    assert mutant(name)
    with pytest.raises(ConfigError, match="unknown mutant"):
        enable_mutant("test.no-such-bug")


def test_buggify_is_off_outside_simulation_and_deterministic_inside() -> None:
    rng = random.Random(1)
    assert not any(buggify(rng, "site") for _ in range(1000))

    def fired(seed: int) -> list[bool]:
        enable_buggify(seed)
        core_rng = random.Random(f"{seed}/core")
        result = [buggify(core_rng, f"site-{i % 7}", 0.5) for i in range(200)]
        disable_buggify()
        return result

    assert fired(3) == fired(3)
    assert any(any(fired(seed)) for seed in range(10))
