"""A segmented write-ahead log with a CRC per record and group commit.

Theory of operation
-------------------
The log is a directory of *segment* files, ``wal-<first index, 20 digits>.seg``,
each holding the records from its first index on. Record indexes start at 1 and
keep counting across segments and across ``truncate_prefix``.

A segment starts with a 20-byte header: the magic ``SYNODWAL``, its first index
(big-endian u64) and a CRC32 of those 16 bytes. Then come records, each a 9-byte
header followed by its payload::

    crc32 (u32) | length (u32) | kind (u8) | payload (length bytes)

The CRC covers ``length``, ``kind`` and the payload, so a torn or bit-flipped
length is caught as surely as a damaged payload. We use ``zlib.crc32`` (CRC-32,
IEEE polynomial): it is in the standard library and runs in C; it detects every
burst error up to 32 bits and all but 2^-32 of random damage, which is the job
here (torn writes, bad sectors), not defence against an adversary. CRC32C has
the same strength and faster hardware support, but needs a dependency.

``kind`` is ``DATA`` (1) for caller records or ``SEAL`` (2). A segment that is
full gets a SEAL record, whose payload is the index of the next segment's first
record, and is fsynced *before* the next segment is created. So on disk every
segment but the last is *sealed*: complete, fsynced, ending in a seal that names
the next segment. That is what lets recovery tell a torn tail from corruption:

* in the LAST segment, the first record that does not parse (short, over the
  length bound, unknown kind, CRC mismatch) starts a torn tail -- writes that
  were never fsynced, which a power loss may cut short, zero-fill, or keep a later
  sector of while losing an earlier one. Everything from there is dropped and the
  file truncated, so new appends follow valid data;
* in a SEALED segment the same failure is corruption of data once fsynced, and
  ``open`` raises ``StorageCorruption`` naming the file and the offset. So does a
  sealed segment without its seal, or a seal that disagrees with the next file.

Damage to fsynced records inside the last segment cannot be told from a torn tail
by this format; it is truncated like one. (Sealed segments are fully checked.)

Group commit: ``append`` only encodes into a memory buffer (bounded by
``buffer_bytes_max``) and returns the record's index. ``sync`` writes everything
buffered and makes it durable with one fsync of the active segment (plus one per
segment sealed in between, and one of the directory when a segment was created),
then advances ``durable_index``. Many appends, one fsync. ``sync`` is ``flush``
(write to the file system; seal and fsync full segments) followed by the final
fsync; a driver that models fsync latency may call the two apart. The log is not
thread-safe: one caller at a time (``GroupCommit`` in this package is how a driver
batches Persist effects onto it). If the file system raises during ``sync`` the
log refuses further use: after a failed fsync the state of the page cache is
unknown (PostgreSQL's "fsyncgate"), so the node must restart and recover.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

from synod.core.errors import ConfigError, invariant
from synod.core.faults import declare_mutant, mutant
from synod.storage.errors import RecordTooLarge, StorageCorruption, StorageError, StorageFull
from synod.storage.files import AppendFile, FileSystem, clean_path, join, parent_of

MUTANT_ACK_BEFORE_FSYNC = declare_mutant(
    "storage.ack_before_fsync",
    "WriteAheadLog.sync() advances durable_index without calling fsync",
)
MUTANT_SKIP_CRC = declare_mutant(
    "storage.skip_crc",
    "WriteAheadLog recovery accepts records without checking their CRC",
)

SEGMENT_MAGIC = b"SYNODWAL"
_SEGMENT_HEADER = struct.Struct(">8sQI")
_RECORD_HEADER = struct.Struct(">IIB")
_SEAL_PAYLOAD = struct.Struct(">Q")

SEGMENT_HEADER_BYTES = _SEGMENT_HEADER.size
RECORD_HEADER_BYTES = _RECORD_HEADER.size
SEAL_BYTES = RECORD_HEADER_BYTES + _SEAL_PAYLOAD.size

KIND_DATA = 1
KIND_SEAL = 2

_SEGMENT_NAME = re.compile(r"^wal-(\d{20})\.seg$")

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class WalConfig:
    """Bounds of a write-ahead log."""

    #: Largest segment file, in bytes. Sealed segments are the unit that
    #: ``truncate_prefix`` deletes, so smaller segments free space sooner after a
    #: snapshot; larger ones mean fewer files and fewer seal fsyncs. 64 MiB is
    #: what etcd uses. Must hold one record of ``record_bytes_max``.
    segment_bytes_max: int = 64 * MiB
    #: Largest record payload, in bytes. Equal to the codec's default frame
    #: maximum (16 MiB): a record is usually one encoded message.
    record_bytes_max: int = 16 * MiB
    #: Most bytes appended but not yet synced that the log holds in memory.
    #: ``append`` past it raises ``StorageFull``: sync first.
    buffer_bytes_max: int = 64 * MiB

    def __post_init__(self) -> None:
        if self.record_bytes_max < 1:
            raise ConfigError(f"WalConfig.record_bytes_max must be >= 1, got {self.record_bytes_max}")
        fits = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + self.record_bytes_max + SEAL_BYTES
        if self.segment_bytes_max < fits:
            raise ConfigError(
                f"WalConfig.segment_bytes_max ({self.segment_bytes_max}) must hold one record "
                f"of record_bytes_max ({self.record_bytes_max}): at least {fits}"
            )
        if self.buffer_bytes_max < fits:
            raise ConfigError(
                f"WalConfig.buffer_bytes_max ({self.buffer_bytes_max}) must hold one record "
                f"of record_bytes_max ({self.record_bytes_max})"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class WalStatistics:
    """A snapshot of a log's state and counters."""

    first_index: int
    last_index: int
    written_index: int
    durable_index: int
    segments: int
    buffered_bytes: int
    appends: int
    syncs: int
    fsyncs: int
    records_recovered: int
    torn_bytes_truncated: int


