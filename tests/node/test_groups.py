"""Placement of shards and the NodeMux's routing (real cores, no network)."""

from __future__ import annotations

import random

from synod.codec.kernel import ClientRequest, ErrorReply, Routed
from synod.core.effects import ClientResult, Recovered, Send
from synod.core.ids import NodeId
from synod.lock.config import LockConfig
from synod.lock.messages import KeepAlive
from synod.node.groups import LOCK_GROUP, NodeCoreFactory, NodeMux, NodeShardServer, place_shards
from synod.paxos.config import PaxosConfig
from synod.paxos.messages import Read
from synod.paxos.server import StatusQuery
from synod.txn.config import TxnConfig
from synod.txn.messages import DecisionQuery, Part, TxnBatch, TxnCommit, TxnGet, TxnScan, WatchWait

NODES = tuple(NodeId(f"n{i}") for i in (1, 2, 3, 10))


def test_every_node_computes_the_same_placement_and_shards_spread() -> None:
    a = place_shards(NODES, 4, 3)
    b = place_shards(tuple(reversed(NODES)), 4, 3)
    assert a == b
    assert [s.replicas for s in a.shards] == [
        ("n1", "n2", "n3"), ("n2", "n3", "n10"), ("n3", "n10", "n1"), ("n10", "n1", "n2")]
    # the key space is covered once, in order
    assert a.shards[0].start == "" and a.shards[-1].end == ""
    assert all(x.end == y.start for x, y in zip(a.shards, a.shards[1:], strict=False))


def test_replicas_are_capped_by_the_node_count() -> None:
    shard_map = place_shards((NodeId("n1"),), 2, 3)
    assert [s.replicas for s in shard_map.shards] == [("n1",), ("n1",)]


def mux(node: str = "n1", shards: int = 2) -> NodeMux:
    members = tuple(NodeId(n) for n in ("n1", "n2", "n3"))
    factory = NodeCoreFactory(members=members, shard_map=place_shards(members, shards, 3),
                              paxos=PaxosConfig.local(), lock=LockConfig.local(), txn=TxnConfig.local())
    built = factory(NodeId(node), random.Random(7))
    built.start(0.0, Recovered())
    return built


def test_group_less_client_bodies_go_to_their_group() -> None:
    node = mux()
    assert set(node.children) == {LOCK_GROUP, "s1", "s2"}
    assert isinstance(node.children["s1"], NodeShardServer)
    assert node.group_of(StatusQuery()) == LOCK_GROUP
    assert node.group_of(KeepAlive(session=1, epoch=0)) == LOCK_GROUP
    assert node.group_of(TxnGet(txn="t", ts=1, key="apple")) == "s1"
    assert node.group_of(TxnGet(txn="t", ts=1, key="zebra")) == "s2"
    assert node.group_of(TxnScan(txn="t", ts=1, start="q", end="r", limit=1)) == "s2"
    parts = (Part(group="s2"), Part(group="s1"))
    assert node.group_of(TxnCommit(txn="t", ts=1, parts=parts)) == "s2"
    batch = TxnBatch(items=(TxnCommit(txn="t", ts=1, parts=(Part(group="s1"),)),
                            TxnCommit(txn="u", ts=2, parts=(Part(group="s1"),))))
    assert node.group_of(batch) == "s1"
    assert node.group_of(WatchWait(start="zebra", end="zz", from_revision=1, wait_ms=10.0)) == "s2"
    assert node.group_of(TxnBatch(items=())) is None


def test_a_body_with_no_group_is_refused_with_a_typed_error() -> None:
    node = mux()
    effects = node.on_message(1.0, NodeId("client#1"), ClientRequest(request_id=5, body=Read(op=b"x")))
    assert effects == [ClientResult(client=NodeId("client#1"), request_id=5, result=ErrorReply(
        code="bad_request", detail="this node serves no group for Read"))]
    assert node.dropped["request with no group here"] == 1


def test_a_status_query_reaches_the_lock_replica() -> None:
    node = mux()
    effects = node.on_message(1.0, NodeId("client#1"), ClientRequest(request_id=3, body=StatusQuery()))
    [result] = [e for e in effects if isinstance(e, ClientResult)]
    assert result.request_id == 3 and result.result.node == "n1"  # type: ignore[attr-defined]


