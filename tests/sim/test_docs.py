"""The code in docs/architecture.md runs, and says what it claims."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from synod.sim import run_scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_architecture_page_code_runs() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 4
    # A real module, because dataclasses and the codec look classes' modules up.
    module = types.ModuleType("architecture_doc")
    sys.modules[module.__name__] = module
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), module.__dict__)
    result = run_scenario("counter", 3, {"chaos_ms": "500"})
    assert result.ok, result.violations
    assert result.statistics["crashes"] > 0


def test_the_documented_commands_exist() -> None:
    text = DOC.read_text()
    for flag in ("--seeds", "--first-seed", "--seed", "--trace", "--mutant", "--list", "-o"):
        assert f" {flag}" in text
