"""SaveSnapshot on the asyncio host with real files: the WAL shrinks, and a
restart recovers the newest snapshot and the records after it."""

from __future__ import annotations

from pathlib import Path

from synod.codec.registry import Message
from synod.core.effects import Effects, Persist, Recovered, SaveSnapshot, SetTimer
from synod.core.ids import NodeId
from synod.runtime.host import AsyncioHost, SnapshottingLog, open_durable_log, open_durable_store
from synod.storage import WalConfig
from tests.runtime.helpers import KEYRING, make_config, run, wait_until

SMALL_WAL = WalConfig(segment_bytes_max=8192, record_bytes_max=4096, buffer_bytes_max=1 << 20)


class _Timers:
    """A core that remembers what it recovered and which timers fired."""

    def __init__(self) -> None:
        self.recovered: Recovered | None = None
        self.fired: list[str] = []

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        self.recovered = recovered
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        return []

    def on_timer(self, now_ms: float, key: str) -> Effects:
        self.fired.append(key)
        return []

    def check_invariants(self) -> None:
        pass


def _record(i: int) -> bytes:
    return f"r{i:05d}".encode() * 30


async def _host(data_dir: Path) -> tuple[AsyncioHost, _Timers]:
    log, recovered = open_durable_store(data_dir, wal_config=SMALL_WAL)
    core = _Timers()
    host = AsyncioHost(node=NodeId("n1"), core_factory=lambda node, rng: core, config=make_config(),
                       keyring=KEYRING, durable_log=log, recovered=recovered, seed=3)
    await host.start()
    return host, core


def test_snapshots_truncate_the_wal_on_real_files(tmp_path: Path) -> None:
    async def scenario() -> None:
        host, core = await _host(tmp_path)
        log = host.durable_log
        sizes: list[int] = []
        for round_ in range(30):
            records = tuple(_record(round_ * 20 + i) for i in range(20))
            host.execute([Persist(records=records),
                          SaveSnapshot(chunks=(f"state{round_}".encode(),),
                                       then=(SetTimer(key=f"snap{round_}", delay_ms=0.0),)),
                          Persist(records=(b"tail%d" % round_,))])
            await wait_until(lambda r=round_: f"snap{r}" in core.fired, "snapshot saved")
            assert isinstance(log, SnapshottingLog)
            sizes.append(log.last_index - log.first_index + 1)
        await host.stop()
        # 630 records appended; the log keeps a bounded window.
        assert max(sizes) < 80
        assert len(list((tmp_path / "snap").glob("*.snap"))) <= 2
        again, recovered_core = await _host(tmp_path)
        await again.stop()
        assert recovered_core.recovered == Recovered(snapshot=(b"state29",), records=(b"tail29",))
        # A plain log (no snapshot store) still reads the snapshot back.
        wal, plain = open_durable_log(tmp_path)
        wal.close()
        assert plain == recovered_core.recovered

    run(scenario())


def test_a_plain_log_drops_snapshots_and_keeps_every_record(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal, recovered = open_durable_log(tmp_path)
        core = _Timers()
        host = AsyncioHost(node=NodeId("n1"), core_factory=lambda node, rng: core, config=make_config(),
                           keyring=KEYRING, durable_log=wal, recovered=recovered, seed=3)
        await host.start()
        host.execute([Persist(records=(b"a",)), SaveSnapshot(chunks=(b"s",), then=(SetTimer(key="t", delay_ms=0.0),)),
                      Persist(records=(b"b",))])
        await wait_until(lambda: "t" in core.fired, "snapshot then-effects ran")
        await host.stop()
        assert host.snapshots_dropped == 1
        wal2, again = open_durable_log(tmp_path)
        wal2.close()
        assert again == Recovered(records=(b"a", b"b"))

    run(scenario())


