"""Durability: a segmented write-ahead log, atomic snapshots, group commit, and
one small file interface with a real and a simulated implementation.

Cores never touch storage; drivers do. ``synod.storage.realfs`` is the only
module here that does I/O (``os``); everything else runs unchanged on a
``SimDisk`` inside the simulator.
"""

from synod.storage.errors import (
    FileClosed,
    InvalidPath,
    RecordTooLarge,
    StorageCorruption,
    StorageError,
    StorageFull,
)
from synod.storage.files import AppendFile, FileSystem, FileSystemStatistics
from synod.storage.group_commit import (
    CommitBatch,
    GroupCommit,
    GroupCommitConfig,
    GroupCommitStatistics,
)
from synod.storage.simdisk import SimDisk, SimDiskConfig
from synod.storage.snapshot import SnapshotConfig, SnapshotInfo, SnapshotStore
from synod.storage.wal import (
    MUTANT_ACK_BEFORE_FSYNC,
    MUTANT_SKIP_CRC,
    WalConfig,
    WalStatistics,
    WriteAheadLog,
)

__all__ = [
    "MUTANT_ACK_BEFORE_FSYNC",
    "MUTANT_SKIP_CRC",
    "AppendFile",
    "CommitBatch",
    "FileClosed",
    "FileSystem",
    "FileSystemStatistics",
    "GroupCommit",
    "GroupCommitConfig",
    "GroupCommitStatistics",
    "InvalidPath",
    "RecordTooLarge",
    "SimDisk",
    "SimDiskConfig",
    "SnapshotConfig",
    "SnapshotInfo",
    "SnapshotStore",
    "StorageCorruption",
    "StorageError",
    "StorageFull",
    "WalConfig",
    "WalStatistics",
    "WriteAheadLog",
]
