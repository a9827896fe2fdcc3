"""Claims about learners and membership changes in the Paxos core, driven
through the Paxos tests' pump (virtual time): what ``synod member`` relies on."""

from __future__ import annotations

from synod.core.ids import NodeId
from synod.paxos import kv
from synod.paxos.messages import ChangeMembers, Command, CommandResult, Done
from tests.paxos.pump import Cluster

N4 = NodeId("n4")


def put(cluster: Cluster, node: NodeId, key: str, seq: int) -> int:
    return cluster.request(node, Command(client="c1", seq=seq, seen_below=seq, op=kv.op_put(key, str(seq))))


def test_a_learner_receives_the_log_and_never_votes() -> None:
    cluster = Cluster(4, seed=41, initial_members=3)
    leader = cluster.wait_leader()
    for seq in range(1, 30):
        assert isinstance(cluster.wait_result(put(cluster, leader, f"k{seq % 5}", seq)), CommandResult)
    learner = cluster.replicas[N4]
    cluster.run_until(lambda: learner.chosen_index == cluster.replicas[leader].chosen_index)
    assert learner.digest() == cluster.replicas[leader].digest()
    assert N4 not in cluster.replicas[leader].statistics().members
    assert learner.statistics().leaderships == 0 and learner.statistics().elections_started == 0
    # With two of the three members gone, the learner does not make a quorum.
    others = [n for n in cluster.members if n != leader]
    cluster.crash(others[0])
    cluster.crash(others[1])
    request = put(cluster, leader, "stuck", 100)
    cluster.run(3 * cluster.config.election_timeout_ms)
    assert not isinstance(cluster.results.get(request), CommandResult)  # none, or a refusal
    assert learner.statistics().leaderships == 0


def test_a_membership_change_takes_effect_with_no_further_writes() -> None:
    cluster = Cluster(4, seed=42, initial_members=3)
    leader = cluster.wait_leader()
    assert isinstance(cluster.wait_result(put(cluster, leader, "a", 1)), CommandResult)
    done = cluster.wait_result(cluster.request(leader, ChangeMembers(members=(*cluster.members, N4))))
    assert isinstance(done, Done), done
    # No client writes: the leader itself fills the slots up to the change.
    cluster.run_until(lambda: all(N4 in cluster.replicas[n].statistics().members for n in cluster.nodes))
    # A second change is accepted at once (the first is in effect).
    removed = next(n for n in cluster.members if n != leader)
    rest = tuple(n for n in (*cluster.members, N4) if n != removed)
    assert isinstance(cluster.wait_result(cluster.request(leader, ChangeMembers(members=rest))), Done)
    cluster.run_until(lambda: removed not in cluster.replicas[leader].statistics().members)
    # The removed replica goes on as a learner: it still receives the log.
    assert isinstance(cluster.wait_result(put(cluster, leader, "b", 2)), CommandResult)
    cluster.run_until(lambda: cluster.replicas[removed].chosen_index == cluster.replicas[leader].chosen_index)
