"""``synod demo`` (the README's main command) runs and every check passes."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(240)
def test_demo_passes_every_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "synod", "demo"],
        capture_output=True, text=True, timeout=230, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "checks passed" in result.stdout


def test_cli_help_lists_demo() -> None:
    result = subprocess.run([sys.executable, "-m", "synod", "--help"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0 and "demo" in result.stdout
