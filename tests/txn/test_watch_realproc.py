"""Real processes: a watch stream over two shards sees each change as it is
applied (long polls, not a poll loop on the client)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from synod.txn.client import TxnClient
from synod.txn.messages import Change
from synod.txn.node import LocalTxnCluster
from synod.txn.shardmap import StaticShardMapSource
from tests.runtime.helpers import run

pytestmark = [pytest.mark.realproc]


def test_a_watch_stream_over_two_shards_sees_changes_as_they_are_applied(tmp_path: Path) -> None:
    cluster = LocalTxnCluster(tmp_path, shards=2)
    cluster.start()

    async def scenario() -> list[tuple[str, Change]]:
        client = TxnClient(StaticShardMapSource(cluster.shard_map), cluster.addresses, principal="kv",
                           key=cluster.user_key)
        seen: list[tuple[str, Change]] = []
        arrived = asyncio.Event()

        async def follow() -> None:
            # Polls held 60 s: a change must wake them, or the wait below fails.
            async for item in client.watch_stream("", "", 1, wait_s=60.0):
                seen.append(item)
                if len(seen) == 2:
                    arrived.set()

        watcher = asyncio.create_task(follow())
        try:
            await client.put("apple", "1")      # shard s1
            await asyncio.sleep(0.3)            # the stream is now waiting on both shards
            await client.put("zebra", "2")      # shard s2
            await asyncio.wait_for(arrived.wait(), 30.0)
            return seen
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await client.close()

    try:
        seen = run(scenario(), deadline_s=60.0)
    finally:
        cluster.stop()
    assert sorted((group, c.key, c.value) for group, c in seen) == [("s1", "apple", "1"), ("s2", "zebra", "2")]
