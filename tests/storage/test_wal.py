"""The write-ahead log: indexes, group commit, segments, and recovery that cuts a
torn tail and refuses a corrupt middle. Every test runs on SimDisk and on real
files."""

from __future__ import annotations

import pytest

from synod.core.errors import ConfigError
from synod.storage import (
    RecordTooLarge,
    SimDisk,
    StorageCorruption,
    StorageError,
    StorageFull,
    WalConfig,
    WriteAheadLog,
)
from synod.storage.files import FileSystem
from synod.storage.wal import (
    RECORD_HEADER_BYTES,
    SEAL_BYTES,
    SEGMENT_HEADER_BYTES,
    encode_record,
    segment_name,
)
from tests.storage.crashfs import CrashingFileSystem, PowerLoss
from tests.storage.helpers import append_raw, overwrite

SMALL = WalConfig(segment_bytes_max=512, record_bytes_max=200, buffer_bytes_max=64 * 1024)


def record(i: int, size: int = 40) -> bytes:
    return f"record-{i:05d}-".encode().ljust(size, b".")


def segment_files(fs: FileSystem) -> list[str]:
    return [n for n in fs.listdir("wal") if n.endswith(".seg")]


def test_appends_get_consecutive_indexes_and_survive_a_reopen(fs: FileSystem) -> None:
    log, recovered = WriteAheadLog.open(fs, "wal")
    assert recovered == [] and (log.first_index, log.last_index, log.durable_index) == (1, 0, 0)
    assert [log.append(record(i)) for i in range(3)] == [1, 2, 3]
    assert log.durable_index == 0
    assert log.sync() == 3 == log.durable_index
    log.close()
    log, recovered = WriteAheadLog.open(fs, "wal")
    assert recovered == [record(i) for i in range(3)]
    assert (log.first_index, log.last_index, log.durable_index) == (1, 3, 3)
    assert log.append(b"") == 4
    log.sync()
    log.close()
    assert WriteAheadLog.open(fs, "wal")[1][-1] == b""


def test_group_commit_many_appends_one_fsync(fs: FileSystem) -> None:
    log, _ = WriteAheadLog.open(fs, "wal")
    before = fs.statistics().fsyncs
    for i in range(100):
        log.append(record(i))
    log.sync()
    assert fs.statistics().fsyncs - before == 1
    assert log.sync() == 100  # nothing new: no fsync
    assert fs.statistics().fsyncs - before == 1
    stats = log.statistics()
    assert (stats.appends, stats.syncs, stats.fsyncs) == (100, 1, 1)


def test_segments_roll_at_their_bound_and_indexes_keep_counting(fs: FileSystem) -> None:
    log, _ = WriteAheadLog.open(fs, "wal", SMALL)
    for i in range(40):
        log.append(record(i))
    log.sync()
    names = segment_files(fs)
    assert len(names) > 3 and names[0] == segment_name(1)
    for name in names:
        assert fs.size(f"wal/{name}") <= SMALL.segment_bytes_max
    log.check_invariants()
    log.close()
    log, recovered = WriteAheadLog.open(fs, "wal", SMALL)
    assert recovered == [record(i) for i in range(40)]
    assert log.append(record(40)) == 41


def test_truncate_prefix_drops_whole_sealed_segments_only(fs: FileSystem) -> None:
    log, _ = WriteAheadLog.open(fs, "wal", SMALL)
    for i in range(40):
        log.append(record(i))
    log.sync()
    segments_before = len(segment_files(fs))
    first = log.truncate_prefix(25)
    assert 1 < first <= 25
    assert len(segment_files(fs)) < segments_before
    assert log.truncate_prefix(10_000) == log.statistics().first_index  # keeps the active one
    assert len(segment_files(fs)) >= 1
    first = log.first_index
    assert log.append(record(40)) == 41
    log.sync()
    log.close()
    log, recovered = WriteAheadLog.open(fs, "wal", SMALL)
    assert log.first_index == first
    assert recovered == [record(i - 1) for i in range(first, 42)]


