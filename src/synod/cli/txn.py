"""``synod kv``: the sharded transactional key-value store from the command line.

    synod kv up --shards 2 --dir /tmp/kv          # 2 shards x 3 replicas on 127.0.0.1
    synod kv put --cluster /tmp/kv alice 100
    synod kv get --cluster /tmp/kv alice
    synod kv del --cluster /tmp/kv alice
    synod kv scan --cluster /tmp/kv a z
    synod kv txn --cluster /tmp/kv transfer.txt   # a script, run as ONE transaction
    synod kv watch --cluster /tmp/kv a z          # changes in [a, z) as they are applied
    synod kv map --cluster /tmp/nodes --publish   # a node cluster: store its shard map
                                                  # in the lock service, and print it

A ``kv txn`` script has one operation per line: ``get KEY``, ``put KEY VALUE``,
``del KEY``, ``scan START [END]``; ``#`` starts a comment. The whole script runs
in one serializable transaction, again from the top on a retryable conflict
(keeping its first timestamp); what it read is printed once it committed.

Where the shard map comes from: a cluster of whole nodes (``synod cluster up
--nodes``) runs a lock cell, and the map is read from it
(``/ls/<cell>/txn/shardmap``, see ``synod.txn.mapsource``) once ``kv map
--publish`` stored it there; until then, and for ``kv up`` clusters (shards
only, no lock cell), from the cluster file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeVar

import click

from synod.core.errors import ConfigError
from synod.core.ids import NodeId
from synod.lock.client import LockClient
from synod.lock.config import LockConfig
from synod.lock.errors import LockError, NotFoundError
from synod.runtime.config import RuntimeConfig
from synod.txn.client import Transaction, TxnClient
from synod.txn.errors import TxnError
from synod.txn.mapsource import LockShardMapSource, publish_shard_map
from synod.txn.node import LocalTxnCluster, shard_map_for
from synod.txn.shardmap import Shard, ShardMap, ShardMapSource, StaticShardMapSource, shard_map_path

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Cluster:
    """What the cluster file says: addresses, the client's credentials, the
    placement, and whether a lock cell runs (a cluster of whole nodes)."""

    nodes: dict[str, tuple[str, int]]
    user: str
    key: bytes
    shard_map: ShardMap
    has_cell: bool


def _read_cluster(cluster: Path) -> _Cluster:
    path = cluster / "cluster.json" if cluster.is_dir() else cluster
    try:
        spec = json.loads(path.read_text())
        nodes = {str(n): (str(a[0]), int(a[1])) for n, a in spec["nodes"].items()}
        key = Path(spec["user_key_file"]).read_text().strip().encode()
        if spec.get("shard_map"):
            # A cluster of whole nodes (`synod cluster up --nodes`) writes its placement.
            shard_map = ShardMap(version=1, shards=tuple(
                Shard(group=str(s["group"]), start=str(s["start"]), end=str(s["end"]),
                      replicas=tuple(NodeId(r) for r in s["replicas"]))
                for s in spec["shard_map"]))
        else:
            shard_map = shard_map_for(tuple(NodeId(n) for n in nodes), int(spec.get("replicas", 3)))
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as error:
        raise click.UsageError(f"cannot read cluster file {path}: {error}") from None
    return _Cluster(nodes=nodes, user=str(spec["user"]), key=key, shard_map=shard_map,
                    has_cell="node_layout" in spec)


def _lock_client(spec: _Cluster) -> LockClient:
    return LockClient(spec.nodes, principal=spec.user, key=spec.key, config=LockConfig.local(),
                      runtime=RuntimeConfig.local())


def _run(cluster: Path, action: Callable[[TxnClient], Awaitable[T]], cell: str = "local") -> T:
    spec = _read_cluster(cluster)

    async def with_source(source: ShardMapSource) -> T:
        client = TxnClient(source, spec.nodes, principal=spec.user, key=spec.key)
        try:
            return await action(client)
        finally:
            await client.close()

    async def main() -> T:
        if not spec.has_cell:
            return await with_source(StaticShardMapSource(spec.shard_map))
        async with _lock_client(spec) as lock:
            try:
                source: ShardMapSource = await LockShardMapSource.open(lock, shard_map_path(cell))
            except NotFoundError:
                source = StaticShardMapSource(spec.shard_map)   # not published yet
            return await with_source(source)
    try:
        return asyncio.run(main())
    except TxnError as error:
        key = f" (key {error.key!r})" if error.key else ""
        click.echo(f"error: {error.code}: {error.detail}{key}", err=True)
        sys.exit(1)
    except (LockError, ConfigError) as error:
        click.echo(f"error: shard map: {error}", err=True)
        sys.exit(1)


_cluster_option = click.option("--cluster", type=click.Path(path_type=Path), default=Path("synod-kv"),
                               show_default=True, help="The cluster's directory (or its cluster.json).")


@click.group("kv")
def kv_group() -> None:
    """The sharded key-value store with serializable transactions."""


@kv_group.command("up")
@click.option("--shards", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--replicas", type=click.IntRange(1, 5), default=3, show_default=True)
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=Path("synod-kv"), show_default=True)
def up(shards: int, replicas: int, workdir: Path) -> None:
    """Start SHARDS x REPLICAS shard replicas on 127.0.0.1 until interrupted."""
    cluster = LocalTxnCluster(workdir, shards=shards, replicas=replicas)
    cluster.start()
    for shard in cluster.shard_map.shards:
        members = ", ".join(f"{n}:{cluster.ports[n]}" for n in shard.replicas)
        click.echo(f"{shard.group} [{shard.start!r}, {shard.end!r}): {members}")
    click.echo(f"cluster file {workdir / 'cluster.json'}; Ctrl-C stops it")
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()


@kv_group.command("get")
@_cluster_option
@click.argument("key")
def get(cluster: Path, key: str) -> None:
    """Print KEY's value (nothing and status 1 if absent)."""
    value = _run(cluster, lambda c: c.get(key))
    if value is None:
        sys.exit(1)
    click.echo(value)


