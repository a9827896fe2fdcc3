"""The shard map kept in the lock service, on real node processes (a lock cell and
two shards on three nodes): publish it, read it, and a client routing by a stale
map is told ``wrong_shard`` by the shard and refreshes from the lock service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.txn import kv_group
from synod.core.errors import ConfigError
from synod.lock.client import LockClient
from synod.lock.config import LockConfig
from synod.node.groups import place_shards
from synod.node.local import LocalNodeCluster
from synod.runtime.config import RuntimeConfig
from synod.txn.client import TxnClient
from synod.txn.mapsource import LockShardMapSource, publish_shard_map
from synod.txn.shardmap import Shard, ShardMap, shard_map_from_bytes, shard_map_path
from tests.node.cluster_helpers import addresses, client_key, leaders, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNodeCluster]:
    local = LocalNodeCluster(Path(tmp_path_factory.mktemp("mapsource")) / "cluster", 3, shards=2)
    try:
        local.start()
        wait_for("a leader in every group", lambda: leaders(local, "n1"))
        yield local
    finally:
        local.stop()


def test_a_client_with_a_stale_map_refreshes_it_from_the_lock_service(cluster: LocalNodeCluster) -> None:
    nodes = addresses(cluster)
    key = client_key(cluster)
    real = place_shards(tuple(nodes), 2, 3)
    placed = ShardMap(version=2, shards=real.shards)
    # Version 1: one shard over every key -- what the map was before a split.
    stale = ShardMap(version=1, shards=(Shard(group="s1", start="", end="", replicas=real.shards[0].replicas),))
    path = "/ls/local/test/shardmap"   # the cell's real map file is the CLI test's

    async def scenario() -> None:
        async with LockClient(nodes, principal="client", key=key, config=LockConfig.local(),
                              runtime=RuntimeConfig.local()) as lock:
            await publish_shard_map(lock, path, stale)
            source = await LockShardMapSource.open(lock, path)
            assert source.current() == stale
            await publish_shard_map(lock, path, placed)
            await publish_shard_map(lock, path, placed)          # the same map again: nothing to do
            with pytest.raises(ConfigError):
                await publish_shard_map(lock, path, stale)       # versions only grow
            client = TxnClient(source, nodes, principal="client", key=key, runtime_config=RuntimeConfig.local())
            try:
                # "zebra" belongs to s2; the stale map sends it to s1, which
                # answers wrong_shard; the client re-reads the map and retries.
                await client.put("zebra", "1")
                assert source.refreshes == 1 and client.shard_map == placed
                assert await client.get("zebra") == "1"
            finally:
                await client.close()

    asyncio.run(scenario())


def test_kv_map_publishes_the_placement_and_kv_commands_route_by_it(cluster: LocalNodeCluster) -> None:
    runner = CliRunner()
    directory = str(cluster.data_dir)
    missing = runner.invoke(kv_group, ["map", "--cluster", directory])
    assert missing.exit_code == 1 and "--publish" in missing.output
    published = runner.invoke(kv_group, ["map", "--cluster", directory, "--publish"])
    assert published.exit_code == 0, published.output
    assert shard_map_from_bytes(published.output.encode()) == place_shards(tuple(addresses(cluster)), 2, 3)
    async def stored() -> bytes:
        async with LockClient(addresses(cluster), principal="client", key=client_key(cluster),
                              config=LockConfig.local(), runtime=RuntimeConfig.local()) as lock:
            return (await lock.read(shard_map_path("local"))).contents
    assert shard_map_from_bytes(asyncio.run(stored())).version == 1
    assert runner.invoke(kv_group, ["put", "--cluster", directory, "yak", "9"]).exit_code == 0
    got = runner.invoke(kv_group, ["get", "--cluster", directory, "yak"])
    assert (got.exit_code, got.output) == (0, "9\n")


def test_concurrent_commits_on_node_processes_all_land(cluster: LocalNodeCluster) -> None:
    """Commits issued at once leave as one TxnBatch; a node router that does not
    take batches answers bad_request and the client sends them one by one."""
    nodes = addresses(cluster)
    shard_map = place_shards(tuple(nodes), 2, 3)

    async def scenario() -> list[str | None]:
        from synod.txn.shardmap import StaticShardMapSource

        client = TxnClient(StaticShardMapSource(shard_map), nodes, principal="client", key=client_key(cluster),
                           runtime_config=RuntimeConfig.local())
        try:
            await client.put("warmup", "0")      # connect to s1's leader first
            await asyncio.gather(*(client.put(f"batch{i}", str(i)) for i in range(8)))
            return [await client.get(f"batch{i}") for i in range(8)]
        finally:
            await client.close()

    assert asyncio.run(scenario()) == [str(i) for i in range(8)]
