"""Claims about whole groups, driven through the test pump."""

from __future__ import annotations

import pytest

from synod.codec.kernel import ErrorReply
from synod.core.ids import NodeId
from synod.paxos import kv
from synod.paxos.messages import (
    Accept,
    ChangeMembers,
    Command,
    CommandResult,
    Done,
    Read,
    ReadMode,
    ReadResult,
    TransferLeader,
)
from synod.paxos.replica import Role
from tests.paxos.pump import Cluster


def put(cluster: Cluster, node: NodeId, key: str, value: str, seq: int, client: str = "c1") -> int:
    return cluster.request(node, Command(client=client, seq=seq, seen_below=seq, op=kv.op_put(key, value)),
                           client=client)


def get(cluster: Cluster, node: NodeId, key: str, mode: ReadMode = ReadMode.LEASE) -> object:
    result = cluster.wait_result(cluster.request(node, Read(op=kv.op_get(key), mode=mode)))
    assert isinstance(result, ReadResult), result
    return kv.decode_result(result.result)


def assert_one_value_per_slot(cluster: Cluster) -> None:
    for slot, values in cluster.chosen_by_slot().items():
        assert len(values) == 1, f"slot {slot} has {len(values)} chosen values"


def converged(cluster: Cluster) -> bool:
    live = [r for n, r in cluster.replicas.items() if n not in cluster.down]
    return len({r.digest() for r in live}) == 1 and len({r.chosen_index for r in live}) == 1


def test_writes_are_pipelined_and_batched() -> None:
    cluster = Cluster(3)
    leader = cluster.wait_leader()
    ids = [put(cluster, leader, f"k{i}", str(i), seq=i + 1) for i in range(200)]
    for rid in ids:
        assert isinstance(cluster.wait_result(rid), CommandResult)
    stats = cluster.replicas[leader].statistics()
    assert stats.commands_applied == 200
    assert stats.slots_proposed < 100, "commands were batched, many per slot"


def test_a_value_once_chosen_is_never_changed_across_leader_crashes() -> None:
    cluster = Cluster(3, seed=3)
    seq = 0
    for _round in range(4):
        leader = cluster.wait_leader()
        for _ in range(10):
            seq += 1
            put(cluster, leader, f"k{seq % 3}", str(seq), seq)
        cluster.run(5)
        cluster.crash(leader)
        cluster.run(50)
        cluster.restart(leader)
        assert_one_value_per_slot(cluster)
    cluster.run(2000)
    assert_one_value_per_slot(cluster)
    cluster.run_until(lambda: converged(cluster))


def _leave_a_gap(cluster: Cluster) -> tuple[int, NodeId]:
    """Propose two commands, the first reaching nobody and the second one
    acceptor, then crash the leader: a gap only Phase 1 of the next leader can
    close. Returns the gap's slot and the acceptor that has the second."""
    leader = cluster.wait_leader()
    others = [n for n in cluster.nodes if n != leader]
    gap_slot = cluster.replicas[leader].next_slot

    def drop(source: NodeId, destination: NodeId, message: object) -> bool:
        if isinstance(message, Accept) and source == leader:
            slots = {e.slot for e in message.entries}
            if gap_slot in slots:
                return True
            if gap_slot + 1 in slots and destination != others[0]:
                return True
        return False

    cluster.drop = drop
    put(cluster, leader, "a", "1", 1)
    put(cluster, leader, "b", "2", 2)
    cluster.run(3)
    cluster.crash(leader)
    cluster.drop = lambda s, d, m: False
    return gap_slot, others[0]


def test_the_skip_gap_fill_mutant_stalls_the_new_leader() -> None:
    from synod.core.faults import enable_mutant
    from synod.paxos.replica import MUTANT_SKIP_GAP_FILL

    enable_mutant(MUTANT_SKIP_GAP_FILL)
    cluster = Cluster(3, seed=5)
    gap_slot, _holder = _leave_a_gap(cluster)
    cluster.run_until(lambda: cluster.leader() is not None)
    cluster.run(2000)
    new = cluster.leader()
    assert new is not None and cluster.replicas[new].chosen_index < gap_slot