@kv_group.command("put")
@_cluster_option
@click.argument("key")
@click.argument("value")
def put(cluster: Path, key: str, value: str) -> None:
    """Set KEY to VALUE."""
    _run(cluster, lambda c: c.put(key, value))


@kv_group.command("del")
@_cluster_option
@click.argument("key")
def delete(cluster: Path, key: str) -> None:
    """Delete KEY."""
    _run(cluster, lambda c: c.delete(key))


@kv_group.command("scan")
@_cluster_option
@click.argument("start")
@click.argument("end", default="")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
def scan(cluster: Path, start: str, end: str, limit: int) -> None:
    """Print keys in [START, END) with their values."""
    for key, value in _run(cluster, lambda c: c.scan(start, end, limit)):
        click.echo(f"{key}\t{value}")


@kv_group.command("watch")
@_cluster_option
@click.argument("start")
@click.argument("end", default="")
@click.option("--from-revision", type=click.IntRange(1), default=1, show_default=True,
              help="Each shard's revision to start from (shards count their own).")
@click.option("--count", type=click.IntRange(0), default=0, help="Stop after this many changes (0: never).")
def watch(cluster: Path, start: str, end: str, from_revision: int, count: int) -> None:
    """Print changes to keys in [START, END) as they are applied: group, revision, key, value."""
    async def follow(client: TxnClient) -> None:
        printed = 0
        async for group, change in client.watch_stream(start, end, from_revision):
            value = "(deleted)" if change.value is None else change.value
            click.echo(f"{group}\t{change.revision}\t{change.key}\t{value}")
            printed += 1
            if count and printed >= count:
                return
    with contextlib.suppress(KeyboardInterrupt):
        _run(cluster, follow)


def parse_script(text: str) -> list[list[str]]:
    """The operations of a ``kv txn`` script; ``click.UsageError`` on a bad line."""
    operations = []
    for number, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        arity = {"get": (2,), "put": (3,), "del": (2,), "scan": (2, 3)}.get(words[0])
        if arity is None or len(words) not in arity:
            raise click.UsageError(f"line {number}: expected get KEY | put KEY VALUE | del KEY | scan START [END]")
        operations.append(words)
    return operations


@kv_group.command("txn")
@_cluster_option
@click.argument("script", type=click.File("r"))
def txn(cluster: Path, script: TextIO) -> None:
    """Run SCRIPT (a file, or - for stdin) as one transaction."""
    operations = parse_script(script.read())

    async def body(t: Transaction) -> list[str]:
        lines = []
        for words in operations:
            match words:
                case ["get", key]:
                    lines.append(f"{key}\t{await t.get(key)}")
                case ["put", key, value]:
                    t.put(key, value)
                case ["del", key]:
                    t.delete(key)
                case ["scan", start, *rest]:
                    for key, value in await t.scan(start, rest[0] if rest else ""):
                        lines.append(f"{key}\t{value}")
        return lines

    for line in _run(cluster, lambda c: c.run(body)):
        click.echo(line)
    click.echo("committed")


@kv_group.command("map")
@_cluster_option
@click.option("--cell", default="local", show_default=True, help="The lock cell holding the map.")
@click.option("--publish", is_flag=True, help="Store the cluster file's placement in the lock service first.")
def map_command(cluster: Path, cell: str, publish: bool) -> None:
    """Print the shard map kept in the lock service (a cluster of whole nodes)."""
    spec = _read_cluster(cluster)
    if not spec.has_cell:
        raise click.UsageError("this cluster runs no lock cell (kv up); its map is the cluster file's")
    path = shard_map_path(cell)

    async def main() -> bytes:
        async with _lock_client(spec) as lock:
            if publish:
                await publish_shard_map(lock, path, spec.shard_map)
            return (await lock.read(path, cache=False)).contents
    try:
        click.echo(asyncio.run(main()).decode())
    except NotFoundError:
        click.echo(f"error: no shard map at {path} (publish it with --publish)", err=True)
        sys.exit(1)
    except (LockError, ConfigError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(kv_group)
