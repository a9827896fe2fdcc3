"""Push-pull over TCP in the gossip agent (issue 4: "periodic push-pull full-state
sync over TCP"). Real sockets on 127.0.0.1: agents in this process, to read their
counters, and a real ``synod gossip agent`` process, to show it survives hostile
input and still serves an honest push-pull afterwards.

Claims:
* a join is a push-pull over TCP, authenticated by the runtime's handshake, and
  both sides end up holding each other alive; no push-pull rides on UDP;
* periodic anti-entropy push-pulls go over TCP too;
* bad input on the push-pull port (garbage, a wrong key, an oversized frame, a
  message other than ``PushPull``, a second message, a push-pull by UDP) is
  dropped and counted by reason, never reaches the member and never stops the
  agent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from synod.codec.frames import frame
from synod.codec.registry import encode
from synod.core.ids import NodeId
from synod.gossip.agent import GossipAgent, query_members
from synod.gossip.config import GossipConfig
from synod.gossip.messages import MemberStatus, Ping, PushPull
from synod.runtime.auth import KIND_NODE, MODE_HMAC, InitiatorHandshake, Keyring
from synod.runtime.config import RuntimeConfig
from synod.runtime.datagram import MessageDatagrams
from synod.runtime.stats import Counters, RuntimeStatistics
from synod.runtime.transport import Connection, open_connection

pytestmark = pytest.mark.realproc

SECRET = b"0123456789abcdef0123456789abcdef"
KEYRING = Keyring.from_secret(SECRET)
WRONG_KEYRING = Keyring.from_secret(b"fedcba9876543210fedcba9876543210")
LOOPBACK = "127.0.0.1"


def config(push_pull_interval_ms: float = 0.0) -> GossipConfig:
    return dataclasses.replace(GossipConfig.local(), push_pull_interval_ms=push_pull_interval_ms)


async def start_agent(name: str, seeds: tuple[tuple[str, int], ...] = (),
                      cfg: GossipConfig | None = None,
                      push_pull_bytes_max: int = 1024 * 1024) -> GossipAgent:
    agent = GossipAgent(NodeId(name), keyring=KEYRING, bind=(LOOPBACK, 0),
                        seeds=[(NodeId(seed), (LOOPBACK, port)) for seed, port in seeds],
                        config=cfg or config(), push_pull_bytes_max=push_pull_bytes_max)
    await agent.start()
    return agent


def port_of(agent: GossipAgent) -> int:
    assert agent.address is not None
    return agent.address[1]


def holds_alive(agent: GossipAgent, *names: str) -> bool:
    assert agent.member is not None
    return all(agent.member.status_of(NodeId(n)) is MemberStatus.ALIVE for n in names)


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)
    assert condition(), what


def run(coroutine: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), 60.0))


async def authenticated(port: int, principal: str = "intruder"):  # type: ignore[no-untyped-def]
    """An authenticated connection to the agent at ``port`` (holding the cluster key)."""
    handshake = InitiatorHandshake(mode=MODE_HMAC, kind=KIND_NODE, principal=principal,
                                   key=KEYRING.primary, expected_acceptor=None)
    return await open_connection((LOOPBACK, port), handshake=handshake,
                                 config=RuntimeConfig(), counters=Counters(RuntimeStatistics),
                                 ssl_context=None)


async def raw(port: int, data: bytes) -> bytes:
    """Write ``data`` on a plain TCP connection; what came back before it closed."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(5.0):
            return await reader.read()
    finally:
        writer.close()


def test_join_is_a_push_pull_over_tcp_and_both_sides_learn() -> None:
    async def scenario() -> None:
        seed = await start_agent("seed")
        joiner = await start_agent("joiner", seeds=(("seed", port_of(seed)),))
        try:
            await wait_until(lambda: holds_alive(joiner, "seed") and holds_alive(seed, "joiner"),
                             "seed and joiner hold each other alive")
            assert joiner.push_pull_statistics().completed >= 1
            assert seed.push_pull_statistics().served >= 1
            assert seed.tcp_statistics().connections_authenticated >= 1
            for agent in (seed, joiner):
                assert agent.push_pull_statistics().over_udp == 0
                assert agent.push_pull_statistics().failed == 0
        finally:
            joiner.stop()
            seed.stop()
            await joiner.wait_stopped()
            await seed.wait_stopped()

    run(scenario)


def test_periodic_anti_entropy_goes_over_tcp() -> None:
    async def scenario() -> None:
        fast = config(push_pull_interval_ms=200.0)
        seed = await start_agent("seed", cfg=fast)
        others = [await start_agent(f"m{i}", seeds=(("seed", port_of(seed)),), cfg=fast)
                  for i in range(2)]
        try:
            await wait_until(lambda: all(holds_alive(a, "seed", "m0", "m1")
                                         for a in (seed, *others)), "all alive")
            joined = sum(a.push_pull_statistics().completed for a in (seed, *others))
            # 200 ms base interval (jittered at start): several more rounds in 1.5 s.
            await asyncio.sleep(1.5)
            later = sum(a.push_pull_statistics().completed for a in (seed, *others))
            assert later >= joined + 3
            assert sum(a.push_pull_statistics().served for a in (seed, *others)) >= later - 1
        finally:
            for agent in (seed, *others):
                agent.stop()
                await agent.wait_stopped()

    run(scenario)