def _tail_path(fs: FileSystem) -> str:
    return f"wal/{segment_files(fs)[-1]}"


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(encode_record(b"never synced")[:5], id="short-header"),
        pytest.param(encode_record(b"never synced" * 4)[:30], id="short-payload"),
        pytest.param(bytes(700), id="zero-filled"),
        pytest.param(b"\xff" * 64, id="garbage"),
    ],
)
def test_a_torn_tail_of_the_last_segment_is_cut_off(fs: FileSystem, tail: bytes) -> None:
    log, _ = WriteAheadLog.open(fs, "wal")
    for i in range(5):
        log.append(record(i))
    log.sync()
    log.close()
    path = _tail_path(fs)
    valid_bytes = fs.size(path)
    append_raw(fs, path, tail)
    log, recovered = WriteAheadLog.open(fs, "wal")
    assert recovered == [record(i) for i in range(5)]
    assert fs.size(path) == valid_bytes  # truncated: new appends follow valid data
    assert log.statistics().torn_bytes_truncated == len(tail)
    assert log.append(record(5)) == 6
    log.sync()
    log.close()
    assert WriteAheadLog.open(fs, "wal")[1] == [record(i) for i in range(6)]


def test_a_later_sector_kept_and_an_earlier_lost_drops_both(fs: FileSystem) -> None:
    """A power loss kept the third record of an unsynced batch but zero-filled the
    second: recovery keeps the prefix before the hole, never the record after it."""
    log, _ = WriteAheadLog.open(fs, "wal")
    log.append(record(0))
    log.sync()
    log.close()
    path = _tail_path(fs)
    batch = [encode_record(record(i, 100)) for i in (1, 2, 3)]
    batch[1] = bytes(len(batch[1]))
    append_raw(fs, path, b"".join(batch))
    log, recovered = WriteAheadLog.open(fs, "wal")
    assert recovered == [record(0), record(1, 100)]
    assert log.last_index == 2


def test_a_flipped_length_is_caught_by_the_crc(fs: FileSystem) -> None:
    log, _ = WriteAheadLog.open(fs, "wal")
    log.append(record(0))
    log.append(record(1, 60))
    log.sync()
    log.close()
    path = _tail_path(fs)
    second = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + len(record(0))
    # Shorten the second record's length field by 20: it still parses, but the
    # CRC (which covers the header) no longer matches.
    overwrite(fs, path, second + 4, (60 - 20).to_bytes(4, "big"))
    _, recovered = WriteAheadLog.open(fs, "wal")
    assert recovered == [record(0)]


def _sealed_log(fs: FileSystem) -> list[str]:
    log, _ = WriteAheadLog.open(fs, "wal", SMALL)
    for i in range(30):
        log.append(record(i))
    log.sync()
    log.close()
    names = segment_files(fs)
    assert len(names) >= 3
    return names


def test_corruption_in_a_sealed_segment_names_file_and_offset(fs: FileSystem) -> None:
    names = _sealed_log(fs)
    path = f"wal/{names[0]}"
    offset = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + len(record(0))  # second record
    overwrite(fs, path, offset + RECORD_HEADER_BYTES + 3, b"X")
    with pytest.raises(StorageCorruption) as caught:
        WriteAheadLog.open(fs, "wal", SMALL)
    assert caught.value.path == path and caught.value.offset == offset
    assert path in str(caught.value) and f"offset {offset}" in str(caught.value)
    assert "CRC" in caught.value.reason


def test_a_sealed_segment_that_lost_its_end_is_corruption(fs: FileSystem) -> None:
    names = _sealed_log(fs)
    path = f"wal/{names[1]}"
    fs.truncate(path, fs.size(path) - SEAL_BYTES)
    with pytest.raises(StorageCorruption, match="without its seal"):
        WriteAheadLog.open(fs, "wal", SMALL)


def test_a_missing_middle_segment_is_corruption(fs: FileSystem) -> None:
    names = _sealed_log(fs)
    fs.remove(f"wal/{names[1]}")
    with pytest.raises(StorageCorruption, match="seal names next index"):
        WriteAheadLog.open(fs, "wal", SMALL)


def test_a_damaged_sealed_segment_header_is_corruption(fs: FileSystem) -> None:
    names = _sealed_log(fs)
    overwrite(fs, f"wal/{names[0]}", 0, b"NOTAWAL!")
    with pytest.raises(StorageCorruption) as caught:
        WriteAheadLog.open(fs, "wal", SMALL)
    assert caught.value.offset == 0


