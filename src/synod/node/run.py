"""``run_node``: the main coroutine of a ``synod node`` process.

Starts the ``Node``, prints one line ``READY <node> tcp=HOST:PORT gossip=HOST:PORT
http=HOST:PORT pid=<pid>`` on stdout (for scripts and tests), and runs until
SIGTERM or SIGINT, which stop it gracefully; a core failure stops it with the
error re-raised. ``python -m synod.node --config FILE`` is the same as ``synod
node --config FILE``.
"""

from __future__ import annotations

import asyncio
import os
import signal

from synod.node.config import NodeConfig
from synod.node.process import Node


async def run_node(config: NodeConfig, *, announce: bool = True) -> None:
    node = Node(config)
    await node.start()
    assert node.host is not None and node.host.address is not None and node.gossip is not None
    if announce:
        gossip = node.gossip.address
        http = node.http_address
        print(f"READY {node.node} tcp={node.host.address[0]}:{node.host.address[1]} "
              f"gossip={gossip[0] if gossip else ''}:{gossip[1] if gossip else ''} "
              f"http={f'{http[0]}:{http[1]}' if http else ''} pid={os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopped = asyncio.create_task(node.host.wait_stopped())
    requested = asyncio.create_task(stop.wait())
    await asyncio.wait((stopped, requested), return_when=asyncio.FIRST_COMPLETED)
    requested.cancel()
    if stopped.done():
        await stopped  # the core failed: re-raise
        return
    stopped.cancel()
    await node.stop()
