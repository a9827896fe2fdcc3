"""Regression: a peer link that reconnects to a restarted node with an EMPTY
queue must still deliver what is offered afterwards.

It did not: ``Connection`` took ``queue or SendQueue(...)``, and an empty
``SendQueue`` is falsy, so the new connection drained a private queue while the
link kept filling its own. Seen on real processes as a Paxos failover stall:
after a leader kill, one survivor's pre-votes to a recently restarted node were
never delivered, so no one could win an election for seconds."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from synod.core.ids import NodeId
from synod.runtime.client import connect
from synod.runtime.host import AsyncioHost
from tests.runtime.cores import Answer, Command, probe_factory
from tests.runtime.helpers import ALICE_KEY, KEYRING, make_config, run, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_link_that_reconnects_with_an_empty_queue_still_delivers() -> None:
    async def scenario() -> None:
        port_n2 = free_port()
        n1 = AsyncioHost(node=NodeId("n1"), core_factory=probe_factory, keyring=KEYRING, seed=1,
                         config=make_config(peers={"n2": ("127.0.0.1", port_n2)}))
        await n1.start()

        async def start_n2() -> AsyncioHost:
            host = AsyncioHost(node=NodeId("n2"), core_factory=probe_factory, keyring=KEYRING, seed=2,
                               config=make_config(), listen=("127.0.0.1", port_n2))
            await host.start()
            return host

        async def notes(host: AsyncioHost) -> str:
            assert host.address is not None
            async with await connect(host.address, "alice", ALICE_KEY) as client:
                answer = await client.request(Command(op="notes", arg=""), 10)
            assert isinstance(answer, Answer)
            return " ".join(answer.items)

        async def forward(text: str) -> None:
            assert n1.address is not None
            async with await connect(n1.address, "alice", ALICE_KEY) as client:
                await client.request(Command(op="forward", arg=f"n2:{text}"), 10)

        n2 = await start_n2()
        try:
            await forward("first")
            await wait_until_async(lambda: notes(n2), "n1:first")
            await n2.stop()
            n2 = await start_n2()
            link = n1._links[NodeId("n2")]
            # The link reconnects on its own, with nothing queued.
            await wait_until(lambda: link.connection is not None and len(link.queue) == 0
                             and not link.connection.closed, "n1's link to the new n2")
            await forward("second")
            await wait_until_async(lambda: notes(n2), "n1:second")
        finally:
            await n2.stop()
            await n1.stop()

    run(scenario())


async def wait_until_async(fetch: Callable[[], Awaitable[str]], expected: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        seen = await fetch()
        if expected in seen:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{expected!r} never arrived; notes: {seen!r}")