def test_a_new_leader_fills_gaps_with_noops() -> None:
    cluster = Cluster(3, seed=5)
    leader = cluster.wait_leader()
    others = [n for n in cluster.nodes if n != leader]
    # Slot after the current prefix reaches nobody; the following one reaches
    # one acceptor: a gap that only Phase 1 of the next leader can close.
    gap_slot = cluster.replicas[leader].next_slot

    def drop(source: NodeId, destination: NodeId, message: object) -> bool:
        if isinstance(message, Accept) and source == leader:
            slots = {e.slot for e in message.entries}
            if gap_slot in slots:
                return True
            if gap_slot + 1 in slots and destination != others[0]:
                return True
        return False

    cluster.drop = drop
    put(cluster, leader, "a", "1", 1)
    put(cluster, leader, "b", "2", 2)
    cluster.run(3)
    cluster.crash(leader)
    cluster.drop = lambda s, d, m: False
    new = cluster.wait_leader()
    cluster.run_until(lambda: cluster.replicas[new].chosen_index > gap_slot + 1)
    replica = cluster.replicas[new]
    assert replica.log[gap_slot].value.kind.name == "NOOP"
    assert replica.log[gap_slot + 1].value.commands[0].op == kv.op_put("b", "2")
    assert get(cluster, new, "b") == "2" and get(cluster, new, "a") is None


def test_a_new_leader_serves_lease_reads_only_after_its_first_noop_is_applied() -> None:
    cluster = Cluster(3, seed=2)
    cluster.run_until(lambda: cluster.leader() is not None)
    leader = cluster.leader()
    assert leader is not None
    replica = cluster.replicas[leader]
    assert replica.barrier_slot > replica.chosen_index
    assert not replica.has_read_lease(cluster.local_ms(leader))
    rid = cluster.request(leader, Read(op=kv.op_get("x"), mode=ReadMode.LEASE))
    assert rid not in cluster.results, "no lease read before the barrier is applied"
    cluster.run_until(lambda: replica.chosen_index >= replica.barrier_slot)
    assert isinstance(cluster.wait_result(rid), ReadResult)
    assert replica.statistics().reads_quorum == 1


def test_the_lease_is_timed_from_the_send_and_shortened_by_the_drift_bound() -> None:
    cluster = Cluster(3, seed=4)
    leader = cluster.wait_leader()
    replica = cluster.replicas[leader]
    cluster.run(1)
    sent = max(replica._round_sent_ms.values())
    cluster.run(cluster.config.heartbeat_interval_ms / 2)
    expiry = replica.lease_expiry_ms()
    config = cluster.config
    assert expiry <= sent + config.lease_ms - config.clock_drift_bound_ms


def test_reads_in_every_mode() -> None:
    cluster = Cluster(3, seed=6)
    leader = cluster.wait_leader()
    cluster.wait_result(put(cluster, leader, "k", "v", 1))
    assert get(cluster, leader, "k", ReadMode.LEASE) == "v"
    assert get(cluster, leader, "k", ReadMode.QUORUM) == "v"
    follower = next(n for n in cluster.nodes if n != leader)
    cluster.run(100)
    assert get(cluster, follower, "k", ReadMode.STALE) == "v"
    refused = cluster.wait_result(cluster.request(follower, Read(op=kv.op_get("k"), mode=ReadMode.LEASE)))
    assert isinstance(refused, ErrorReply) and refused.code == "not_leader" and refused.hint == leader
    stats = cluster.replicas[leader].statistics()
    assert stats.reads_lease >= 1 and stats.reads_quorum >= 1


def test_a_quorum_read_needs_a_majority() -> None:
    cluster = Cluster(3, seed=6)
    leader = cluster.wait_leader()
    for other in cluster.nodes:
        if other != leader:
            cluster.blocked |= {(leader, other), (other, leader)}
    rid = cluster.request(leader, Read(op=kv.op_get("k"), mode=ReadMode.QUORUM))
    cluster.run(cluster.config.heartbeat_interval_ms * 3)
    assert rid not in cluster.results or isinstance(cluster.results[rid], ErrorReply)