def segment_name(first_index: int) -> str:
    """The file name of the segment whose first record has ``first_index``."""
    return f"wal-{first_index:020d}.seg"


def encode_record(payload: bytes, kind: int = KIND_DATA) -> bytes:
    """One record as it sits on disk: header (crc, length, kind) + payload."""
    tail = struct.pack(">IB", len(payload), kind)
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return struct.pack(">I", crc) + tail + payload


def encode_segment_header(first_index: int) -> bytes:
    """The 20-byte header of a segment starting at ``first_index``."""
    body = struct.pack(">8sQ", SEGMENT_MAGIC, first_index)
    return body + struct.pack(">I", zlib.crc32(body))


@dataclass(slots=True)
class _Segment:
    """A segment: on disk, or planned by ``append`` and written by ``sync``."""

    first_index: int
    path: str
    #: Bytes of this segment on disk (0 for a planned one).
    disk_bytes: int
    #: Records in this segment, on disk and buffered.
    records: int
    #: Encoded bytes waiting for ``sync`` (a new segment's header included).
    buffer: bytearray
    on_disk: bool


@dataclass(slots=True)
class _Scan:
    """What recovery read from one segment."""

    records: list[bytes]
    #: Offset at which valid data ends (the file is cut here if it is the last).
    end: int
    #: The next index a seal names, or None if the segment is not sealed.
    sealed_next: int | None
    #: Why the data stopped before the end of the file, if it did.
    damage: str | None
    header_ok: bool


