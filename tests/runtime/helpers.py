"""Helpers for the runtime tests: run coroutines on uvloop with a hard deadline,
start hosts on loopback, wait for conditions without sleeping blindly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from synod.core.ids import NodeId
from synod.runtime.auth import Keyring
from synod.runtime.client import connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import AsyncioHost, open_durable_log
from tests.runtime.cores import Answer, Command, probe_factory

T = TypeVar("T")

#: Every test coroutine gets this long before it fails (never hangs the suite).
DEADLINE_S = 60.0

CLUSTER_SECRET = b"cluster-secret-for-tests-0123456789"
ALICE_KEY = b"alice-key-for-tests-0123456789ab"
KEYRING = Keyring.from_secret(CLUSTER_SECRET, users={"alice": ALICE_KEY})


def run(coroutine: Coroutine[Any, Any, T], deadline_s: float = DEADLINE_S) -> T:
    """Run ``coroutine`` on a fresh uvloop loop (asyncio's own loop with
    ``SYNOD_TEST_LOOP=asyncio``), failing after ``deadline_s``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, deadline_s)

    use_asyncio = os.environ.get("SYNOD_TEST_LOOP") == "asyncio"
    factory = asyncio.new_event_loop if use_asyncio else uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(bounded())


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll ``condition`` until true; fail (not hang) after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def ask(host: AsyncioHost, command: Command, timeout_s: float = 20.0) -> tuple[str, ...]:
    """Send ``command`` to the probe core on ``host`` as alice; its answer's items."""
    assert host.address is not None
    async with await connect(host.address, "alice", ALICE_KEY, node=host.node) as client:
        reply = await client.request(command, timeout_s)
    assert isinstance(reply, Answer)
    return reply.items


async def notes_when(host: AsyncioHost, count: int, timeout_s: float = 20.0) -> tuple[str, ...]:
    """The probe core's notes on ``host`` once it holds ``count`` of them (or
    whatever it holds after ``timeout_s``, for the caller's assertion to show)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    notes = await ask(host, Command(op="notes"))
    while len(notes) < count and loop.time() < deadline:
        await asyncio.sleep(0.02)
        notes = await ask(host, Command(op="notes"))
    return notes


def make_config(**changes: Any) -> RuntimeConfig:
    return dataclasses.replace(RuntimeConfig.local(), **changes)


@contextlib.asynccontextmanager
async def running_host(
    node: str = "n1",
    *,
    config: RuntimeConfig | None = None,
    keyring: Keyring = KEYRING,
    data_dir: Path | None = None,
    core_factory: Any = probe_factory,
    port: int = 0,
) -> AsyncIterator[AsyncioHost]:
    """A started host on 127.0.0.1 (``port``, or a free one), stopped on exit."""
    durable_log, recovered = (None, None)
    if data_dir is not None:
        durable_log, recovered = open_durable_log(data_dir)
    host = AsyncioHost(
        node=NodeId(node),
        core_factory=core_factory,
        config=config or make_config(),
        keyring=keyring,
        durable_log=durable_log,
        recovered=recovered,
        seed=7,
        listen=("127.0.0.1", port),
    )
    await host.start()
    try:
        yield host
    finally:
        await host.stop()
