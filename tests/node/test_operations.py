"""Operations on real node processes on 127.0.0.1: backup and restore,
force-new-cluster, learners and membership changes (``synod member``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from synod.lock.errors import LockError
from synod.node.backup import read_backup
from synod.node.local import LocalNodeCluster
from tests.node.cluster_helpers import kv_client, leaders, lock_client, status, wait_for


def synod(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the ``synod`` command (a real process, as an operator would)."""
    return subprocess.run([sys.executable, "-m", "synod", *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def group_of(cluster: LocalNodeCluster, node: str, name: str) -> dict[str, Any] | None:
    return next((g for g in status(cluster, node)["groups"] if g["group"] == name), None)


def caught_up(cluster: LocalNodeCluster, watcher: str, node: str) -> bool:
    """Every group of ``watcher``'s cluster view has ``node`` at lag 0."""
    groups = status(cluster, watcher)["cluster"]["groups"]
    return bool(groups) and all(g["leader"] and node in g["replicas"] and g["replicas"][node]["lag"] == 0
                                for g in groups)


def read_cell(cluster: LocalNodeCluster, path: str) -> bytes | None:
    with lock_client(cluster) as locks:
        try:
            content: bytes = locks.read(path, cache=False).contents
            return content
        except LockError:
            return None


def test_backup_restore_and_force_new_cluster(tmp_path: Path) -> None:
    cluster = LocalNodeCluster(tmp_path / "old", 3, shards=1)
    try:
        cluster.start()
        wait_for("a leader in every group", lambda: leaders(cluster, "n1"))
        with lock_client(cluster) as locks:
            locks.create("/ls/local/config", b"version 1")
        kv = kv_client(cluster)
        try:
            kv.put("apple", "100")
        finally:
            kv.close()
        wait_for("n3 caught up", lambda: caught_up(cluster, "n1", "n3"))

        # Online backup of a running node, consistent at one instant.
        online_file = tmp_path / "n1.backup"
        done = synod("backup", "--node", "n1", "--data", str(cluster.data_dir), "-o", str(online_file))
        assert done.returncode == 0, done.stderr
        online = read_backup(online_file)
        assert online.node == "n1" and {g.group for g in online.groups} == {"lock", "s1"}

        # Backup: of a stopped node (the other two keep the cluster running).

        assert cluster.stop_node("n3") == 0
        backup_file = tmp_path / "n3.backup"
        done = synod("backup", "--config", str(cluster.config_path("n3")), "-o", str(backup_file))
        assert done.returncode == 0, done.stderr
        taken = read_backup(backup_file)
        assert {g.group for g in taken.groups} == {"lock", "s1"}
        assert all(g.members == ("n1", "n2", "n3") for g in taken.groups)
        # A running node's data directory is refused.
        refused = synod("backup", "--config", str(cluster.config_path("n1")), "-o", str(tmp_path / "x"))
        assert refused.returncode != 0 and "in use" in refused.stderr
        cluster.restart("n3")

        # Restore into a new, one-node cluster: the data is there, and it serves.
        fresh = LocalNodeCluster(tmp_path / "new", 1, shards=1)
        try:
            fresh.init()
            done = synod("restore", str(backup_file), "--config", str(fresh.config_path("n1")))
            assert done.returncode == 0, done.stderr
            again = synod("restore", str(backup_file), "--config", str(fresh.config_path("n1")))
            assert again.returncode != 0 and "not empty" in again.stderr
            fresh.start()
            wait_for("the restored node leads", lambda: leaders(fresh, "n1"))
            assert read_cell(fresh, "/ls/local/config") == b"version 1"
            kv = kv_client(fresh)
            try:
                assert kv.get("apple") == "100"
                kv.put("apple", "101")
                assert kv.get("apple") == "101"
            finally:
                kv.close()
            assert group_of(fresh, "n1", "lock")["members"] == ["n1"]  # type: ignore[index]
        finally:
            fresh.stop()
        # The online backup restores the same way.
        other = LocalNodeCluster(tmp_path / "other", 1, shards=1)
        try:
            other.init()
            done = synod("restore", str(online_file), "--config", str(other.config_path("n1")))
            assert done.returncode == 0, done.stderr
            other.start()
            wait_for("the restored node leads", lambda: leaders(other, "n1"))
            kv = kv_client(other)
            try:
                assert kv.get("apple") == "100"
            finally:
                kv.close()
        finally:
            other.stop()

        # Disaster: two of three nodes lost. Acknowledged writes first.
        wait_for("n3 back and caught up", lambda: caught_up(cluster, "n1", "n3"))
        kv = kv_client(cluster)
        try:
            kv.put("apple", "200")
        finally:
            kv.close()
        with lock_client(cluster) as locks:
            locks.write("/ls/local/config", b"version 2")
        wait_for("n3 caught up again", lambda: caught_up(cluster, "n1", "n3"))
        cluster.kill("n1")
        cluster.kill("n2")
        cluster.stop_node("n3")
        done = synod("member", "force-new-cluster", "--config", str(cluster.config_path("n3")), "--yes")
        assert done.returncode == 0, done.stderr
        assert list((cluster.data_dir / "n3").glob("wal.before-force-new-cluster-*"))
        cluster.restart("n3")
        wait_for("n3 leads every group alone", lambda: (g := group_of(cluster, "n3", "lock")) and
                 g["role"] == "leader" and g["members"] == ["n3"] and
                 group_of(cluster, "n3", "s1")["role"] == "leader")  # type: ignore[index]
        assert read_cell(cluster, "/ls/local/config") == b"version 2"
        kv = kv_client(cluster)
        try:
            assert kv.get("apple") == "200"
            kv.put("apple", "201")
            assert kv.get("apple") == "201"
        finally:
            kv.close()
    finally:
        cluster.stop()


@pytest.mark.parametrize("shards", [0])
def test_a_learner_catches_up_is_added_votes_and_a_member_is_removed(tmp_path: Path, shards: int) -> None:
    cluster = LocalNodeCluster(tmp_path / "c", 3, shards=shards)
    data = str(cluster.data_dir)
    try:
        cluster.start()
        wait_for("a cell leader", lambda: leaders(cluster, "n1"))
        with lock_client(cluster) as locks:
            for i in range(20):
                locks.create(f"/ls/local/f{i}", str(i).encode())

        # A new node joins as a learner: it receives the log, it does not vote.
        cluster.add_node("n4")

        def learner_caught_up() -> bool:
            mine, leader = group_of(cluster, "n4", "lock"), wait_for("leader", lambda: leaders(cluster, "n1"))
            theirs = group_of(cluster, leader["lock"], "lock")
            return (mine is not None and theirs is not None and mine["members"] == ["n1", "n2", "n3"]
                    and mine["chosen_index"] >= theirs["chosen_index"] > 0)
        wait_for("n4's learner replica caught up", learner_caught_up)
        listed = synod("member", "list", "--data", data)
        assert listed.returncode == 0, listed.stderr
        assert "n4=learner" in listed.stdout

        added = synod("member", "add", "n4", "--data", data)
        assert added.returncode == 0, added.stderr + added.stdout
        wait_for("n4 a member everywhere", lambda: all(
            group_of(cluster, n, "lock")["members"] == ["n1", "n2", "n3", "n4"]  # type: ignore[index]
            for n in ("n1", "n2", "n3", "n4")))

        removed = synod("member", "remove", "n1", "--data", data)
        assert removed.returncode == 0, removed.stderr + removed.stdout
        wait_for("n1 removed", lambda: group_of(cluster, "n4", "lock")["members"] == ["n2", "n3", "n4"])  # type: ignore[index]
        cluster.stop_node("n1")
        # n2, n3, n4 are the members: with n2 gone too, only n3 and n4 make a
        # majority, so the cell serves only if the added learner votes.
        cluster.kill("n2")
        with lock_client(cluster) as locks:
            locks.create("/ls/local/after", b"n3 and n4")
        assert read_cell(cluster, "/ls/local/f7") == b"7"
        assert read_cell(cluster, "/ls/local/after") == b"n3 and n4"
    finally:
        cluster.stop()
