from __future__ import annotations

from synod.paxos import kv
from synod.paxos.messages import Command, CommandResult, Read, ReadMode, ReadResult
from tests.paxos.pump import Cluster


def test_a_leader_is_elected_and_serves_writes_and_reads() -> None:
    cluster = Cluster(3)
    leader = cluster.wait_leader()
    rid = cluster.request(leader, Command(client="c1", seq=1, seen_below=1, op=kv.op_put("k", "v")))
    result = cluster.wait_result(rid)
    assert isinstance(result, CommandResult)
    rid = cluster.request(leader, Read(op=kv.op_get("k"), mode=ReadMode.LEASE))
    read = cluster.wait_result(rid)
    assert isinstance(read, ReadResult) and kv.decode_result(read.result) == "v"
    cluster.run(500)
    digests = {r.digest() for r in cluster.replicas.values()}
    assert len(digests) == 1
