"""Shared test fixtures: mutants and BUGGIFY are always off between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from synod.core import faults


@pytest.fixture(autouse=True)
def _clean_fault_switches() -> Iterator[None]:
    faults.disable_mutants()
    faults.disable_buggify()
    yield
    faults.disable_mutants()
    faults.disable_buggify()
