"""A node's one write-ahead log is compacted (real processes on 127.0.0.1): once
a group takes a snapshot, the node saves a snapshot of every group's state and
the log is cut below it; after kill -9 the node recovers every write from the
snapshot and the records after it."""

from __future__ import annotations

from pathlib import Path

from synod.node.local import LocalNodeCluster
from synod.storage.snapshot_log import SNAPSHOT_DIRECTORY
from tests.node.cluster_helpers import kv_client, leaders, lock_client, wait_for

#: More writes than ``node_paxos_config("local").snapshot_interval_slots``: one
#: write is at least one slot of shard s1, so s1 takes a snapshot.
WRITES = 1100


def test_the_node_log_is_compacted_and_recovers_after_kill_9(tmp_path: Path) -> None:
    cluster = LocalNodeCluster(tmp_path / "c", 1, shards=1)
    try:
        cluster.start()
        wait_for("a leader in every group", lambda: leaders(cluster, "n1"))
        with lock_client(cluster) as locks:
            locks.create("/ls/local/config", b"kept")
        snapshots = cluster.data_dir / "n1" / SNAPSHOT_DIRECTORY
        kv = kv_client(cluster)
        try:
            for i in range(WRITES):
                kv.put(f"key{i:05d}", str(i))
        finally:
            kv.close()
        wait_for("a compacted snapshot", lambda: snapshots.is_dir() and any(snapshots.iterdir()))

        cluster.kill("n1")
        cluster.restart("n1")
        wait_for("a leader again", lambda: leaders(cluster, "n1"))
        kv = kv_client(cluster)
        try:
            assert [kv.get(f"key{i:05d}") for i in (0, 1, WRITES // 2, WRITES - 1)] == \
                ["0", "1", str(WRITES // 2), str(WRITES - 1)]
            kv.put("after", "restart")
            assert kv.get("after") == "restart"
        finally:
            kv.close()
        with lock_client(cluster) as locks:
            assert locks.read("/ls/local/config", cache=False).contents == b"kept"
    finally:
        cluster.stop()
