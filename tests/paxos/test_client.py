"""The Paxos client against a real 3-node cluster hosted in this process.

Three ``AsyncioHost``s (real TCP on 127.0.0.1, real write-ahead logs with fsync)
each run the ``synod.paxos.server`` KV core; the client under test talks to them
through authenticated connections, exactly as it does to separate processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from synod.codec.kernel import ErrorReply
from synod.core.ids import NodeId
from synod.paxos import kv
from synod.paxos.client import (
    ClientConfig,
    PaxosClient,
    PaxosRequestError,
    PaxosTimeout,
    SyncPaxosClient,
)
from synod.paxos.messages import Command, CommandResult, ReadMode
from synod.paxos.server import ClientBatch, ClientBatchReply, kv_factory
from synod.runtime.auth import Keyring
from synod.runtime.client import connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import AsyncioHost, open_durable_log
from tests.runtime.helpers import run

CLUSTER_SECRET = b"paxos-cluster-secret-0123456789abcdef"
CLIENT_KEY = b"paxos-client-key-0123456789abcdef"
KEYRING = Keyring.from_secret(CLUSTER_SECRET, users={"app": CLIENT_KEY})
NODES = ("n1", "n2", "n3")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class InProcessCluster:
    """Three hosts on loopback in this event loop; nodes can be stopped and started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.addresses = {n: ("127.0.0.1", p) for n, p in zip(NODES, free_ports(len(NODES)), strict=True)}
        self.hosts: dict[str, AsyncioHost] = {}

    async def start_node(self, node: str) -> None:
        peers = {p: a for p, a in self.addresses.items() if p != node}
        config = dataclasses.replace(RuntimeConfig.local(), peers=peers)
        durable_log, recovered = open_durable_log(self.root / node)
        host = AsyncioHost(node=NodeId(node), core_factory=kv_factory(tuple(NodeId(n) for n in NODES)),
                           config=config, keyring=KEYRING, listen=self.addresses[node],
                           durable_log=durable_log, recovered=recovered)
        await host.start()
        self.hosts[node] = host

    async def stop_node(self, node: str) -> None:
        await self.hosts.pop(node).stop()

    def leader(self) -> str | None:
        for node, host in self.hosts.items():
            if host.core.replica.is_leader:
                return node
        return None

    def client(self, **config: object) -> PaxosClient:
        options = {"timeout_s": 10.0, **config}
        return PaxosClient(self.addresses, principal="app", key=CLIENT_KEY,
                           runtime=RuntimeConfig.local(), config=ClientConfig(**options))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def cluster(root: Path) -> AsyncIterator[InProcessCluster]:
    local = InProcessCluster(root)
    try:
        for node in NODES:
            await local.start_node(node)
        yield local
    finally:
        for node in list(local.hosts):
            await local.stop_node(node)


