"""SaveSnapshot in the simulator: the WAL is truncated, and recovery is right
after a crash at every point around a snapshot."""

from __future__ import annotations

import random

import pytest

from synod.core.effects import Recovered, SaveSnapshot, frame_chunks
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.kv import KeyValue
from synod.paxos.replica import PaxosReplica, replica_factory
from synod.paxos.workload import KvClientFactory, WorkloadConfig
from synod.sim import SimConfig, Simulation
from synod.sim.disk import SNAPSHOT_DIRECTORY, NodeDisk, PendingSnapshot
from synod.storage import SnapshotStore, StorageCorruption, WalConfig

SMALL_WAL = WalConfig(segment_bytes_max=8192, record_bytes_max=4096, buffer_bytes_max=1 << 20)


def _rec(i: int) -> bytes:
    return f"record-{i:04d}".encode() * 20


def _disk() -> NodeDisk:
    return NodeDisk("n1", wal_config=SMALL_WAL)


def _persist(disk: NodeDisk, records: list[bytes]) -> None:
    disk.submit(tuple(records), ())
    batch = disk.start_batch()
    assert batch is not None
    disk.finish_batch(batch)


def test_snapshot_covers_earlier_records_and_truncates_the_log() -> None:
    disk = _disk()
    assert disk.open() == Recovered()
    for round_ in range(20):
        _persist(disk, [_rec(round_ * 10 + i) for i in range(10)])
        disk.submit_snapshot(SaveSnapshot(chunks=(b"state", str(round_).encode())))
        disk.submit((_rec(10_000 + round_),), ())
        batch = disk.start_batch()
        assert batch is not None
        disk.finish_batch(batch)
        # Bounded: what the last snapshot covers goes, up to segment granularity.
        assert disk.log_records() <= 60
    assert disk.snapshots_saved == 20
    disk.crash(random.Random(1))
    recovered = disk.open()
    assert recovered.snapshot == (b"state", b"19")
    assert recovered.records == (_rec(10_019),)


def test_snapshot_waits_for_the_persists_before_it() -> None:
    disk = _disk()
    disk.open()
    disk.submit((_rec(1),), ())
    disk.submit_snapshot(SaveSnapshot(chunks=(b"s",)))
    # Crash before the batch holding both is durable: neither survives.
    assert disk.start_batch() is not None
    disk.crash(random.Random(2))
    recovered = disk.open()
    assert recovered.snapshot is None
    assert recovered.records in ((), (_rec(1),))


@pytest.mark.parametrize("seed", range(8))
def test_crash_between_writing_the_snapshot_and_truncating(seed: int) -> None:
    disk = _disk()
    disk.open()
    for i in range(50):
        _persist(disk, [_rec(i)])
    # Carry out only the first half of a snapshot: the file, not the truncation.
    store_position = 51
    SnapshotStore(disk.fs, SNAPSHOT_DIRECTORY).write(store_position, frame_chunks((b"a", b"")))
    disk.crash(random.Random(seed))
    recovered = disk.open()
    assert recovered.snapshot == (b"a", b"")
    assert recovered.records == ()
    _persist(disk, [_rec(99)])
    disk.crash(random.Random(seed))
    assert disk.open().records == (_rec(99),)


def test_damaged_newest_snapshot_falls_back_while_the_log_reaches() -> None:
    disk = _disk()
    disk.open()
    _persist(disk, [_rec(0)])
    disk.submit_snapshot(SaveSnapshot(chunks=(b"old",)))
    _persist(disk, [_rec(1)])
    # Both snapshots fit in the first segment: nothing truncated.
    disk.submit_snapshot(SaveSnapshot(chunks=(b"new",)))
    _persist(disk, [_rec(2)])
    newest = sorted(n for n in disk.fs.listdir("snap") if n.endswith(".snap"))[-1]
    data = bytearray(disk.fs.read(f"snap/{newest}"))
    data[-3] ^= 0xFF
    handle = disk.fs.create(f"snap/{newest}")
    handle.write(bytes(data))
    handle.fsync()
    handle.close()
    disk.crash(random.Random(3))
    recovered = disk.open()
    assert recovered.snapshot == (b"old",)
    assert recovered.records == (_rec(1), _rec(2))


def test_damaged_snapshot_with_a_truncated_log_is_an_error() -> None:
    disk = _disk()
    disk.open()
    for i in range(60):
        _persist(disk, [_rec(i)])
    disk.submit_snapshot(SaveSnapshot(chunks=(b"only",)))
    _persist(disk, [_rec(60)])
    disk.crash(random.Random(4))
    disk.open()
    disk.crash(random.Random(4))
    # The log was truncated, so remove every snapshot: nothing covers its start.
    for name in disk.fs.listdir("snap"):
        disk.fs.remove(f"snap/{name}")
    with pytest.raises(StorageCorruption):
        disk.open()


def test_pending_snapshot_position_counts_queued_records() -> None:
    disk = _disk()
    disk.open()
    disk.submit((_rec(0), _rec(1)), ())
    disk.submit_snapshot(SaveSnapshot(chunks=(b"x",)))
    batch = disk.start_batch()
    assert batch is not None
    tokens = [t for t in batch.tokens if isinstance(t, PendingSnapshot)]
    assert [t.position for t in tokens] == [3]


# ---------------------------------------------------------------- Paxos replicas


def _paxos_sim(seed: int, config: SimConfig) -> tuple[Simulation, tuple[NodeId, ...]]:
    replicas = (NodeId("n1"), NodeId("n2"), NodeId("n3"))
    paxos = PaxosConfig.sim()
    simulation = Simulation(seed, config)
    factory = replica_factory(replicas, KeyValue, paxos)
    for node in replicas:
        simulation.add_node(node, factory)
        simulation.disk(node).wal_config = SMALL_WAL
    workload = WorkloadConfig(keys=5, op_interval_ms=2.0, stop_ms=config.chaos_ms + config.heal_ms * 0.6)
    for name in ("c1", "c2"):
        simulation.add_node(name, KvClientFactory(replicas=replicas, config=workload), fault_prone=False)
    return simulation, replicas


def test_replica_wal_stays_bounded_in_the_simulator() -> None:
    config = SimConfig(chaos_ms=0.0, heal_ms=10_000.0, loss_probability=0.0)
    simulation, replicas = _paxos_sim(11, config)
    simulation.start()
    peak = dict.fromkeys(replicas, 0)
    for _ in range(100):
        simulation.run_for(100.0)
        for node in replicas:
            peak[node] = max(peak[node], simulation.disk(node).log_records())
    for node in replicas:
        disk = simulation.disk(node)
        assert disk.snapshots_saved >= 10
        # 600+ records appended per node; the log holds a bounded window of them
        # (what the last snapshot does not cover, rounded up to whole segments).
        assert disk.records_ever() > 600 > 2 * peak[node]


@pytest.mark.parametrize("seed", range(4))
def test_replicas_recover_from_crashes_around_snapshots(seed: int) -> None:
    config = SimConfig(chaos_ms=2000.0, heal_ms=2000.0, crashed_nodes_max=1)
    simulation, replicas = _paxos_sim(100 + seed, config)
    simulation.run_chaos_then_heal()
    stats = simulation.statistics()
    assert stats.crashes > 0 and stats.snapshots > 0
    cores = [simulation.core(n) for n in replicas]
    digests = {c.digest() for c in cores if isinstance(c, PaxosReplica)}
    indexes = {c.chosen_index for c in cores if isinstance(c, PaxosReplica)}
    assert len(digests) == 1 and len(indexes) == 1
