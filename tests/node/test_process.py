"""``Node`` objects in one process (real sockets on 127.0.0.1): a graceful stop
hands every leadership it holds to another live node before leaving."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from synod.core.errors import ConfigError
from synod.node.config import NodeConfig
from synod.node.process import Node
from synod.paxos.replica import PaxosReplica
from synod.runtime.auth import new_secret
from synod.runtime.host import run
from synod.runtime.local import free_ports as _free_ports


def configs(tmp_path: Path, count: int = 3) -> list[NodeConfig]:
    (tmp_path / "cluster.key").write_bytes(new_secret().hex().encode())
    ports = _free_ports(2 * count, socket.SOCK_DGRAM)  # one call: no port offered twice
    tcp, udp = ports[:count], ports[count:]
    nodes = tuple(f"n{i + 1}=127.0.0.1:{port}" for i, port in enumerate(tcp))
    return [NodeConfig(node_id=f"n{i + 1}", data_dir=tmp_path / f"n{i + 1}", bind=f"127.0.0.1:{tcp[i]}",
                       gossip_bind=f"127.0.0.1:{udp[i]}", seeds=(f"n1@127.0.0.1:{udp[0]}",) if i else (),
                       http_bind="", secret_file=tmp_path / "cluster.key", nodes=nodes, shards=2,
                       preset="local", stop_wait_s=0.5) for i in range(count)]


def leader_of(nodes: list[Node], group: str) -> Node | None:
    for node in nodes:
        replica = getattr(node.mux.children[group], "replica", None)
        if isinstance(replica, PaxosReplica) and replica.is_leader:
            return node
    return None


def test_leadership_is_handed_over_before_a_graceful_stop(tmp_path: Path) -> None:
    async def scenario() -> None:
        nodes = [Node(config) for config in configs(tmp_path)]
        stopped: list[Node] = []
        for node in nodes:
            await node.start()
        try:
            # Every group led, and gossip seeing the others alive (to pick a
            # target), at one instant: three nodes on one loop may re-elect
            # between two separate waits on a loaded machine.
            async with asyncio.timeout(30):
                while (any(leader_of(nodes, g) is None for g in ("lock", "s1", "s2"))
                       or any(len(node.live_members()) < 3 for node in nodes)):
                    await asyncio.sleep(0.05)
            leader = leader_of(nodes, "lock")
            assert leader is not None
            led = {g for g in ("lock", "s1", "s2") if leader_of(nodes, g) is leader}
            moved = await leader.transfer_leadership()
            assert set(moved) == led
            others = [n for n in nodes if n is not leader]
            async with asyncio.timeout(10):
                while any(leader_of(others, g) is None for g in led):
                    await asyncio.sleep(0.05)
            await leader.stop()
            stopped.append(leader)
            # the rest still serve: every group keeps a leader among them
            assert all(leader_of(others, g) is not None for g in ("lock", "s1", "s2"))
            for node in others:
                view = {str(m.node): m.status.name for m in node.gossip.member.view(0).members}  # type: ignore[union-attr]
                assert view[str(leader.node)] == "LEFT"
        finally:
            for node in nodes:
                if node not in stopped:
                    await node.stop()

    run(scenario())


def test_a_data_directory_serves_one_process_at_a_time(tmp_path: Path) -> None:
    config = configs(tmp_path, 1)[0]

    async def scenario() -> None:
        first = Node(config)
        await first.start()
        try:
            with pytest.raises(ConfigError, match=r"NodeConfig\.data_dir: .* in use by another synod"):
                await Node(config).start()
        finally:
            await first.stop()
        again = Node(config)          # released by the stop
        await again.start()
        await again.stop()

    run(scenario())
