"""What both drivers share to carry out ``SaveSnapshot`` (see
``synod.core.effects``): the pending snapshot queued behind earlier persists, and
recovery of the newest usable snapshot beside a truncated write-ahead log."""

from __future__ import annotations

from dataclasses import dataclass

from synod.core.effects import SaveSnapshot, unframe_chunks
from synod.storage.errors import StorageCorruption
from synod.storage.snapshot import SnapshotStore

SNAPSHOT_DIRECTORY = "snap"


@dataclass(frozen=True, slots=True)
class PendingSnapshot:
    """A ``SaveSnapshot`` queued behind the Persists before it, with the WAL
    index the first record after them gets (everything below it is covered)."""

    position: int
    effect: SaveSnapshot


def recover_snapshot(store: SnapshotStore, first_index: int,
                     last_index: int) -> tuple[int, tuple[bytes, ...]] | None:
    """The newest snapshot that verifies and that a log holding records
    ``first_index..last_index`` reaches, as (position, chunks); None if there is
    none and the log is whole (starts at record 1). A damaged newest snapshot
    falls back to an older one, or to the whole log, only while the log still
    reaches back that far; otherwise ``StorageCorruption`` (covered records are
    gone)."""
    damaged: Exception | None = None
    for info in reversed(store.snapshots()):
        if info.index < first_index:
            break
        if info.index > last_index + 1:
            raise StorageCorruption(info.path, 0, f"snapshot covers records up to {info.index - 1} "
                                    f"but the log ends at {last_index}")
        try:
            return info.index, unframe_chunks(store.read(info))
        except (StorageCorruption, ValueError) as error:
            damaged = error
    if first_index > 1:
        raise StorageCorruption(SNAPSHOT_DIRECTORY, 0, f"the log starts at record {first_index} but no "
                                f"usable snapshot covers the records before it ({damaged})")
    return None