def test_a_retried_command_applies_once_even_across_a_failover() -> None:
    cluster = Cluster(3, seed=7)
    leader = cluster.wait_leader()
    command = Command(client="c9", seq=1, seen_below=1, op=kv.op_cas("k", None, "first"))
    first = cluster.wait_result(cluster.request(leader, command, client="c9"))
    assert isinstance(first, CommandResult) and kv.decode_result(first.result) == (True, "first")
    cluster.wait_result(put(cluster, leader, "k", "second", 1, client="other"))
    cluster.crash(leader)
    new = cluster.wait_leader()
    retry = cluster.wait_result(cluster.request(new, command, client="c9"))
    assert isinstance(retry, CommandResult) and retry.result == first.result
    assert get(cluster, new, "k") == "second", "the retry was not applied again"


def test_commands_of_one_client_may_arrive_out_of_order() -> None:
    cluster = Cluster(3, seed=8)
    leader = cluster.wait_leader()
    for seq in (3, 1, 2):
        cluster.wait_result(cluster.request(leader, Command(client="c", seq=seq, seen_below=1,
                                                            op=kv.op_put(f"k{seq}", "v")), client="c"))
    again = cluster.wait_result(cluster.request(leader, Command(client="c", seq=1, seen_below=1,
                                                                op=kv.op_put("k1", "v")), client="c"))
    assert isinstance(again, CommandResult)
    assert cluster.replicas[leader].statistics().commands_applied == 3
    # seq 4 reports every answer below 4 seen: results 1-3 may be dropped, and a
    # late copy of seq 2 must not be applied again.
    cluster.wait_result(cluster.request(leader, Command(client="c", seq=4, seen_below=4,
                                                        op=kv.op_put("k4", "v")), client="c"))
    gone = cluster.wait_result(cluster.request(leader, Command(client="c", seq=2, seen_below=1,
                                                               op=kv.op_put("k2", "v")), client="c"))
    assert isinstance(gone, ErrorReply) and gone.code == "result_forgotten"


def test_a_client_command_over_the_size_limit_gets_a_typed_error() -> None:
    cluster = Cluster(3, seed=9)
    leader = cluster.wait_leader()
    big = Command(client="c", seq=1, seen_below=1, op=b"x" * (cluster.config.command_bytes_max + 1))
    result = cluster.wait_result(cluster.request(leader, big))
    assert isinstance(result, ErrorReply) and result.code == "too_large"
    assert cluster.replicas[leader].statistics().commands_applied == 0


def test_a_leader_that_cannot_reach_a_majority_steps_down() -> None:
    cluster = Cluster(3, seed=10)
    leader = cluster.wait_leader()
    for other in cluster.nodes:
        if other != leader:
            cluster.blocked |= {(leader, other), (other, leader)}
    cluster.run(cluster.config.check_quorum_ms * 2.5)
    assert cluster.replicas[leader].role is Role.FOLLOWER


def test_a_returning_partitioned_replica_does_not_disrupt_the_leader() -> None:
    cluster = Cluster(3, seed=11)
    leader = cluster.wait_leader()
    loner = next(n for n in cluster.nodes if n != leader)
    for other in cluster.nodes:
        if other != loner:
            cluster.blocked |= {(loner, other), (other, loner)}
    cluster.run(cluster.config.election_timeout_ms * 10)
    ballot_before = cluster.replicas[leader].promised
    cluster.blocked.clear()
    cluster.run(cluster.config.election_timeout_ms * 4)
    assert cluster.leader() == leader
    assert cluster.replicas[leader].promised == ballot_before
    assert cluster.replicas[loner].promised == ballot_before


def test_a_lagging_replica_catches_up_by_log_entries() -> None:
    cluster = Cluster(3, seed=12)
    leader = cluster.wait_leader()
    laggard = next(n for n in cluster.nodes if n != leader)
    cluster.crash(laggard)
    for seq in range(1, 11):
        cluster.wait_result(put(cluster, leader, f"k{seq}", "v", seq))
    cluster.restart(laggard)
    cluster.run_until(lambda: converged(cluster))
    assert cluster.replicas[laggard].statistics().snapshots_installed == 0