class WriteAheadLog:
    """A segmented write-ahead log (see the module comment). Build it with ``open``."""

    def __init__(
        self, fs: FileSystem, directory: str, config: WalConfig, segments: list[_Segment],
        active: AppendFile, *, records_recovered: int, torn_bytes_truncated: int,
    ) -> None:
        invariant(bool(segments) and segments[-1].on_disk, "a log has an active segment")
        self._fs = fs
        self._directory = directory
        self.config = config
        self._segments = segments
        self._active: AppendFile | None = active
        first = segments[0].first_index
        self._first_index = first
        self._last_index = first + sum(s.records for s in segments) - 1
        self._durable_index = self._last_index
        self._written_index = self._last_index
        self._directory_dirty = False
        self._failed = False
        self._appends = 0
        self._syncs = 0
        self._fsyncs = 0
        self._records_recovered = records_recovered
        self._torn_bytes_truncated = torn_bytes_truncated

    # -- opening and recovery --------------------------------------------------

    @classmethod
    def open(
        cls, fs: FileSystem, directory: str, config: WalConfig | None = None
    ) -> tuple[WriteAheadLog, list[bytes]]:
        """Open (or create) the log in ``directory`` and recover it.

        Returns the log and every record it holds, in index order, from
        ``first_index`` on. A torn tail of the last segment is cut off (and the
        cut made durable); damage anywhere else raises ``StorageCorruption``.
        Everything returned is durable when this returns.
        """
        config = config if config is not None else WalConfig()
        _make_directory(fs, clean_path(directory))
        found = sorted(
            (int(match.group(1)), name)
            for name in fs.listdir(directory)
            if (match := _SEGMENT_NAME.match(name))
        )
        if not found:
            active = _create_segment(fs, directory, 1)
            segment = _Segment(1, active.path, active.size, 0, bytearray(), on_disk=True)
            return cls(fs, directory, config, [segment], active,
                       records_recovered=0, torn_bytes_truncated=0), []
        segments: list[_Segment] = []
        records: list[bytes] = []
        expected_first: int | None = None
        for first_index, name in found[:-1]:
            path = join(directory, name)
            _check_follows(fs, segments, expected_first, first_index, name)
            data = fs.read(path)
            scan = _scan_segment(data, first_index, config)
            if scan.damage is not None:
                raise StorageCorruption(path, scan.end, scan.damage)
            if scan.sealed_next is None:
                raise StorageCorruption(path, scan.end, "sealed segment ends without its seal record")
            expected_first = scan.sealed_next
            segments.append(_Segment(first_index, path, len(data), len(scan.records),
                                     bytearray(), on_disk=True))
            records.extend(scan.records)
        first_index, name = found[-1]
        _check_follows(fs, segments, expected_first, first_index, name)
        active, tail_records, torn_bytes = _recover_last_segment(
            fs, directory, config, first_index, segments
        )
        records.extend(tail_records)
        fs.fsync_dir(directory)
        log = cls(fs, directory, config, segments, active,
                  records_recovered=len(records), torn_bytes_truncated=torn_bytes)
        log.check_invariants()
        return log, records

    # -- the log ----------------------------------------------------------------

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def first_index(self) -> int:
        """Index of the oldest record still in the log (``last_index + 1`` if none)."""
        return self._first_index

    @property
    def last_index(self) -> int:
        """Index of the newest record appended (0 if none ever was)."""
        return self._last_index

    @property
    def durable_index(self) -> int:
        """Index of the newest record known durable: every record up to it survives
        a crash."""
        return self._durable_index

    def _usable(self) -> None:
        if self._failed:
            raise StorageError(f"write-ahead log {self._directory} failed; reopen it")
        if self._active is None:
            raise StorageError(f"write-ahead log {self._directory} is closed")

    def buffered_bytes(self) -> int:
        """Bytes appended (or planned segment headers and seals) not yet written."""
        return sum(len(s.buffer) for s in self._segments)

    def append(self, record: bytes) -> int:
        """Buffer ``record`` and return its index. Not durable until ``sync``."""
        self._usable()
        if len(record) > self.config.record_bytes_max:
            raise RecordTooLarge(
                f"record of {len(record)} bytes is over record_bytes_max "
                f"({self.config.record_bytes_max})"
            )
        encoded = encode_record(record)
        if self.buffered_bytes() + len(encoded) + SEAL_BYTES + SEGMENT_HEADER_BYTES > (
            self.config.buffer_bytes_max
        ):
            raise StorageFull(
                f"write-ahead log buffer holds {self.buffered_bytes()} bytes; "
                f"buffer_bytes_max is {self.config.buffer_bytes_max}: sync first"
            )
        tail = self._segments[-1]
        size = tail.disk_bytes + len(tail.buffer)
        if tail.records > 0 and size + len(encoded) + SEAL_BYTES > self.config.segment_bytes_max:
            tail = self._roll()
        tail.buffer += encoded
        tail.records += 1
        self._last_index += 1
        self._appends += 1
        return self._last_index

    def _roll(self) -> _Segment:
        """Seal the tail segment (in the buffer) and plan the next one."""
        old = self._segments[-1]
        next_index = self._last_index + 1
        old.buffer += encode_record(_SEAL_PAYLOAD.pack(next_index), KIND_SEAL)
        path = join(self._directory, segment_name(next_index))
        new = _Segment(next_index, path, 0, 0, bytearray(encode_segment_header(next_index)),
                       on_disk=False)
        self._segments.append(new)
        return new

    @property
    def written_index(self) -> int:
        """Index of the newest record handed to the file system (``flush``), durable
        or not."""
        return self._written_index

    def flush(self) -> int:
        """Write everything appended to the file system, without the final fsync;
        return ``written_index``. Not durable: ``sync`` finishes the job.

        A segment that fills up is sealed, and fsynced here, before its successor
        is created: on disk a segment is never followed by another until its seal
        is durable, which is what lets recovery call damage in it corruption.
        Drivers that model fsync latency call ``flush`` when a batch starts and
        ``sync`` when its fsync completes; nothing else may defer these fsyncs.
        """
        self._usable()
        if not self.buffered_bytes():
            return self._written_index
        try:
            for position, segment in enumerate(self._segments):
                if not segment.buffer:
                    continue
                handle = self._active
                assert handle is not None
                if not segment.on_disk:
                    handle.close()
                    handle = self._fs.create(segment.path)
                    self._active = handle
                    segment.on_disk = True
                    self._directory_dirty = True
                handle.write(bytes(segment.buffer))
                segment.disk_bytes += len(segment.buffer)
                segment.buffer.clear()
                sealed = position < len(self._segments) - 1
                if sealed and not mutant(MUTANT_ACK_BEFORE_FSYNC):
                    handle.fsync()
                    self._fsyncs += 1
        except BaseException:
            self._failed = True
            raise
        self._written_index = self._last_index
        return self._written_index

    def sync(self) -> int:
        """Write everything appended and make it durable; return ``durable_index``.

        One fsync of the active segment covers every append since the last sync
        (group commit); a segment created since is made durable by one fsync of
        the directory. See ``flush`` for segments sealed in between.
        """
        self.flush()
        if self._durable_index == self._written_index and not self._directory_dirty:
            return self._durable_index
        try:
            if not mutant(MUTANT_ACK_BEFORE_FSYNC):
                assert self._active is not None
                self._active.fsync()
                self._fsyncs += 1
                if self._directory_dirty:
                    self._fs.fsync_dir(self._directory)
            self._directory_dirty = False
        except BaseException:
            self._failed = True
            raise
        self._durable_index = self._written_index
        self._syncs += 1
        return self._durable_index

    def truncate_prefix(self, keep_from: int) -> int:
        """Delete whole sealed segments holding only records below ``keep_from``
        (a snapshot covers them). Records at and above ``keep_from`` stay; some
        below it may stay too. Returns the new ``first_index``."""
        self._usable()
        removed = 0
        while len(self._segments) >= 2:
            oldest, following = self._segments[0], self._segments[1]
            if not (following.on_disk and following.first_index <= keep_from):
                break
            invariant(oldest.on_disk and not oldest.buffer, "a sealed segment is on disk")
            # Oldest first, so a crash that undoes some removals leaves a contiguous log.
            self._fs.remove(oldest.path)
            self._segments.pop(0)
            removed += 1
        if removed:
            self._fs.fsync_dir(self._directory)
            self._first_index = self._segments[0].first_index
        return self._first_index

    def close(self) -> None:
        """Close the log. Does not sync: call ``sync`` first to keep buffered records."""
        if self._active is not None:
            self._active.close()
            self._active = None

    def statistics(self) -> WalStatistics:
        return WalStatistics(
            first_index=self._first_index,
            last_index=self._last_index,
            written_index=self._written_index,
            durable_index=self._durable_index,
            segments=len(self._segments),
            buffered_bytes=self.buffered_bytes(),
            appends=self._appends,
            syncs=self._syncs,
            fsyncs=self._fsyncs,
            records_recovered=self._records_recovered,
            torn_bytes_truncated=self._torn_bytes_truncated,
        )

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` if the log's bookkeeping is inconsistent."""
        invariant(bool(self._segments), "the log has at least one segment")
        invariant(0 <= self._durable_index <= self._written_index <= self._last_index,
                  "durable <= written <= last")
        invariant(self._first_index == self._segments[0].first_index, "first index is the oldest segment's")
        expected = self._first_index
        for segment in self._segments:
            invariant(segment.first_index == expected, "segments are contiguous")
            expected += segment.records
        invariant(expected == self._last_index + 1, "segment record counts add up to last_index")
        invariant(self._segments[0].on_disk, "the oldest segment is on disk")
        invariant(self.buffered_bytes() <= self.config.buffer_bytes_max, "buffer within its bound")


def _make_directory(fs: FileSystem, directory: str) -> None:
    """Create ``directory`` (and parents) durably: each new name is fsynced in its parent."""
    missing: list[str] = []
    path = directory
    while path and not fs.exists(path):
        missing.append(path)
        path = parent_of(path)
    if not missing:
        return
    fs.mkdir(directory)
    for created in reversed(missing):
        fs.fsync_dir(parent_of(created))


def _create_segment(fs: FileSystem, directory: str, first_index: int) -> AppendFile:
    """Create an empty segment durably (header fsynced, name fsynced)."""
    handle = fs.create(join(directory, segment_name(first_index)))
    handle.write(encode_segment_header(first_index))
    handle.fsync()
    fs.fsync_dir(directory)
    return handle


def _check_follows(fs: FileSystem, sealed: list[_Segment], expected_first: int | None,
                   first_index: int, name: str) -> None:
    """A segment must start where the previous segment's seal says."""
    if expected_first is not None and expected_first != first_index:
        previous = sealed[-1].path
        raise StorageCorruption(
            previous, fs.size(previous) - SEAL_BYTES,
            f"seal names next index {expected_first} but the next segment "
            f"{name} starts at {first_index}",
        )


def _recover_last_segment(
    fs: FileSystem, directory: str, config: WalConfig, first_index: int, segments: list[_Segment]
) -> tuple[AppendFile, list[bytes], int]:
    """Recover the last segment, where damage is a torn write that was never
    fsynced: cut it off durably. Appends the active segment (or two, if this one
    turned out sealed) to ``segments``; returns the open active segment, the
    records read, and the bytes cut."""
    path = join(directory, segment_name(first_index))
    data = fs.read(path)
    scan = _scan_segment(data, first_index, config)
    torn_bytes = 0
    if not scan.header_ok:
        torn_bytes = len(data)
        active = _create_segment(fs, directory, first_index)
    else:
        if scan.end < len(data):
            torn_bytes = len(data) - scan.end
            fs.truncate(path, scan.end)
        active = fs.open_append(path)
        invariant(active.size == scan.end, "the active segment ends at valid data")
        # Durable now, even if a restart (no power loss) read unsynced data.
        active.fsync()
    segments.append(_Segment(first_index, path, active.size, len(scan.records),
                             bytearray(), on_disk=True))
    if scan.sealed_next is not None:
        # Crashed between sealing this segment and creating the next.
        active.close()
        active = _create_segment(fs, directory, scan.sealed_next)
        segments.append(_Segment(scan.sealed_next, active.path, active.size, 0,
                                 bytearray(), on_disk=True))
    return active, scan.records, torn_bytes


def _scan_segment(data: bytes, first_index: int, config: WalConfig) -> _Scan:
    """Parse one segment's bytes; stop at the first thing that does not parse."""
    records: list[bytes] = []
    if len(data) < SEGMENT_HEADER_BYTES:
        return _Scan(records, 0, None, "short segment header", header_ok=False)
    magic, header_index, header_crc = _SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC or header_crc != zlib.crc32(data[: SEGMENT_HEADER_BYTES - 4]):
        return _Scan(records, 0, None, "bad segment header", header_ok=False)
    if header_index != first_index:
        return _Scan(records, 0, None,
                     f"segment header says first index {header_index}, name says {first_index}",
                     header_ok=False)
    check_crc = not mutant(MUTANT_SKIP_CRC)
    offset = SEGMENT_HEADER_BYTES
    while offset < len(data):
        if len(data) - offset < RECORD_HEADER_BYTES:
            return _Scan(records, offset, None, "short record header", header_ok=True)
        crc, length, kind = _RECORD_HEADER.unpack_from(data, offset)
        if kind not in (KIND_DATA, KIND_SEAL):
            return _Scan(records, offset, None, f"unknown record kind {kind}", header_ok=True)
        if length > config.record_bytes_max:
            return _Scan(records, offset, None, f"record length {length} over the bound",
                         header_ok=True)
        end = offset + RECORD_HEADER_BYTES + length
        if end > len(data):
            return _Scan(records, offset, None, "record runs past the end of the file",
                         header_ok=True)
        payload = data[offset + RECORD_HEADER_BYTES : end]
        if check_crc and crc != zlib.crc32(payload, zlib.crc32(data[offset + 4 : offset + 9])):
            return _Scan(records, offset, None, "record CRC mismatch", header_ok=True)
        if kind == KIND_SEAL:
            next_index = first_index + len(records)
            if length != _SEAL_PAYLOAD.size or _SEAL_PAYLOAD.unpack(payload)[0] != next_index:
                return _Scan(records, offset, None, "seal record does not match the segment",
                             header_ok=True)
            if end != len(data):
                return _Scan(records, end, next_index, "data after the seal record",
                             header_ok=True)
            return _Scan(records, end, next_index, None, header_ok=True)
        records.append(payload)
        offset = end
    return _Scan(records, offset, None, None, header_ok=True)