def test_a_crash_after_sealing_before_the_next_segment_starts_a_new_one(fs: FileSystem) -> None:
    names = _sealed_log(fs)
    log, recovered = WriteAheadLog.open(fs, "wal", SMALL)
    last = log.last_index
    log.close()
    # The newest segment's name did not survive: the log ends with a sealed segment.
    fs.remove(f"wal/{names[-1]}")
    log, recovered = WriteAheadLog.open(fs, "wal", SMALL)
    lost = len(recovered)
    assert recovered == [record(i) for i in range(lost)] and lost <= last
    assert segment_files(fs)[-1] == segment_name(lost + 1)
    assert log.append(b"next") == lost + 1
    log.sync()
    log.close()
    assert WriteAheadLog.open(fs, "wal", SMALL)[1][-1] == b"next"


def test_a_torn_header_of_the_last_segment_is_rewritten(fs: FileSystem) -> None:
    log, _ = WriteAheadLog.open(fs, "wal")
    log.close()
    path = _tail_path(fs)
    fs.truncate(path, 7)
    log, recovered = WriteAheadLog.open(fs, "wal")
    assert recovered == [] and fs.size(path) == SEGMENT_HEADER_BYTES
    assert log.append(b"a") == 1


def test_a_record_over_the_bound_is_refused(fs: FileSystem) -> None:
    log, _ = WriteAheadLog.open(fs, "wal", SMALL)
    log.append(bytes(200))
    with pytest.raises(RecordTooLarge):
        log.append(bytes(201))
    assert log.last_index == 1


def test_the_buffer_is_bounded(fs: FileSystem) -> None:
    config = WalConfig(segment_bytes_max=4096, record_bytes_max=1000, buffer_bytes_max=1500)
    log, _ = WriteAheadLog.open(fs, "wal", config)
    log.append(bytes(900))
    with pytest.raises(StorageFull):
        log.append(bytes(1000))
    log.sync()
    log.append(bytes(1000))


def test_a_closed_log_refuses_use(fs: FileSystem) -> None:
    log, _ = WriteAheadLog.open(fs, "wal")
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.append(b"x")


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="segment_bytes_max"):
        WalConfig(segment_bytes_max=100, record_bytes_max=100)
    with pytest.raises(ConfigError, match="buffer_bytes_max"):
        WalConfig(segment_bytes_max=1000, record_bytes_max=100, buffer_bytes_max=140)
    with pytest.raises(ConfigError):
        WalConfig(record_bytes_max=0)


def test_flush_writes_without_making_durable_and_sync_finishes(fs: FileSystem) -> None:
    log, _ = WriteAheadLog.open(fs, "wal", SMALL)
    before = fs.statistics().fsyncs
    for i in range(3):
        log.append(record(i))
    assert log.flush() == 3 == log.written_index
    assert log.durable_index == 0 and fs.statistics().fsyncs == before
    assert log.statistics().buffered_bytes == 0
    assert log.sync() == 3 and fs.statistics().fsyncs == before + 1
    # Filling segments during a flush seals and fsyncs each full one at once.
    for i in range(3, 40):
        log.append(record(i))
    log.flush()
    sealed = len(segment_files(fs)) - 1  # every segment but the active one
    assert sealed >= 2 and fs.statistics().fsyncs == before + 1 + sealed
    assert log.durable_index == 3
    log.sync()
    assert log.durable_index == 40
    log.check_invariants()


def test_a_failed_fsync_makes_the_log_refuse_further_use() -> None:
    """After an fsync error the page cache state is unknown (fsyncgate): the log
    must not retry and pretend; the node restarts and recovers."""
    disk = SimDisk()
    fs = CrashingFileSystem(disk, None)
    log, _ = WriteAheadLog.open(fs, "wal")
    log.append(b"a")
    fs.operations_left = 1  # the write succeeds, the fsync fails
    with pytest.raises(PowerLoss):
        log.sync()
    assert log.durable_index == 0
    with pytest.raises(StorageError, match="failed"):
        log.append(b"b")
    with pytest.raises(StorageError, match="failed"):
        log.sync()