def test_a_lagging_replica_catches_up_by_snapshot_in_chunks() -> None:
    cluster = Cluster(3, seed=13)
    leader = cluster.wait_leader()
    laggard = next(n for n in cluster.nodes if n != leader)
    cluster.crash(laggard)
    interval = cluster.config.snapshot_interval_slots
    seq = 0
    while cluster.replicas[leader].snapshot_index < interval:
        seq += 1
        cluster.wait_result(put(cluster, leader, f"key-{seq % 50}", "v" * 40, seq))
    cluster.restart(laggard)
    cluster.run_until(lambda: converged(cluster))
    stats = cluster.replicas[laggard].statistics()
    assert stats.snapshots_installed >= 1 and stats.snapshot_index >= interval
    assert get(cluster, laggard, "key-1", ReadMode.STALE) == "v" * 40


def test_a_restarted_cluster_rebuilds_from_its_logs() -> None:
    cluster = Cluster(3, seed=14)
    leader = cluster.wait_leader()
    for seq in range(1, 60):
        cluster.wait_result(put(cluster, leader, f"k{seq % 7}", str(seq), seq))
    digest = cluster.replicas[leader].digest()
    for node in cluster.nodes:
        cluster.crash(node)
    for node in cluster.nodes:
        cluster.restart(node)
    new = cluster.wait_leader()
    cluster.run_until(lambda: converged(cluster))
    assert cluster.replicas[new].digest() == digest


def test_leader_transfer_hands_over_without_an_election_timeout() -> None:
    cluster = Cluster(3, seed=15)
    leader = cluster.wait_leader()
    target = next(n for n in cluster.nodes if n != leader)
    done = cluster.wait_result(cluster.request(leader, TransferLeader(to=target)))
    assert isinstance(done, Done)
    start = cluster.now_ms
    cluster.run_until(lambda: cluster.leader() == target, limit_ms=cluster.config.election_timeout_ms)
    assert cluster.now_ms - start < cluster.config.election_timeout_ms


def test_membership_change_adds_then_removes_a_replica_through_the_log() -> None:
    cluster = Cluster(4, seed=16, initial_members=3)
    n4 = NodeId("n4")
    leader = cluster.wait_leader()
    for seq in range(1, 6):
        cluster.wait_result(put(cluster, leader, f"k{seq}", "v", seq))
    busy_or_done = cluster.wait_result(cluster.request(leader, ChangeMembers(members=(*cluster.members, n4))))
    assert isinstance(busy_or_done, Done), busy_or_done
    two = cluster.wait_result(cluster.request(leader, ChangeMembers(members=cluster.members[:2])))
    assert isinstance(two, ErrorReply), "one change at a time"
    seq = 6
    # Push the log past alpha so the new member set governs.
    while cluster.replicas[leader].chosen_index < cluster.replicas[leader].members_history[-1][0] + 2:
        cluster.wait_result(put(cluster, leader, "fill", str(seq), seq))
        seq += 1
    cluster.run_until(lambda: converged(cluster))
    assert n4 in cluster.replicas[leader].statistics().members
    removed = next(n for n in cluster.members if n != leader)
    survivors = tuple(n for n in (*cluster.members, n4) if n != removed)
    assert isinstance(cluster.wait_result(cluster.request(leader, ChangeMembers(members=survivors))), Done)
    while cluster.replicas[leader].chosen_index < cluster.replicas[leader].members_history[-1][0] + 2:
        cluster.wait_result(put(cluster, leader, "fill", str(seq), seq))
        seq += 1
    cluster.crash(removed)
    # The remaining three still form a majority of the new set.
    cluster.wait_result(put(cluster, leader, "after", "x", seq))
    assert set(cluster.replicas[leader].statistics().members) == set(survivors)


@pytest.mark.parametrize("seed", range(20, 30))
def test_random_drops_never_choose_two_values(seed: int) -> None:
    cluster = Cluster(3, seed=seed)
    rng = cluster.rng
    cluster.drop = lambda s, d, m: rng.random() < 0.2
    for step in range(30):
        seq = step + 1
        target = cluster.nodes[step % 3]
        put(cluster, target, f"k{seq % 4}", str(seq), seq)
        cluster.run(rng.uniform(1, 60))
        if step % 10 == 9:
            victim = cluster.nodes[rng.randrange(3)]
            cluster.crash(victim)
            cluster.run(rng.uniform(10, 400))
            cluster.restart(victim)
        assert_one_value_per_slot(cluster)
    cluster.drop = lambda s, d, m: False
    cluster.run(3000)
    assert_one_value_per_slot(cluster)
    cluster.run_until(lambda: converged(cluster))