def test_bad_push_pull_input_is_counted_and_never_reaches_the_member() -> None:
    async def scenario() -> None:
        agent = await start_agent("victim", push_pull_bytes_max=64 * 1024)
        port = port_of(agent)
        assert agent.member is not None
        sent_before = agent.member.statistics().messages_sent  # alone: sends nothing
        try:
            # Garbage instead of a handshake: refused, counted.
            await raw(port, b"\x00\x00\x00\x05hello-not-msgpack")
            # A handshake under another key: the acceptor's proof fails for the
            # initiator, who gives up; our side sees the connection die.
            wrong = GossipAgent(NodeId("forger"), keyring=WRONG_KEYRING, bind=(LOOPBACK, 0),
                                seeds=[(NodeId("victim"), (LOOPBACK, port))], config=config())
            await wrong.start()
            await wait_until(lambda: wrong.push_pull_statistics().failed >= 1, "forger failed")
            assert wrong.tcp_statistics().auth_bad_proof >= 1
            wrong.stop()
            await wrong.wait_stopped()
            # Authenticated, then an oversized frame declared: closed before buffering.
            connection = await authenticated(port)
            connection.writer.write(struct.pack(">I", 10 * 1024 * 1024))
            await connection.writer.drain()
            await wait_until(lambda: agent.tcp_statistics().frames_too_large == 1, "too large")
            connection.close("done")
            # Authenticated, then a message that is not a PushPull.
            connection = await authenticated(port)
            connection.writer.write(frame(encode(Ping(seq=1, target=NodeId("victim")))))
            await connection.writer.drain()
            await wait_until(lambda: agent.tcp_statistics().frames_unexpected_message == 1,
                             "unexpected message")
            connection.close("done")
            # Authenticated, then bytes that do not decode.
            connection = await authenticated(port)
            connection.writer.write(frame(b"\xc1\xc1\xc1"))
            await connection.writer.drain()
            await wait_until(lambda: agent.tcp_statistics().frames_garbage == 1, "garbage")
            connection.close("done")
            # A PushPull by UDP: dropped and counted.
            datagrams = await MessageDatagrams.open(node="intruder", keyring=KEYRING,
                                                    on_message=lambda *_: None)
            datagrams.send((LOOPBACK, port), PushPull(join=True, members=()))
            await wait_until(lambda: agent.push_pull_statistics().over_udp == 1, "udp push-pull")
            datagrams.close()
            statistics = agent.tcp_statistics()
            assert statistics.auth_handshake_malformed >= 1  # the garbage
            assert agent.push_pull_statistics().served == 0
            assert agent.member.statistics().messages_sent == sent_before  # no reply made
            # An honest push-pull after all that is served.
            friend = await start_agent("friend", seeds=(("victim", port),))
            await wait_until(lambda: holds_alive(agent, "friend") and holds_alive(friend, "victim"),
                             "friend joined")
            assert agent.push_pull_statistics().served >= 1
            friend.stop()
            await friend.wait_stopped()
        finally:
            agent.stop()
            await agent.wait_stopped()

    run(scenario)


def test_one_push_pull_per_connection() -> None:
    async def scenario() -> None:
        agent = await start_agent("victim")
        try:
            connection = await authenticated(port_of(agent), principal="peer")
            replies: list[object] = []

            def on_reply(conn: Connection, message: object) -> None:
                replies.append(message)
                conn.offer(PushPull(join=True, members=()))  # a second one: refused

            connection.offer(PushPull(join=True, members=()))
            await asyncio.wait_for(connection.run(on_reply), 5.0)
            assert len(replies) == 1  # the first answered, the second refused
            assert agent.tcp_statistics().frames_unexpected_message == 1
            assert agent.push_pull_statistics().served == 1
        finally:
            agent.stop()
            await agent.wait_stopped()

    run(scenario)


# ---------------------------------------------------------------- a real process


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "synod", "gossip", "agent", "--node", "proc",
             "--bind", f"{LOOPBACK}:0", "--secret-file", str(secret_file), "--profile", "local"],
            stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY"), line
        yield process, int(line.split()[3]), stderr_path
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_real_agent_survives_hostile_push_pulls_and_serves_an_honest_one(
        agent_process: tuple[subprocess.Popen[str], int, Path]) -> None:
    process, port, stderr_path = agent_process

    async def scenario() -> None:
        await raw(port, b"GET / HTTP/1.0\r\n\r\n")
        connection = await authenticated(port)
        connection.writer.write(struct.pack(">I", 1 << 30))
        await connection.writer.drain()
        await asyncio.sleep(0.2)
        connection.close("done")
        wrong = GossipAgent(NodeId("forger"), keyring=WRONG_KEYRING, bind=(LOOPBACK, 0),
                            seeds=[(NodeId("proc"), (LOOPBACK, port))], config=config())
        await wrong.start()
        await wait_until(lambda: wrong.push_pull_statistics().failed >= 1, "forger refused")
        assert wrong.member is not None
        assert wrong.member.status_of(NodeId("proc")) is None  # learnt nothing
        wrong.stop()
        await wrong.wait_stopped()
        # The process is still up, and an honest agent joins it over TCP.
        friend = await start_agent("friend", seeds=(("proc", port),))
        try:
            await wait_until(lambda: holds_alive(friend, "proc"), "friend holds proc alive")
            assert friend.push_pull_statistics().completed >= 1
            reply = await query_members((LOOPBACK, port), KEYRING, 2.0)
            view = {row.node: row.status for row in reply.members}
            assert view.get("friend") is MemberStatus.ALIVE
            assert "forger" not in view
        finally:
            friend.stop()
            await friend.wait_stopped()

    run(scenario)
    assert process.poll() is None
    log = stderr_path.read_text()
    assert "frames_too_large" in log
    assert "handshake_malformed" in log
