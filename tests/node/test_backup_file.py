"""The backup file: what is written is read back, and damage is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.core.errors import ConfigError
from synod.node.backup import Backup, GroupBackup, read_backup, write_backup


def backup() -> Backup:
    return Backup(node="n3", created_s=1.5, groups=(
        GroupBackup(group="lock", index=7, members=("n1", "n2", "n3"), chunks=(b"a", b"\x00b"), digest="d1",
                    round=4),
        GroupBackup(group="s1", index=2, members=("n1",), chunks=(), digest="d2"),
    ))


def test_a_backup_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "b"
    write_backup(backup(), path)
    assert read_backup(path) == backup()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_or_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b"
    write_backup(backup(), path)
    data = bytearray(path.read_bytes())
    data[20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum"):
        read_backup(path)
    path.write_bytes(b"hello")
    with pytest.raises(ConfigError, match="not a synod backup"):
        read_backup(path)
    with pytest.raises(ConfigError, match="cannot read"):
        read_backup(tmp_path / "missing")
