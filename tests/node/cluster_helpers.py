"""Helpers for real-process node tests: status polling and clients."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from synod.lock.client import SyncLockClient
from synod.lock.config import LockConfig
from synod.node.groups import place_shards
from synod.node.local import LocalNodeCluster
from synod.runtime.config import RuntimeConfig
from synod.txn.client import SyncTxnClient
from synod.txn.shardmap import StaticShardMapSource


def get(cluster: LocalNodeCluster, node: str, path: str = "/status") -> bytes:
    with urllib.request.urlopen(f"http://{cluster.http(node)}{path}", timeout=5) as response:
        body: bytes = response.read()
        return body


def status(cluster: LocalNodeCluster, node: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(get(cluster, node))
    return result


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError, KeyError, ValueError) as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def leaders(cluster: LocalNodeCluster, node: str) -> dict[str, str] | None:
    """Group -> leader from ``node``'s cluster view, once every group of every
    reachable node has one."""
    groups = status(cluster, node)["cluster"]["groups"]
    table = {g["group"]: g["leader"] for g in groups}
    return table if table and all(table.values()) else None


def addresses(cluster: LocalNodeCluster) -> dict[str, tuple[str, int]]:
    return {n: (a["tcp"].rsplit(":", 1)[0], int(a["tcp"].rsplit(":", 1)[1])) for n, a in cluster.layout.items()}


def client_key(cluster: LocalNodeCluster) -> bytes:
    return (cluster.data_dir / "client.key").read_bytes().rstrip(b"\r\n")


def lock_client(cluster: LocalNodeCluster) -> SyncLockClient:
    return SyncLockClient(addresses(cluster), principal="client", key=client_key(cluster),
                          config=LockConfig.local(), runtime=RuntimeConfig.local())


def kv_client(cluster: LocalNodeCluster) -> SyncTxnClient:
    nodes = addresses(cluster)
    shard_map = place_shards(tuple(nodes), cluster.shards, 3)
    return SyncTxnClient(StaticShardMapSource(shard_map), nodes, principal="client", key=client_key(cluster),
                         runtime_config=RuntimeConfig.local())


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
