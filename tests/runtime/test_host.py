"""The asyncio host carries out every effect as ``synod.core.effects`` says."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

import pytest

from synod.core.effects import Host
from synod.core.errors import InvariantViolation
from synod.core.ids import NodeId
from synod.runtime.client import connect
from synod.runtime.host import AsyncioHost, DurableLog, open_durable_log, start_local_cluster
from tests.runtime.cores import Answer, Command, probe_factory
from tests.runtime.helpers import (
    ALICE_KEY,
    KEYRING,
    ask,
    make_config,
    notes_when,
    run,
    running_host,
    wait_until,
)


def test_client_request_gets_its_reply_on_its_connection() -> None:
    async def scenario() -> None:
        async with running_host() as host:
            assert host.address is not None
            client = await connect(host.address, "alice", ALICE_KEY, node="n1")
            other = await connect(host.address, "alice", ALICE_KEY, node="n1")
            replies = await asyncio.gather(
                *(client.request(Command(op="echo", arg=f"a{i}"), 20) for i in range(50)),
                *(other.request(Command(op="echo", arg=f"b{i}"), 20) for i in range(50)),
            )
            assert [r.items for r in replies if isinstance(r, Answer)] == [
                *((f"a{i}",) for i in range(50)),
                *((f"b{i}",) for i in range(50)),
            ]
            await client.close()
            await other.close()
            assert host.statistics().client_results == 100

    run(scenario())


def test_the_asyncio_host_implements_the_kernel_host_interface() -> None:
    async def scenario() -> None:
        async with running_host() as host:
            kernel_host: Host = host  # checked by mypy --strict
            assert kernel_host.node == "n1"
            first = kernel_host.now_ms()
            await asyncio.sleep(0.01)
            assert kernel_host.now_ms() > first
            # Named generators are stable for a seed and differ between names.
            assert host.rng("a").random() == host.rng("a").random() != host.rng("b").random()

    run(scenario())


def test_client_source_is_a_client_id_carrying_the_authenticated_principal() -> None:
    async def scenario() -> None:
        async with running_host() as host:
            source, principal = await ask(host, Command(op="whoami"))
            assert principal == "alice"
            assert source.startswith("alice#")

    run(scenario())


def test_send_goes_to_the_peer_with_our_node_id_as_source() -> None:
    async def scenario() -> None:
        async with running_host("n2") as n2:
            assert n2.address is not None
            config = make_config(peers={"n2": n2.address})
            async with running_host("n1", config=config) as n1:
                await ask(n1, Command(op="forward", arg="n2:hello"))
                await ask(n1, Command(op="forward", arg="n2:world"))

                assert await notes_when(n2, 2) == ("n1:hello", "n1:world")
                assert n1.statistics().messages_sent >= 2

    run(scenario())


def test_send_to_a_node_without_address_is_counted_not_raised() -> None:
    async def scenario() -> None:
        async with running_host() as host:
            await ask(host, Command(op="forward", arg="nowhere:x"))
            assert host.statistics().send_to_unknown_peer == 1

    run(scenario())


def test_peer_link_reconnects_after_the_peer_restarts() -> None:
    async def scenario() -> None:
        async with running_host("n2") as n2:
            assert n2.address is not None
            port = n2.address[1]
            config = make_config(peers={"n2": n2.address})
            async with running_host("n1", config=config) as n1:
                await ask(n1, Command(op="forward", arg="n2:before"))
                await wait_until(lambda: n2.core.notes == ["n1:before"], "first note")  # type: ignore[attr-defined]
                await n2.stop()
                # n1 keeps trying with back-off while n2 is down.
                await ask(n1, Command(op="forward", arg="n2:during"))
                await wait_until(lambda: n1.statistics().peer_connect_failures >= 1, "a failed attempt")
                restarted = AsyncioHost(
                    node=n2.node, core_factory=type(n2.core), config=make_config(),  # type: ignore[arg-type]
                    keyring=n2.keyring, listen=("127.0.0.1", port), seed=1,
                )
                await restarted.start()
                try:
                    await ask(n1, Command(op="forward", arg="n2:after"))
                    await wait_until(
                        lambda: "n1:after" in restarted.core.notes,  # type: ignore[attr-defined]
                        "note after restart",
                    )
                finally:
                    await restarted.stop()

    run(scenario())


def test_timers_fire_rearm_replaces_and_cancel_prevents() -> None:
    async def scenario() -> None:
        async with running_host() as host:
            assert host.address is not None
            async with await connect(host.address, "alice", ALICE_KEY) as client:

                async def command(op: str, arg: str, delay_ms: float = 0.0) -> None:
                    await client.request(Command(op=op, arg=arg, delay_ms=delay_ms), 20)

                await command("timer", "once", 10)
                # Re-armed far into the future: the first instance must never fire.
                await command("timer", "rearmed", 1500)
                await command("timer", "rearmed", 600_000)
                await command("timer", "cancelled", 1500)
                await command("cancel", "cancelled")
                # Fires after the replaced and the cancelled instances were due.
                await command("timer", "last", 2000)
                await wait_until(lambda: "last" in host.core.fired, "the last timer")  # type: ignore[attr-defined]
            assert host.core.fired == ["once", "last"]  # type: ignore[attr-defined]
            assert host.statistics().timers_fired == 2

    run(scenario())


def test_persist_answers_after_fsync_and_a_restart_recovers_the_records(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_host(data_dir=tmp_path) as host:
            for i in range(5):
                assert await ask(host, Command(op="durable", arg=f"r{i}")) == (f"r{i}",)
            stats = host.statistics()
            assert stats.records_persisted == 5
            assert 1 <= stats.fsyncs <= 5
        async with running_host(data_dir=tmp_path) as again:
            assert await ask(again, Command(op="recovered")) == tuple(f"r{i}" for i in range(5))

    run(scenario())


def test_group_commit_many_concurrent_persists_share_fsyncs_and_answer_in_order(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running_host(data_dir=tmp_path) as host:
            assert host.address is not None
            client = await connect(host.address, "alice", ALICE_KEY)
            replies = await asyncio.gather(
                *(client.request(Command(op="durable", arg=f"w{i:03d}"), 30) for i in range(200))
            )
            await client.close()
            assert [r.items for r in replies if isinstance(r, Answer)] == [
                (f"w{i:03d}",) for i in range(200)
            ]
            stats = host.statistics()
            assert stats.records_persisted == 200
            # Group commit: at most one fsync in flight, and the requests arrive
            # faster than an fsync, so fewer fsyncs than records.
            assert stats.fsyncs < 200
        async with running_host(data_dir=tmp_path) as again:
            recovered = await ask(again, Command(op="recovered"))
            assert recovered == tuple(f"w{i:03d}" for i in range(200))

    run(scenario())


@pytest.mark.parametrize(("inline_ms_max", "all_inline"), [(0.0, False), (1e9, True)])
def test_fsync_runs_inline_only_when_allowed_and_answers_after_it_either_way(
    tmp_path: Path, inline_ms_max: float, all_inline: bool,
) -> None:
    async def scenario() -> None:
        config = make_config(fsync_inline_ms_max=inline_ms_max)
        async with running_host(config=config, data_dir=tmp_path) as host:
            for i in range(5):
                assert await ask(host, Command(op="durable", arg=f"r{i}")) == (f"r{i}",)
            stats = host.statistics()
            assert stats.fsyncs >= 1
            assert stats.fsyncs_inline == (stats.fsyncs if all_inline else 0)
        async with running_host(data_dir=tmp_path) as again:
            assert await ask(again, Command(op="recovered")) == tuple(f"r{i}" for i in range(5))

    run(scenario())


def test_sends_keep_their_order_when_some_go_out_directly_and_some_queued() -> None:
    async def scenario() -> None:
        async with running_host("n2") as n2:
            assert n2.address is not None
            config = make_config(peers={"n2": n2.address})
            async with running_host("n1", config=config) as n1:
                assert n1.address is not None
                await ask(n1, Command(op="forward", arg="n2:first"))   # opens the link
                client = await connect(n1.address, "alice", ALICE_KEY)
                # Many requests at once: the host handles several in one loop
                # iteration, so the first send of each goes out directly and the
                # rest wait in the queue for the writer task.
                await asyncio.gather(*(client.request(Command(op="forward", arg=f"n2:m{i:03d}"), 30)
                                       for i in range(300)))
                await client.close()
                expected = ("n1:first", *(f"n1:m{i:03d}" for i in range(300)))
                assert await notes_when(n2, len(expected)) == expected

    run(scenario())


def test_persist_without_a_log_is_a_bug_that_stops_the_node() -> None:
    async def scenario() -> None:
        async with running_host() as host:
            assert host.address is not None
            client = await connect(host.address, "alice", ALICE_KEY)
            with pytest.raises(Exception):  # noqa: B017 - the connection dies or times out
                await client.request(Command(op="durable", arg="x"), 5)
            await client.close()
            with pytest.raises(Exception, match="no log"):
                await host.wait_stopped()

    run(scenario())


def test_a_broken_invariant_stops_the_node_and_is_reraised() -> None:
    async def scenario() -> None:
        async with running_host() as host:
            assert host.address is not None
            client = await connect(host.address, "alice", ALICE_KEY)
            with pytest.raises(Exception):  # noqa: B017
                await client.request(Command(op="explode"), 5)
            await client.close()
            with pytest.raises(InvariantViolation, match="explode requested"):
                await host.wait_stopped()

    run(scenario())


def test_group_commit_bound_pauses_reading_instead_of_growing(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = dataclasses.replace(make_config(), group_commit_pending_bytes_max=8192)
        async with running_host(data_dir=tmp_path, config=config) as host:
            assert host.address is not None
            client = await connect(host.address, "alice", ALICE_KEY)
            replies = await asyncio.gather(
                *(client.request(Command(op="durable", arg=f"{i:03d}" * 30), 30) for i in range(100))
            )
            await client.close()
            assert len(replies) == 100
            stats = host.statistics()
            assert stats.records_persisted == 100
            assert stats.reads_paused >= 1

    run(scenario())


class GatedLog:
    """The real write-ahead log, with each ``sync`` held until the test opens a
    gate: a fault-injecting layer that makes an fsync last as long as we like."""

    def __init__(self, wal: DurableLog) -> None:
        self.wal = wal
        self.gate = threading.Event()
        self.syncs_started = 0

    def append(self, record: bytes) -> int:
        return self.wal.append(record)

    def sync(self) -> int:
        self.syncs_started += 1
        if not self.gate.wait(timeout=30):
            raise OSError("test gate never opened")
        return self.wal.sync()

    def close(self) -> None:
        self.wal.close()


def test_persists_complete_in_order_even_an_empty_one_behind_an_fsync_in_flight(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        wal, recovered = open_durable_log(tmp_path)
        gated = GatedLog(wal)
        host = AsyncioHost(
            node=NodeId("n1"), core_factory=probe_factory, config=make_config(), keyring=KEYRING,
            durable_log=gated, recovered=recovered, seed=1,
        )
        await host.start()
        try:
            assert host.address is not None
            client = await connect(host.address, "alice", ALICE_KEY)
            order: list[str] = []

            async def request(op: str, arg: str) -> None:
                reply = await client.request(Command(op=op, arg=arg), 30)
                assert isinstance(reply, Answer)
                order.append(reply.items[0])

            first = asyncio.create_task(request("durable", "first"))
            await wait_until(lambda: gated.syncs_started == 1, "the first fsync to start")
            # While that fsync is in flight, a Persist with no records (nothing
            # else waiting), then a later durable write: neither may overtake.
            barrier = asyncio.create_task(request("barrier", "barrier"))
            await wait_until(lambda: host.statistics().persists == 2, "the barrier persist")
            second = asyncio.create_task(request("durable", "second"))
            await wait_until(lambda: host.statistics().persists == 3, "three persists")
            await asyncio.sleep(0.05)
            assert order == []  # nothing answered before its fsync
            gated.gate.set()
            await asyncio.gather(first, second, barrier)
            assert order == ["first", "barrier", "second"]
            await client.close()
        finally:
            gated.gate.set()
            await host.stop()

    run(scenario())


def test_a_local_cluster_of_toy_registers_replicates_durable_writes(tmp_path: Path) -> None:
    from synod.toy.messages import Read, ReadOk, Write, WriteOk
    from synod.toy.register import register_factory

    async def scenario() -> None:
        names = ("n1", "n2", "n3")
        hosts = await start_local_cluster(
            names, register_factory(tuple(NodeId(n) for n in names)), keyring=KEYRING, data_root=tmp_path
        )
        try:
            first, _, last = hosts
            assert first.address is not None and last.address is not None
            assert set(first.peers()) == {"n2", "n3"}
            async with await connect(first.address, "alice", ALICE_KEY, node="n1") as client:
                assert isinstance(await client.request(Write(key="k", value="v"), 20), WriteOk)
            async with await connect(last.address, "alice", ALICE_KEY, node="n3") as client:
                value = None
                for _ in range(500):
                    reply = await client.request(Read(key="k"), 20)
                    assert isinstance(reply, ReadOk)
                    if reply.entry is not None:
                        value = reply.entry.value
                        break
                    await asyncio.sleep(0.02)
                assert value == "v"
        finally:
            for host in hosts:
                await host.stop()

    run(scenario())


def test_set_peer_moves_the_link_to_a_new_address() -> None:
    async def scenario() -> None:
        async with running_host("n2") as old, running_host("n2") as new:
            assert old.address is not None and new.address is not None
            async with running_host("n1", config=make_config(peers={"n2": old.address})) as n1:
                await ask(n1, Command(op="forward", arg="n2:to-old"))
                await wait_until(lambda: old.core.notes == ["n1:to-old"], "note at the old address")  # type: ignore[attr-defined]
                await n1.set_peer("n2", new.address)
                await ask(n1, Command(op="forward", arg="n2:to-new"))
                await wait_until(lambda: new.core.notes == ["n1:to-new"], "note at the new address")  # type: ignore[attr-defined]
                await n1.set_peer("n2", None)
                await ask(n1, Command(op="forward", arg="n2:nowhere"))
                assert n1.statistics().send_to_unknown_peer == 1

    run(scenario())


def test_a_reply_for_a_client_that_left_is_counted_not_sent(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal, recovered = open_durable_log(tmp_path)
        gated = GatedLog(wal)
        host = AsyncioHost(
            node=NodeId("n1"), core_factory=probe_factory, config=make_config(), keyring=KEYRING,
            durable_log=gated, recovered=recovered, seed=1,
        )
        await host.start()
        try:
            assert host.address is not None
            client = await connect(host.address, "alice", ALICE_KEY)
            pending = asyncio.create_task(client.request(Command(op="durable", arg="late"), 30))
            await wait_until(lambda: gated.syncs_started == 1, "the fsync to start")
            await client.close()  # leaves before its write is durable
            with pytest.raises(Exception):  # noqa: B017 - the request dies with its connection
                await pending
            await wait_until(lambda: host.client_ids() == [], "the node to see the client leave")
            gated.gate.set()
            await wait_until(lambda: host.statistics().reply_to_gone_client == 1, "counted reply")
        finally:
            gated.gate.set()
            await host.stop()

    run(scenario())