def test_kv_operations_in_every_read_mode(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as local, local.client() as client:
            await client.wait_leader()
            assert await client.get("k") is None
            await client.put("k", "v1")
            assert await client.get("k") == "v1"
            assert await client.get("k", mode=ReadMode.QUORUM) == "v1"
            assert await client.cas("k", "nope", "v2") == (False, "v1")
            assert await client.cas("k", "v1", "v2") == (True, "v2")
            assert await client.cas("fresh", None, "a") == (True, "a")
            assert await client.delete("k") is True
            assert await client.delete("k") is False
            assert await client.get("k", mode=ReadMode.QUORUM) is None
            # A stale read may lag, but on the leader connection it sees the write.
            assert await client.get("fresh", mode=ReadMode.STALE) in ("a", None)

    run(scenario())


def test_concurrent_calls_are_coalesced_into_batches(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as local, local.client() as client:
            await client.wait_leader()
            await asyncio.gather(*(client.put(f"k{i}", str(i)) for i in range(500)))
            values = await asyncio.gather(*(client.get(f"k{i}") for i in range(500)))
            assert values == [str(i) for i in range(500)]
            stats = client.statistics()
            assert stats.commands == 500 and stats.reads == 500
            # 1000 calls went out in far fewer frames than calls.
            assert stats.batches_sent < 500, stats

    run(scenario())


def test_a_follower_redirects_the_client_to_the_leader(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as local:
            async with local.client() as probe:
                leader = await probe.wait_leader()
            follower = next(n for n in NODES if n != leader)
            client = local.client()
            client._target = follower   # start at a follower on purpose
            async with client:
                await client.put("x", "1")
                assert await client.get("x") == "1"
                assert client.statistics().redirects >= 1

    run(scenario())


def test_a_retried_command_is_applied_once(tmp_path: Path) -> None:
    """The same (client id, seq) sent twice: the second gets the FIRST result.
    A compare-and-set from absent would answer False if it were applied again."""

    async def scenario() -> None:
        async with cluster(tmp_path) as local:
            async with local.client() as probe:
                leader = await probe.wait_leader()
            command = Command(client="retrier", seq=1, seen_below=1, op=kv.op_cas("once", None, "x"))
            async with await connect(local.addresses[leader], "app", CLIENT_KEY, node=leader,
                                     config=RuntimeConfig.local()) as connection:
                first = await connection.request(ClientBatch(items=(command,)), 5.0)
                second = await connection.request(ClientBatch(items=(command,)), 5.0)
                third = await connection.request(command, 5.0)   # unbatched, same answer
            for reply in (first, second):
                assert isinstance(reply, ClientBatchReply)
                (answer,) = reply.items
                assert isinstance(answer, CommandResult)
                assert kv.decode_result(answer.result) == (True, "x")
            assert isinstance(third, CommandResult) and kv.decode_result(third.result) == (True, "x")
            applied = local.hosts[leader].core.replica.statistics()  # type: ignore[attr-defined]
            assert applied.commands_applied == 1

    run(scenario())


def test_the_client_reports_the_lowest_unanswered_seq() -> None:
    async def scenario() -> None:
        client = PaxosClient({"n1": ("127.0.0.1", 9)}, principal="app", key=CLIENT_KEY)
        assert client.seen_below == 1
        client._unanswered.update({3: None, 5: None})
        client._next_seq = 6
        assert client.seen_below == 3
        del client._unanswered[3]
        assert client.seen_below == 5
        client._unanswered.clear()
        assert client.seen_below == 6

    run(scenario())


def test_an_unreachable_cluster_ends_in_a_typed_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        nowhere = {n: ("127.0.0.1", p) for n, p in zip(NODES, free_ports(3), strict=True)}
        client = PaxosClient(nowhere, principal="app", key=CLIENT_KEY, runtime=RuntimeConfig.local(),
                             config=ClientConfig(timeout_s=0.5, attempt_timeout_s=0.2))
        async with client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(PaxosTimeout):
                await client.put("k", "v")
            assert loop.time() - started < 5.0
            assert client.statistics().timeouts == 1

    run(scenario())


def test_close_does_not_hang_on_a_task_that_swallowed_its_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that races
    with its inner future; a sender stuck like that once made ``close`` hang."""
    swallowed = []

    async def stubborn_connect(self: PaxosClient) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.append(True)   # the first cancellation is lost ...
        await asyncio.sleep(3600)    # ... the second one ends it

    monkeypatch.setattr(PaxosClient, "_connection_now", stubborn_connect)

    async def scenario() -> None:
        client = PaxosClient({"n1": ("127.0.0.1", 9)}, principal="app", key=CLIENT_KEY,
                             config=ClientConfig(timeout_s=0.2))
        with pytest.raises(PaxosTimeout):
            await client.put("k", "v")
        # Bounded so that a regression fails instead of hanging the suite (not
        # wait_for: its own cancellation of close() would be swallowed the same way).
        closing = asyncio.create_task(client.close())
        done, _pending = await asyncio.wait({closing}, timeout=20)
        if closing not in done:
            closing.cancel()
        assert closing in done, "close() hangs on a task that swallowed its cancellation"
        assert swallowed == [True]

    run(scenario())


def test_a_cluster_without_a_majority_ends_in_a_typed_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as local:
            async with local.client() as probe:
                await probe.wait_leader()
                await probe.put("before", "1")
            await local.stop_node("n2")
            await local.stop_node("n3")
            async with local.client(timeout_s=1.5, attempt_timeout_s=0.3) as client:
                with pytest.raises(PaxosTimeout):
                    await client.put("after", "1")

    run(scenario())


def test_a_command_over_the_size_limit_is_a_typed_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as local, local.client() as client:
            await client.wait_leader()
            with pytest.raises(PaxosRequestError) as raised:
                await client.put("big", "x" * 70_000)
            assert raised.value.code == "too_large"
            await client.put("small", "ok")   # the client still works
            assert await client.get("small") == "ok"

    run(scenario())


def test_the_leader_restarting_is_invisible_to_the_caller(tmp_path: Path) -> None:
    """Stop the leader between calls: the next call finds the new leader, with
    the same client object, and every acknowledged write is still there."""

    async def scenario() -> None:
        async with cluster(tmp_path) as local, local.client() as client:
            first = await client.wait_leader()
            for i in range(20):
                await client.put(f"k{i}", str(i))
            await local.stop_node(first)
            await client.put("after", "yes")
            assert [await client.get(f"k{i}") for i in range(20)] == [str(i) for i in range(20)]
            assert await client.get("after") == "yes"
            await local.start_node(first)
            assert local.leader() not in (None, first)

    run(scenario())


def test_a_bad_batch_gets_an_error_reply_not_a_crash(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as local:
            async with local.client() as probe:
                leader = await probe.wait_leader()
            async with await connect(local.addresses[leader], "app", CLIENT_KEY, node=leader,
                                     config=RuntimeConfig.local()) as connection:
                empty = await connection.request(ClientBatch(items=()), 5.0)
                assert isinstance(empty, ErrorReply) and empty.code == "bad_request"
                odd = await connection.request(ClientBatch(items=(ErrorReply(code="x"),)), 5.0)
                assert isinstance(odd, ClientBatchReply)
                assert isinstance(odd.items[0], ErrorReply) and odd.items[0].code == "bad_request"
            async with local.client() as client:
                await client.put("still", "serving")

    run(scenario())


def test_sync_client_wraps_the_same_api(tmp_path: Path) -> None:
    # The in-process cluster needs a running loop; run it in a thread's loop.
    import threading

    ready = threading.Event()
    done = threading.Event()
    holder: dict[str, InProcessCluster] = {}

    def serve() -> None:
        async def main() -> None:
            async with cluster(tmp_path) as local:
                holder["cluster"] = local
                ready.set()
                while not done.is_set():
                    await asyncio.sleep(0.02)

        run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        local = holder["cluster"]
        with SyncPaxosClient(local.addresses, principal="app", key=CLIENT_KEY,
                             runtime=RuntimeConfig.local()) as client:
            client.wait_leader()
            client.put("s", "1")
            assert client.get("s") == "1"
            assert client.cas("s", "1", "2") == (True, "2")
            assert client.delete("s") is True
            assert client.get("s", mode=ReadMode.QUORUM) is None
    finally:
        done.set()
        thread.join(30)


def test_calls_beyond_the_in_flight_bound_wait_their_turn(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as local, local.client(calls_in_flight_max=3) as client:
            await client.wait_leader()
            done = await asyncio.gather(*(client.cas(f"k{i % 5}", None, str(i)) for i in range(40)))
            assert sum(1 for swapped, _ in done if swapped) == 5   # one winner per key
            assert client._calls_active == 0 and not client._calls_room
            stats = client.statistics()
            assert stats.items_sent >= 40 and stats.timeouts == 0

    run(scenario())
