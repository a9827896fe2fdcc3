"""Snapshots: streamed in and out in chunks, atomic under a crash at any point,
damage detected and reported with file and offset."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest

from synod.core.errors import ConfigError
from synod.storage import SimDisk, SimDiskConfig, SnapshotConfig, SnapshotStore, StorageCorruption
from synod.storage.files import FileSystem
from tests.storage.crashfs import CrashingFileSystem, PowerLoss
from tests.storage.helpers import append_raw, overwrite

SMALL = SnapshotConfig(chunk_bytes_max=100, keep_count=2)


def state(index: int, size: int = 1000) -> bytes:
    return bytes((index * 31 + i) % 256 for i in range(size))


def chunks_of(data: bytes, size: int = 77) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_snapshot_round_trips_in_bounded_chunks(fs: FileSystem) -> None:
    store = SnapshotStore(fs, "snap", SMALL)
    assert store.latest() is None
    info = store.write(7, chunks_of(state(7), 250))
    assert info.index == 7 and fs.exists(info.path)
    pieces = list(store.read(info))
    assert all(len(piece) <= SMALL.chunk_bytes_max for piece in pieces)
    assert b"".join(pieces) == state(7)
    assert store.latest() == info


def test_an_empty_snapshot_is_valid(fs: FileSystem) -> None:
    store = SnapshotStore(fs, "snap")
    info = store.write(0, [])
    assert list(store.read(info)) == []


def test_the_input_is_consumed_lazily() -> None:
    """State bigger than memory: the writer pulls one chunk at a time."""
    pulled = []

    def generate() -> Iterator[bytes]:
        for i in range(50):
            pulled.append(i)
            yield bytes([i]) * 10

    store = SnapshotStore(SimDisk(), "snap", SMALL)
    info = store.write(1, generate())
    assert pulled == list(range(50))
    assert b"".join(store.read(info)) == b"".join(bytes([i]) * 10 for i in range(50))


def test_retain_keeps_the_newest(fs: FileSystem) -> None:
    store = SnapshotStore(fs, "snap", SMALL)
    for index in (3, 9, 5, 12):
        store.write(index, [state(index, 10)])
    doomed = store.retain()
    assert [info.index for info in doomed] == [3, 5]
    assert [info.index for info in store.snapshots()] == [9, 12]
    assert [info.index for info in store.retain(1)] == [9]
    with pytest.raises(ValueError):
        store.retain(0)


@pytest.mark.parametrize(
    ("where", "reason"),
    [(0, "header"), (30, "chunk CRC"), (-5, "trailer")],
)
def test_a_damaged_snapshot_is_detected(fs: FileSystem, where: int, reason: str) -> None:
    store = SnapshotStore(fs, "snap", SMALL)
    info = store.write(4, chunks_of(state(4)))
    offset = where if where >= 0 else info.size_bytes + where
    original = fs.read_range(info.path, offset, 1)
    overwrite(fs, info.path, offset, bytes([original[0] ^ 0x40]))
    with pytest.raises(StorageCorruption, match=reason) as caught:
        store.latest()
    assert caught.value.path == info.path and info.path in str(caught.value)


def test_a_truncated_snapshot_is_detected(fs: FileSystem) -> None:
    store = SnapshotStore(fs, "snap", SMALL)
    info = store.write(4, chunks_of(state(4)))
    fs.truncate(info.path, info.size_bytes - 30)
    with pytest.raises(StorageCorruption):
        store.verify(info)
    fs.truncate(info.path, 20 + 2 * (8 + 77))  # right after the second chunk
    with pytest.raises(StorageCorruption, match="trailer"):
        store.verify(info)


def test_data_after_the_trailer_is_detected(fs: FileSystem) -> None:
    store = SnapshotStore(fs, "snap", SMALL)
    info = store.write(4, chunks_of(state(4)))
    append_raw(fs, info.path, b"extra")
    with pytest.raises(StorageCorruption, match="followed by data"):
        store.verify(info)


def test_leftover_temp_files_are_removed_on_open(fs: FileSystem) -> None:
    fs.mkdir("snap")
    fs.create("snap/snap-00000000000000000009.tmp").close()
    store = SnapshotStore(fs, "snap")
    assert fs.listdir("snap") == [] and store.snapshots() == []


def test_a_crash_at_any_point_of_a_write_leaves_old_or_new_never_partial() -> None:
    """Power fails after each file operation of writing snapshot 2 over an
    existing snapshot 1, with several crash outcomes each: afterwards snapshot 2
    is absent or complete, snapshot 1 is intact, and once ``write`` returned,
    snapshot 2 is always there."""
    disk_config = SimDiskConfig(sector_bytes=32, tear_probability=0.8)
    probe = CrashingFileSystem(SimDisk(disk_config), None)
    SnapshotStore(probe, "snap", SMALL).write(2, chunks_of(state(2)))
    outcomes = set()
    for point in range(probe.operations_done + 2):
        for seed in range(10):
            disk = SimDisk(disk_config)
            SnapshotStore(disk, "snap", SMALL).write(1, chunks_of(state(1)))
            fs = CrashingFileSystem(disk, point)
            returned = False
            with contextlib.suppress(PowerLoss):
                SnapshotStore(fs, "snap", SMALL).write(2, chunks_of(state(2)))
                returned = True
            disk.crash(random.Random(seed))
            store = SnapshotStore(disk, "snap", SMALL)
            found = {info.index: info for info in store.snapshots()}
            assert b"".join(store.read(found[1])) == state(1)
            latest = store.latest()
            assert latest is not None
            if 2 in found:
                assert latest.index == 2 and b"".join(store.read(found[2])) == state(2)
                outcomes.add("new")
            else:
                assert not returned, "write returned but the snapshot did not survive"
                outcomes.add("old")
            assert not [n for n in disk.listdir("snap") if n.endswith(".tmp")]
    assert outcomes == {"old", "new"}


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        SnapshotConfig(chunk_bytes_max=0)
    with pytest.raises(ConfigError):
        SnapshotConfig(keep_count=0)
