"""Fixtures for the storage tests: every WAL and snapshot test runs on the
simulated disk and on real files in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.storage.files import FileSystem
from synod.storage.realfs import RealFileSystem
from synod.storage.simdisk import SimDisk


@pytest.fixture(params=["simdisk", "realfs"])
def fs(request: pytest.FixtureRequest, tmp_path: Path) -> FileSystem:
    if request.param == "simdisk":
        return SimDisk()
    return RealFileSystem(tmp_path)
