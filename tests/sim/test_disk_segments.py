"""Regression: a crash while a batch that seals a segment waits for its fsync must
not look like corruption of the sealed segment (it once did: the simulator held
back the seal's fsync, which the log needs before it creates the next segment)."""

from __future__ import annotations

import random

from synod.sim.disk import NodeDisk
from synod.storage import WalConfig


def test_crash_mid_batch_across_segment_boundaries_recovers_a_prefix() -> None:
    for seed in range(120):
        rng = random.Random(f"segments/{seed}")
        disk = NodeDisk("n1", wal_config=WalConfig(segment_bytes_max=400, record_bytes_max=200))
        disk.open()
        for step in range(rng.randrange(5, 40)):
            disk.submit(tuple(bytes([step % 251]) * rng.randrange(1, 120) for _ in range(rng.randrange(1, 4))), ())
            batch = disk.start_batch()
            assert batch is not None
            if rng.random() < 0.1:
                break  # crash while this batch's fsync is in flight
            disk.finish_batch(batch)
        disk.crash(rng)
        disk.open()  # raises StorageViolation / StorageCorruption on a false verdict