def test_messages_to_another_shard_name_their_target_group() -> None:
    node = mux()
    shard = node.children["s1"]
    assert isinstance(shard, NodeShardServer)
    out: list[object] = []
    shard._send_group("s2", DecisionQuery(txn="t", group="s1"), out)  # type: ignore[arg-type]
    assert {e.to for e in out if isinstance(e, Send)} == {"n1", "n2", "n3"}
    assert all(isinstance(e, Send) and e.message == Routed(group="s2", body=DecisionQuery(txn="t", group="s1"))
               for e in out)
    # on the wire the mux adds the sender's group; the receiving mux unwraps to s2
    wrapped = Routed(group="s1", body=Routed(group="s2", body=DecisionQuery(txn="t", group="s1")))
    before = node.children["s2"].statistics().counts  # type: ignore[attr-defined]
    node.on_message(2.0, NodeId("n2"), wrapped)
    after = node.children["s2"].statistics().counts  # type: ignore[attr-defined]
    assert dict(after).get("peer_not_leader", 0) == dict(before).get("peer_not_leader", 0) + 1
    assert node.dropped["message for unknown group"] == 0
    node.on_message(2.0, NodeId("n2"), Routed(group="s1", body=Routed(group="s9", body=DecisionQuery(
        txn="t", group="s1"))))
    assert node.dropped["message for unknown group"] == 1


def test_a_joining_node_starts_every_replica_as_a_learner() -> None:
    members = tuple(NodeId(n) for n in ("n1", "n2", "n3"))
    factory = NodeCoreFactory(members=members, shard_map=place_shards(members, 2, 3), paxos=PaxosConfig.local(),
                              lock=LockConfig.local(), txn=TxnConfig.local(), learner=True)
    joined = factory(NodeId("n2"), random.Random(1))
    for child in joined.children.values():
        replica = getattr(child, "replica")  # noqa: B009 - every child here has one
        assert replica.members_history == [(1, (NodeId("n1"), NodeId("n3")))]
    # without the flag the node votes in every group it hosts
    plain = NodeCoreFactory(members=members, shard_map=place_shards(members, 2, 3), paxos=PaxosConfig.local(),
                            lock=LockConfig.local(), txn=TxnConfig.local())(NodeId("n2"), random.Random(1))
    assert all(NodeId("n2") in getattr(c, "replica").members_history[0][1]  # noqa: B009
               for c in plain.children.values())


def test_an_online_backup_is_for_backup_principals_only_and_comes_in_pieces() -> None:
    from synod.node.backup import decode_backup_body
    from synod.node.messages import BackupPiece, BackupQuery

    node = mux()
    node.backup_principals = ("admin",)
    refused = node.on_message(0.0, NodeId("client#1"), ClientRequest(request_id=1, body=BackupQuery()))
    assert isinstance(refused[0], ClientResult) and isinstance(refused[0].result, ErrorReply)
    assert refused[0].result.code == "permission_denied"
    first = node.on_message(0.0, NodeId("admin#2"), ClientRequest(request_id=2, body=BackupQuery()))
    piece = first[0].result  # type: ignore[union-attr]
    assert isinstance(piece, BackupPiece) and piece.piece_count == 1
    taken = decode_backup_body(piece.data, "test")
    assert [g.group for g in taken.groups] == ["lock", "s1", "s2"]
    assert all(g.members == ("n1", "n2", "n3") for g in taken.groups)
    # A newer backup replaces the frozen one: the old id is gone.
    node.on_message(0.0, NodeId("admin#2"), ClientRequest(request_id=3, body=BackupQuery()))
    gone = node.on_message(0.0, NodeId("admin#2"), ClientRequest(
        request_id=4, body=BackupQuery(snapshot_id=piece.snapshot_id, piece=0)))
    assert isinstance(gone[0], ClientResult) and isinstance(gone[0].result, ErrorReply)
    assert gone[0].result.code == "snapshot_gone"
