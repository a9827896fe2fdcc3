"""Persist, group commit, crash and restart: the simulator's disk model."""

from __future__ import annotations

import random

import pytest

from synod.core import Persist, Send, SetTimer
from synod.core.faults import enable_mutant
from synod.core.ids import NodeId
from synod.sim import Crash, NodeDisk, SimConfig, Simulation, SimulationFailure, StorageViolation
from synod.storage import SimDiskConfig
from tests.sim.cores import Note, ScriptCore, script

FSYNC = SimConfig.calm().replace(fsync_ms_min=4.0, fsync_ms_max=4.0)


def core(sim: Simulation, node: str) -> ScriptCore:
    found = sim.core(node)
    assert isinstance(found, ScriptCore)
    return found


def persister(count: int, every_ms: float = 1.0) -> object:
    """Persist record i at (i + 1) * every_ms, then tell node "w" Note(i)."""

    def on_timer(c: ScriptCore, now: float, key: str) -> list[object]:
        n = int(key)
        effects: list[object] = [Persist(records=(f"r{n}".encode(),), then=(Send(to=NodeId("w"), message=Note(number=n)),))]
        if n + 1 < count:
            effects.append(SetTimer(key=str(n + 1), delay_ms=every_ms))
        return effects

    return script(on_start=lambda c, now, r: [SetTimer(key="0", delay_ms=every_ms)] if count and not r.records else [], on_timer=on_timer)


def build(count: int, config: SimConfig = FSYNC, every_ms: float = 1.0, seed: int = 5) -> Simulation:
    sim = Simulation(seed, config.replace(latency_ms_base=0.5, latency_ms_tail_mean=0.0))
    sim.add_node("p", persister(count, every_ms))  # type: ignore[arg-type]
    sim.add_node("w", script())
    return sim


def acknowledged(sim: Simulation) -> list[tuple[float, int]]:
    return [(s.now_ms, s.detail[1].number) for s in core(sim, "w").seen if s.kind == "message"]  # type: ignore[index]


def test_then_effects_wait_for_the_fsync_and_keep_their_order() -> None:
    sim = build(1)
    sim.start()
    sim.run_until(100.0)
    # Persist at 1 ms, fsync done at 5 ms, Note arrives 0.5 ms later.
    assert acknowledged(sim) == [(5.5, 0)]


def test_group_commit_batches_persists_into_fewer_fsyncs() -> None:
    sim = build(40, every_ms=0.5)
    sim.start()
    sim.run_until(500.0)
    got = acknowledged(sim)
    assert [n for _, n in got] == list(range(40))  # durable order = submission order
    stats = sim.statistics()
    assert stats.persists == 40
    assert stats.fsyncs < 40 / 3
    assert sim.disk("p").synced_count == 40


def test_effects_after_a_persist_do_not_wait_for_it() -> None:
    sim = Simulation(5, FSYNC.replace(latency_ms_base=0.5, latency_ms_tail_mean=0.0))
    sim.add_node("p", script(on_start=lambda c, now, r: [
        Persist(records=(b"x",), then=(Send(to=NodeId("w"), message=Note(number=1)),)),
        Send(to=NodeId("w"), message=Note(number=2)),
    ]))
    sim.add_node("w", script())
    sim.start()
    sim.run_until(100.0)
    assert acknowledged(sim) == [(0.5, 2), (4.5, 1)]


def test_a_crash_loses_unsynced_records_and_their_then_effects() -> None:
    sim = build(3, every_ms=10.0)  # persists at 10, 20, 30; fsyncs done at 14, 24, 34
    sim.start()
    sim.run_until(32.0)  # r2 written, its fsync still in flight
    sim.crash("p")
    sim.run_until(40.0)
    sim.restart("p")
    sim.run_until(100.0)
    assert [n for _, n in acknowledged(sim)] == [0, 1]
    assert core(sim, "p").recovered in ((b"r0", b"r1"), (b"r0", b"r1", b"r2"))
    assert sim.statistics().restarts == 1


def test_a_restart_rebuilds_from_everything_that_was_synced() -> None:
    sim = build(20, every_ms=2.0)
    sim.start()
    sim.run_until(200.0)
    sim.crash("p")
    sim.restart("p")
    assert core(sim, "p").recovered == tuple(f"r{n}".encode() for n in range(20))


def test_crashes_in_the_fsync_window_tear_or_lose_only_the_unsynced_tail() -> None:
    # Many crash/restart cycles with writes in flight: the simulator's storage
    # check (prefix of what was appended, everything fsynced kept) must hold.
    sim = Simulation(9, FSYNC.replace(disk_tear_probability=1.0, disk_sector_bytes=8))
    sim.add_node("p", script(
        on_start=lambda c, now, r: [SetTimer(key="w", delay_ms=0.3)],
        on_timer=lambda c, now, key: [
            Persist(records=(c.rng.randbytes(c.rng.randrange(1, 60)),)), SetTimer(key="w", delay_ms=0.3)
        ],
    ))
    sim.start()
    lost_some = False
    for cycle in range(60):
        sim.run_for(3.0 + cycle % 5)
        before = sim.disk("p").appended_count
        sim.crash("p")
        sim.restart("p")
        lost_some |= sim.disk("p").appended_count < before
    assert lost_some


def test_a_mid_write_crash_strikes_inside_the_fsync_window() -> None:
    sim = build(3, every_ms=10.0)
    sim.start()
    sim.run_until(12.0)  # nothing in flight: r0 synced at 14? no: r0 at 10, done at 14
    sim.run_until(15.0)
    sim.inject(Crash(at_ms=15.0, node="p", down_ms=50.0, mid_write=True))
    assert sim.is_up("p")  # armed, waiting for the next write (at 20 ms)
    sim.run_until(23.99)
    assert not sim.is_up("p")
    assert [n for _, n in acknowledged(sim)] == [0]
    sim.run_until(200.0)
    assert sim.is_up("p")


def test_the_storage_check_catches_an_ack_before_fsync() -> None:
    enable_mutant("storage.ack_before_fsync")
    disk = NodeDisk("n", SimDiskConfig())
    disk.open()
    disk.submit((b"a", b"b"), ())
    batch = disk.start_batch()
    assert batch is not None
    disk.finish_batch(batch)  # "durable", but no fsync happened
    assert disk.synced_count == 2
    disk.crash(random.Random(1))
    with pytest.raises(StorageViolation, match="fsynced"):
        disk.open()


def test_the_storage_check_passes_an_honest_log() -> None:
    for seed in range(50):
        rng = random.Random(seed)
        disk = NodeDisk("n", SimDiskConfig(sector_bytes=8, tear_probability=1.0))
        disk.open()
        for _ in range(rng.randrange(1, 6)):
            disk.submit((rng.randbytes(rng.randrange(1, 40)),), ())
            batch = disk.start_batch()
            assert batch is not None
            if rng.random() < 0.3:
                break  # crash with this batch's fsync in flight
            disk.finish_batch(batch)
        disk.crash(rng)
        disk.open()


def test_a_failed_recovery_is_reported_as_a_simulation_failure() -> None:
    enable_mutant("storage.ack_before_fsync")
    failures = 0
    for seed in range(10):
        sim = build(3, every_ms=10.0, seed=seed)
        sim.start()
        sim.run_until(16.0)  # r0 "synced", but no fsync really happened
        sim.crash("p")
        try:
            sim.restart("p")
        except SimulationFailure as failure:
            assert "StorageViolation" in str(failure)
            failures += 1
    assert failures > 0
