"""SimDisk keeps what a real disk keeps across a power loss, and no more."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core.errors import ConfigError
from synod.storage import FileClosed, InvalidPath, SimDisk, SimDiskConfig
from synod.storage.files import FileSystem

SEEDS = range(200)


def test_simdisk_implements_the_file_system_interface() -> None:
    disk: FileSystem = SimDisk()
    assert disk.listdir("") == []


def test_writes_are_readable_at_once_and_counted() -> None:
    disk = SimDisk()
    handle = disk.create("a")
    handle.write(b"hello ")
    handle.write(b"world")
    assert disk.read("a") == b"hello world"
    assert disk.read_range("a", 6, 100) == b"world"
    assert handle.size == disk.size("a") == 11
    handle.fsync()
    stats = disk.statistics()
    assert (stats.bytes_written, stats.fsyncs, stats.dir_fsyncs) == (11, 1, 0)


def test_fsynced_content_survives_every_crash() -> None:
    for seed in SEEDS:
        disk = SimDisk()
        handle = disk.create("a")
        disk.fsync_dir("")
        handle.write(b"x" * 1000)
        handle.fsync()
        handle.write(b"y" * 1000)
        disk.crash(random.Random(seed))
        assert disk.read("a")[:1000] == b"x" * 1000


def test_unsynced_writes_may_be_lost_kept_or_torn() -> None:
    outcomes = set()
    for seed in SEEDS:
        disk = SimDisk(SimDiskConfig(sector_bytes=16))
        handle = disk.create("a")
        disk.fsync_dir("")
        handle.fsync()
        handle.write(b"1" * 64)
        handle.write(b"2" * 64)
        disk.crash(random.Random(seed))
        data = disk.read("a")
        assert len(data) <= 128
        if data == b"":
            outcomes.add("all lost")
        elif data == b"1" * 64 + b"2" * 64:
            outcomes.add("all kept")
        elif data == b"1" * 64:
            outcomes.add("first kept")
        else:
            outcomes.add("torn")
    assert outcomes == {"all lost", "all kept", "first kept", "torn"}


def test_a_torn_write_can_keep_a_later_sector_and_lose_an_earlier_one() -> None:
    """The power-loss case FoundationDB's simulator models: the drive's cache
    wrote sector 2 of a write but not sector 1."""
    patterns = set()
    for seed in range(1000):
        disk = SimDisk(SimDiskConfig(sector_bytes=16, tear_probability=1.0))
        handle = disk.create("a")
        disk.fsync_dir("")
        handle.fsync()
        new = bytes(range(1, 65))
        handle.write(new)
        disk.crash(random.Random(seed))
        data = disk.read("a")
        if len(data) == 64:
            sectors = [data[i : i + 16] == new[i : i + 16] for i in range(0, 64, 16)]
            zeros = [data[i : i + 16] == bytes(16) for i in range(0, 64, 16)]
            if not sectors[0] and sectors[-1]:
                patterns.add("later kept, earlier lost")
            if any(zeros):
                patterns.add("zero-filled sector")
            if not any(s or z for s, z in zip(sectors, zeros, strict=True)):
                patterns.add("garbage")
        elif len(data) < 64:
            assert data == new[: len(data)]
            patterns.add("short")
    assert patterns == {"later kept, earlier lost", "zero-filled sector", "garbage", "short"}


def test_a_crash_is_deterministic_given_the_seed() -> None:
    def run(seed: int) -> list[tuple[str, bytes]]:
        disk = SimDisk(SimDiskConfig(sector_bytes=8))
        disk.mkdir("d")
        for name in ("d/a", "d/b", "c"):
            handle = disk.create(name)
            for i in range(5):
                handle.write(bytes([i]) * 37)
                if i == 2:
                    handle.fsync()
        disk.fsync_dir("")
        disk.crash(random.Random(seed))
        return [(n, disk.read(n)) for n in ("c",) if disk.exists(n)] + [
            (n, disk.read(f"d/{n}")) for n in (disk.listdir("d") if disk.exists("d") else [])
        ]

    assert run(7) == run(7)
    assert len({repr(run(seed)) for seed in range(30)}) > 1


def test_a_create_is_durable_only_after_fsync_dir() -> None:
    lost = kept = 0
    for seed in SEEDS:
        disk = SimDisk()
        handle = disk.create("a")
        handle.write(b"data")
        handle.fsync()
        disk.crash(random.Random(seed))
        if disk.exists("a"):
            kept += 1
            assert disk.read("a") == b"data"
        else:
            lost += 1
    assert lost > 0 and kept > 0
    for seed in SEEDS:
        disk = SimDisk()
        disk.create("a").fsync()
        disk.fsync_dir("")
        disk.crash(random.Random(seed))
        assert disk.exists("a")


def test_rename_is_atomic_and_durable_after_fsync_dir() -> None:
    seen = set()
    for seed in SEEDS:
        disk = SimDisk()
        old = disk.create("f")
        old.write(b"old")
        old.fsync()
        disk.fsync_dir("")
        new = disk.create("f.tmp")
        new.write(b"new")
        new.fsync()
        disk.rename("f.tmp", "f")
        disk.crash(random.Random(seed))
        content = disk.read("f")
        assert content in (b"old", b"new")
        seen.add(content)
    assert seen == {b"old", b"new"}
    for seed in SEEDS:
        disk = SimDisk()
        new = disk.create("f.tmp")
        new.write(b"new")
        new.fsync()
        disk.rename("f.tmp", "f")
        disk.fsync_dir("")
        disk.crash(random.Random(seed))
        assert disk.read("f") == b"new" and not disk.exists("f.tmp")


def test_a_rename_across_directories_is_refused() -> None:
    disk = SimDisk()
    disk.mkdir("d")
    disk.create("f").close()
    with pytest.raises(InvalidPath, match="crosses directories"):
        disk.rename("f", "d/f")


def test_a_remove_may_be_undone_by_a_crash_before_fsync_dir() -> None:
    back = 0
    for seed in SEEDS:
        disk = SimDisk()
        disk.create("a").fsync()
        disk.fsync_dir("")
        disk.remove("a")
        assert not disk.exists("a")
        disk.crash(random.Random(seed))
        back += disk.exists("a")
    assert 0 < back < len(SEEDS)


def test_names_in_a_lost_directory_are_lost_with_it() -> None:
    for seed in SEEDS:
        disk = SimDisk()
        disk.mkdir("a/b")
        disk.create("a/b/f").fsync()
        disk.fsync_dir("a/b")
        disk.crash(random.Random(seed))
        if not disk.exists("a/b"):
            assert not disk.exists("a/b/f")
        else:
            assert disk.exists("a/b/f")


def test_a_truncate_is_content_made_durable_by_fsync() -> None:
    disk = SimDisk()
    handle = disk.create("a")
    disk.fsync_dir("")
    handle.write(b"0123456789")
    handle.fsync()
    disk.truncate("a", 4)
    assert disk.read("a") == b"0123"
    handle.fsync()
    handle.write(b"ab")
    handle.fsync()
    disk.crash(random.Random(1))
    assert disk.read("a") == b"0123ab"


def test_handles_die_with_a_crash() -> None:
    disk = SimDisk()
    handle = disk.create("a")
    disk.crash(random.Random(0))
    with pytest.raises(FileClosed):
        handle.write(b"x")
    closed = disk.create("b")
    closed.close()
    with pytest.raises(FileClosed):
        closed.fsync()
    assert disk.statistics().crashes == 1


def test_bad_paths_and_missing_files_are_refused() -> None:
    disk = SimDisk()
    for bad in ("/abs", "a/../b", "a//b", "./a"):
        with pytest.raises(InvalidPath):
            disk.create(bad)
    with pytest.raises(FileNotFoundError):
        disk.read("missing")
    with pytest.raises(FileNotFoundError):
        disk.create("no/such/dir/file")
    disk.mkdir("d")
    with pytest.raises(IsADirectoryError):
        disk.read("d")
    assert disk.listdir("") == ["d"]


def test_damage_overwrites_durable_bytes() -> None:
    disk = SimDisk()
    handle = disk.create("a")
    disk.fsync_dir("")
    handle.write(b"abcdef")
    handle.fsync()
    disk.damage("a", 2, b"XY")
    disk.crash(random.Random(0))
    assert disk.read("a") == b"abXYef"


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        SimDiskConfig(sector_bytes=0)
    with pytest.raises(ConfigError):
        SimDiskConfig(tear_probability=1.5)


@settings(max_examples=200, deadline=None, database=None)
@given(
    steps=st.lists(st.one_of(st.integers(1, 100), st.none()), max_size=20),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_crash_keeps_the_synced_prefix_and_never_invents_length(
    steps: list[int | None], seed: int
) -> None:
    """Against a naive model of one file: after a crash the file starts with what
    the last fsync covered, is no longer than what was written, and every byte
    past the synced prefix is either what was written there, zero, or (only in
    the one torn write) garbage."""
    disk = SimDisk(SimDiskConfig(sector_bytes=8))
    handle = disk.create("f")
    disk.fsync_dir("")
    written = bytearray()
    synced = 0
    for position, step in enumerate(steps):
        if step is None:
            handle.fsync()
            synced = len(written)
        else:
            chunk = bytes([position % 200 + 1]) * step
            handle.write(chunk)
            written.extend(chunk)
    disk.crash(random.Random(seed))
    after = disk.read("f")
    assert synced <= len(after) <= len(written)
    assert after[:synced] == written[:synced]
