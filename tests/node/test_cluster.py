"""Three real node processes on 127.0.0.1: services, status, crash, graceful stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from synod.node.local import LocalNodeCluster
from synod.txn.client import Transaction
from tests.node.cluster_helpers import (
    get,
    kv_client,
    leaders,
    lock_client,
    process_gone,
    status,
    wait_for,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNodeCluster]:
    """One cluster for the module (starting three processes is the slow part); the
    tests run in file order, the last one stops it."""
    local = LocalNodeCluster(Path(tmp_path_factory.mktemp("nodes")) / "cluster", 3, shards=2)
    try:
        local.start()
        yield local
    finally:
        local.stop()


async def transfer(t: Transaction) -> None:
    a, z = await t.get("apple"), await t.get("zebra")
    assert a is not None and z is not None
    t.put("apple", str(int(a) - 30))
    t.put("zebra", str(int(z) + 30))


def test_nodes_serve_the_cell_and_the_shards_and_report_them(cluster: LocalNodeCluster) -> None:
    table = wait_for("a leader in every group", lambda: leaders(cluster, "n1"))
    assert set(table) == {"lock", "s1", "s2"}
    with lock_client(cluster) as locks:
        locks.create("/ls/local/job", b"x")
        sequencer = locks.acquire("/ls/local/job")
        assert sequencer.path == "/ls/local/job"
        # The cell's master, asked until one answers as master: the leader in
        # the table above may have lost its place since (under load it did once).
        def master_cell() -> dict[str, Any] | None:
            for node in cluster.layout:
                cell: dict[str, Any] = status(cluster, node)["lock"]
                if cell["role"] == "master":
                    return cell
            return None

        cell = wait_for("a lock master", master_cell)
        assert {"path": "/ls/local/job", "holders": [cell["sessions"][0]["session"]]} in cell["held_locks"]
    kv = kv_client(cluster)
    try:
        kv.put("apple", "100")    # shard s1
        kv.put("zebra", "0")      # shard s2
        kv.run(transfer)          # a cross-shard transaction: 2PC between groups
        assert (kv.get("apple"), kv.get("zebra")) == ("70", "30")
    finally:
        kv.close()
    # On a loaded machine a probe can time out and a member be suspected for a
    # moment (then refute): wait for the settled view rather than read it once.
    wait_for("every member alive at n2", lambda: {
        m["node"]: m["status"] for m in status(cluster, "n2")["members"]} == {"n1": "alive", "n2": "alive", "n3": "alive"})
    view = status(cluster, "n2")
    for group in view["cluster"]["groups"]:
        assert set(group["replicas"]) == {"n1", "n2", "n3"}
        assert all(r["lag"] >= 0 for r in group["replicas"].values())
    metrics = get(cluster, "n3", "/metrics").decode()
    members = {family.name: {s.labels["state"]: s.value for s in family.samples}
               for family in text_string_to_metric_families(metrics) if family.name == "synod_gossip_members"}
    assert members["synod_gossip_members"]["alive"] + members["synod_gossip_members"]["suspect"] == 3
    assert members["synod_gossip_members"]["dead"] == 0
    assert 'synod_paxos_chosen_index{group="s1",node="n3"}' in metrics


def test_a_killed_node_is_seen_failed_and_recovers_its_data(cluster: LocalNodeCluster) -> None:
    table = wait_for("a leader in every group", lambda: leaders(cluster, "n1"))
    kv = kv_client(cluster)
    try:
        kv.put("apple", "1")  # overwrites the first test's value
        victim = table["s1"]
        watcher = next(n for n in ("n1", "n2", "n3") if n != victim)
        cluster.kill(victim)
        wait_for(f"{victim} suspected or dead at {watcher}", lambda: {
            m["node"]: m["status"] for m in status(cluster, watcher)["members"]}[victim] in ("suspect", "dead"))
        assert kv.get("apple") == "1"      # s1 elected another leader
        kv.put("apple", "2")
        cluster.restart(victim)
        wait_for(f"{victim} alive again", lambda: {
            m["node"]: m["status"] for m in status(cluster, watcher)["members"]}[victim] == "alive")

        def caught_up() -> bool:
            groups = status(cluster, watcher)["cluster"]["groups"]
            s1 = next(g for g in groups if g["group"] == "s1")
            return victim in s1["replicas"] and s1["replicas"][victim]["lag"] == 0 and s1["chosen_index"] > 0
        wait_for(f"{victim}'s s1 replica caught up", caught_up)
        assert kv.get("apple") == "2"
    finally:
        kv.close()


def test_graceful_stop_hands_over_leadership_leaves_and_leaves_no_process(cluster: LocalNodeCluster) -> None:
    table = wait_for("a leader in every group", lambda: leaders(cluster, "n1"))
    master = table["lock"]
    pids = {node: cluster.pid(node) for node in ("n1", "n2", "n3")}
    assert cluster.stop_node(master) == 0
    other = next(n for n in ("n1", "n2", "n3") if n != master)
    # the leave spreads by gossip: left (a graceful exit), never dead
    def verdict() -> str | None:
        state = {m["node"]: m["status"] for m in status(cluster, other)["members"]}[master]
        return state if state in ("left", "dead") else None
    assert wait_for(f"{master} seen left or dead at {other}", verdict, timeout_s=20) == "left"
    # The survivors' views name the old master until they hear from the new one.
    new = wait_for("a new cell leader", lambda: (table := leaders(cluster, other)) and
                   table["lock"] != master and table)
    assert new["lock"] != master
    codes = cluster.stop()
    assert set(codes.values()) == {0}
    assert all(process_gone(pid) for pid in pids.values())
