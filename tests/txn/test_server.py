"""Shard servers driven by hand: the fast path, 2PC across shards, conflicts,
bad input (typed errors, nothing partially applied), and failover."""

from __future__ import annotations

import dataclasses

from synod.codec.kernel import ErrorReply
from synod.core.effects import Send
from synod.core.ids import NodeId
from synod.paxos.messages import Ballot
from synod.txn.config import TxnConfig
from synod.txn.messages import (
    DecisionQuery,
    Part,
    TxnBatch,
    TxnBatchReply,
    TxnCommit,
    TxnGet,
    TxnOutcome,
    TxnRelease,
    TxnRows,
    TxnScan,
    TxnValue,
    Vote,
    WatchEvents,
    WatchWait,
    Write,
)
from tests.txn.harness import Shards

# uniform_map(2, 3): s1 holds keys below "n" (n1..n3), s2 the rest (n4..n6).


def values(shards: Shards, group: str) -> list[dict[str, str]]:
    return [s.machine.items() for s in shards.servers(group)]


def read(shards: Shards, group: str, txn: str, ts: int, key: str, to: NodeId | None = None) -> tuple[Ballot, ...]:
    """Read ``key`` in ``txn``; the ballot it was served under, for the commit's part."""
    reply = shards.ask(group, TxnGet(txn=txn, ts=ts, key=key), to=to)
    assert isinstance(reply, TxnValue) and reply.ballot is not None
    return (reply.ballot,)


def test_single_shard_fast_path_commits_without_a_transaction_record() -> None:
    shards = Shards()
    served = read(shards, "s1", "t1", 1, "apple")
    outcome = shards.ask("s1", TxnCommit(txn="t1", ts=1, parts=(
        Part(group="s1", read_keys=("apple",), writes=(Write(key="apple", value="red"),), read_ballots=served),)))
    assert outcome == TxnOutcome(txn="t1", committed=True)
    shards.sim.run_for(100.0)
    assert values(shards, "s1") == [{"apple": "red"}] * 3
    leader = shards.leader("s1")
    assert not leader.machine.records() and dict(leader.statistics().counts).get("fast_commits") == 1


def test_cross_shard_commit_applies_on_every_shard_and_leaves_nothing_in_doubt() -> None:
    shards = Shards()
    s1 = read(shards, "s1", "t1", 1, "apple")
    s2 = read(shards, "s2", "t1", 1, "zebra")
    outcome = shards.ask("s1", TxnCommit(txn="t1", ts=1, parts=(
        Part(group="s1", read_keys=("apple",), writes=(Write(key="apple", value="1"),), read_ballots=s1),
        Part(group="s2", read_keys=("zebra",), writes=(Write(key="zebra", value="2"),), read_ballots=s2),
    )), wait_ms=300.0)
    assert outcome == TxnOutcome(txn="t1", committed=True)
    shards.sim.run_for(300.0)
    assert values(shards, "s1") == [{"apple": "1"}] * 3
    assert values(shards, "s2") == [{"zebra": "2"}] * 3
    for group in ("s1", "s2"):
        for server in shards.servers(group):
            assert server.in_doubt() == [] and server.machine.records() == []
    rows = shards.ask("s2", TxnScan(txn="t2", ts=2, start="n", end="", limit=10))
    assert isinstance(rows, TxnRows) and rows.rows == (("zebra", "2"),)


def test_an_older_transaction_wounds_a_younger_one_whose_commit_gets_a_conflict_naming_the_key() -> None:
    shards = Shards()
    young = read(shards, "s1", "young", 20, "apple")
    old = read(shards, "s1", "old", 10, "apple")
    assert shards.ask("s1", TxnCommit(txn="old", ts=10, parts=(
        Part(group="s1", read_keys=("apple",), writes=(Write(key="apple", value="old"),), read_ballots=old),))) == \
        TxnOutcome(txn="old", committed=True)
    refused = shards.ask("s1", TxnCommit(txn="young", ts=20, parts=(
        Part(group="s1", read_keys=("apple",), writes=(Write(key="apple", value="young"),), read_ballots=young),)))
    assert isinstance(refused, ErrorReply) and refused.code == "conflict" and refused.hint == "apple"
    assert shards.leader("s1").machine.get("apple")[0] == "old"


def test_a_younger_transaction_waits_for_an_older_one() -> None:
    shards = Shards()
    shards.ask("s1", TxnGet(txn="old", ts=10, key="apple"))
    pending = shards.send("s1", TxnCommit(txn="young", ts=20, parts=(
        Part(group="s1", writes=(Write(key="apple", value="young"),)),)))
    shards.sim.run_for(100.0)
    assert shards.reply(pending) is None
    shards.ask("s1", TxnRelease(txn="old"))
    assert shards.reply(pending) == TxnOutcome(txn="young", committed=True)


def test_a_cross_shard_prepare_waits_a_bounded_time_then_votes_no() -> None:
    # Regression (sim seed 2051): a prepare waiting for an older transaction
    # that itself waited, at another shard, for this one's prepared locks; only
    # the record timeout ended it. Now the prepare gives up after prepare_wait_ms.
    shards = Shards()
    read(shards, "s1", "old", 10, "apple")         # an older reader holds apple, and stays
    started_ms = shards.sim.now_ms
    request = shards.send("s1", TxnCommit(txn="young", ts=20, parts=(
        Part(group="s1", writes=(Write(key="apple", value="1"),)),
        Part(group="s2", writes=(Write(key="zebra", value="2"),)))))
    for _ in range(60):
        shards.sim.run_for(10.0)
        if shards.reply(request) is not None:
            break
    refused = shards.reply(request)
    assert isinstance(refused, ErrorReply) and refused.code == "conflict" and refused.hint == "apple"
    waited_ms = shards.sim.now_ms - started_ms
    assert shards.config.prepare_wait_ms <= waited_ms < shards.config.txn_record_timeout_ms
    shards.sim.run_for(200.0)
    assert values(shards, "s1") == [{}] * 3 and values(shards, "s2") == [{}] * 3
    assert dict(shards.leader("s1").statistics().counts).get("prepare_wait_expired") == 1


def test_commit_of_an_aborted_transaction_is_a_typed_error() -> None:
    shards = Shards()
    served = read(shards, "s1", "t1", 1, "apple")
    assert shards.ask("s1", TxnRelease(txn="t1")) == TxnOutcome(txn="t1", committed=False)
    refused = shards.ask("s1", TxnCommit(txn="t1", ts=1, parts=(
        Part(group="s1", read_keys=("apple",), writes=(Write(key="apple", value="x"),), read_ballots=served),)))
    assert isinstance(refused, ErrorReply) and refused.code in ("conflict", "aborted")
    assert values(shards, "s1") == [{}] * 3


def test_operations_after_commit_are_refused() -> None:
    shards = Shards()
    shards.ask("s1", TxnCommit(txn="t1", ts=1, parts=(Part(group="s1", writes=(Write(key="a", value="1"),)),)))
    refused = shards.ask("s1", TxnGet(txn="t1", ts=1, key="a"))
    assert isinstance(refused, ErrorReply) and refused.code == "bad_state"


def test_a_transaction_over_the_size_limit_is_refused_and_nothing_applies() -> None:
    shards = Shards(config=TxnConfig(txn_keys_max=3, txn_idle_ms=600.0, txn_record_timeout_ms=600.0,
                                     resend_ms=40.0))
    writes = tuple(Write(key=f"k{i}", value="v") for i in range(2))
    refused = shards.ask("s1", TxnCommit(txn="t1", ts=1, parts=(
        Part(group="s1", writes=writes), Part(group="s2", writes=(Write(key="z1", value="v"), Write(key="z2", value="v"))))))
    assert isinstance(refused, ErrorReply) and refused.code == "txn_too_large"
    shards.sim.run_for(200.0)
    assert values(shards, "s1") == [{}] * 3 and values(shards, "s2") == [{}] * 3
    assert not shards.leader("s1").machine.records()


def test_keys_over_the_size_limit_are_refused_and_nothing_applies() -> None:
    shards = Shards()
    long_key = "a" * (shards.config.key_bytes_max + 1)
    refused = shards.ask("s1", TxnGet(txn="t1", ts=1, key=long_key))
    assert isinstance(refused, ErrorReply) and refused.code == "key_too_large"
    refused = shards.ask("s1", TxnCommit(txn="t2", ts=2, parts=(
        Part(group="s1", writes=(Write(key="apple", value="ok"), Write(key=long_key, value="x"))),)))
    assert isinstance(refused, ErrorReply) and refused.code == "key_too_large"
    empty = shards.ask("s1", TxnGet(txn="t3", ts=3, key=""))
    assert isinstance(empty, ErrorReply) and empty.code == "key_too_large"
    assert values(shards, "s1") == [{}] * 3


def test_a_key_of_another_shard_is_a_wrong_shard_error() -> None:
    shards = Shards()
    refused = shards.ask("s1", TxnGet(txn="t1", ts=1, key="zebra"))
    assert isinstance(refused, ErrorReply) and refused.code == "wrong_shard"


def test_a_vote_for_an_unknown_transaction_is_ignored_and_counted() -> None:
    shards = Shards()
    leader = shards.leader("s1")
    before = leader.machine.digest()
    shards.sim.execute_for(NodeId("n4"), [Send(to=leader.node, message=Vote(txn="ghost", group="s2", yes=True))])
    shards.sim.run_for(100.0)
    assert dict(leader.statistics().counts).get("vote_for_unknown_txn") == 1
    assert leader.machine.digest() == before and not leader.machine.records()


def test_coordinator_leader_crash_between_prepare_and_decision_is_resumed() -> None:
    shards = Shards()
    s1_read = read(shards, "s1", "t1", 1, "apple")
    s2_read = read(shards, "s2", "t1", 1, "zebra")
    coordinator = shards.leader("s1")
    participant = shards.leader("s2")
    # Hold the participant's vote back so the coordinator crashes undecided.
    shards.sim.cut(participant.node, coordinator.node, 2000.0)
    request = shards.send("s1", TxnCommit(txn="t1", ts=1, parts=(
        Part(group="s1", read_keys=("apple",), writes=(Write(key="apple", value="1"),), read_ballots=s1_read),
        Part(group="s2", read_keys=("zebra",), writes=(Write(key="zebra", value="2"),), read_ballots=s2_read),
    )))
    for _ in range(40):
        shards.sim.run_for(20.0)
        if coordinator.machine.record_state("t1") == "pending" and participant.in_doubt() == ["t1"]:
            break
    assert coordinator.machine.record_state("t1") == "pending"
    shards.sim.crash(coordinator.node)
    shards.sim.run_for(2500.0)
    shards.sim.restart(coordinator.node)
    shards.sim.run_for(1000.0)
    # Whatever was decided, it was decided once and applied everywhere.
    s1 = values(shards, "s1")
    s2 = values(shards, "s2")
    assert len({str(v) for v in s1}) == 1 and len({str(v) for v in s2}) == 1
    assert (s1[0].get("apple") == "1") == (s2[0].get("zebra") == "2")
    for group in ("s1", "s2"):
        for server in shards.servers(group):
            assert server.in_doubt() == [] and not [r for st, r in server.machine.records() if st == "pending"]
    # The client lost its coordinator; asking the new one again gives the outcome.
    assert shards.reply(request) is None
    again = shards.ask("s1", TxnCommit(txn="t1", ts=1, parts=(
        Part(group="s1", read_keys=("apple",), writes=(Write(key="apple", value="1"),), read_ballots=s1_read),
        Part(group="s2", read_keys=("zebra",), writes=(Write(key="zebra", value="2"),), read_ballots=s2_read),
    )), wait_ms=300.0)
    committed = s1[0].get("apple") == "1"
    assert again == TxnOutcome(txn="t1", committed=True) if committed else (
        isinstance(again, ErrorReply) and again.code in ("aborted", "conflict"))


def test_a_deposed_leader_without_lease_does_not_presume_abort() -> None:
    # Regression (sim seed 202): a leader cut off from its group, still believing
    # it leads, lacked a record its successor had chosen and answered an in-doubt
    # participant "abort" while the coordinator's group decided commit.
    shards = Shards()
    leader = shards.leader("s1")
    others = [n for n in shards.map.shard("s1").replicas if n != leader.node]
    shards.sim.partition([leader.node], others, 1000.0)
    shards.sim.run_for(150.0)      # past the lease, before check-quorum steps it down
    assert leader.is_ready and not leader.replica.has_read_lease(shards.sim.local_ms(leader.node))
    shards.sim.execute_for(NodeId("n4"), [Send(to=leader.node, message=DecisionQuery(txn="t9", group="s2"))])
    shards.sim.run_for(5.0)
    counts = dict(leader.statistics().counts)
    assert counts.get("presumed_abort_deferred") == 1 and "presumed_abort" not in counts


def test_a_read_served_by_a_deposed_leader_cannot_commit_at_the_real_one() -> None:
    # Regression (sim seed 1013 with slower re-sends): a leader cut off from its
    # group still answers reads from its stale state. A client that also holds
    # the key's lock at the real leader (a read it re-sent there) must not get a
    # commit of the stale value through: that was a lost update.
    shards = Shards()
    deposed = shards.leader("s1")
    others = [n for n in shards.map.shard("s1").replicas if n != deposed.node]
    shards.sim.partition([deposed.node], others, 1000.0)
    for _ in range(40):
        shards.sim.run_for(5.0)
        if any(s.is_ready for s in shards.servers("s1") if s is not deposed):
            break
    real = next(s for s in shards.servers("s1") if s.is_ready and s is not deposed)
    assert shards.ask("s1", TxnCommit(txn="w", ts=1, parts=(Part(
        group="s1", writes=(Write(key="apple", value="new"),)),)), wait_ms=20.0, to=real.node) == \
        TxnOutcome(txn="w", committed=True)
    stale = shards.ask("s1", TxnGet(txn="t", ts=2, key="apple"), wait_ms=10.0, to=deposed.node)
    assert deposed.is_ready, "the deposed leader must not know it yet"
    fresh = shards.ask("s1", TxnGet(txn="t", ts=2, key="apple"), wait_ms=20.0, to=real.node)
    assert isinstance(stale, TxnValue) and stale.value is None and stale.ballot == deposed.ready_ballot
    assert isinstance(fresh, TxnValue) and fresh.value == "new" and fresh.ballot == real.ready_ballot
    assert stale.ballot is not None and stale.ballot != fresh.ballot
    refused = shards.ask("s1", TxnCommit(txn="t", ts=2, parts=(Part(
        group="s1", read_keys=("apple",), writes=(Write(key="apple", value="lost"),),
        read_ballots=(stale.ballot,)),)), to=real.node)
    assert isinstance(refused, ErrorReply) and refused.code == "conflict" and refused.hint == "apple"
    assert real.machine.get("apple")[0] == "new"
    assert dict(real.statistics().counts).get("stale_reads_refused") == 1


def test_a_commit_whose_reads_carry_no_ballot_is_refused() -> None:
    shards = Shards()
    shards.ask("s1", TxnGet(txn="t1", ts=1, key="apple"))
    refused = shards.ask("s1", TxnCommit(txn="t1", ts=1, parts=(
        Part(group="s1", read_keys=("apple",), writes=(Write(key="apple", value="x"),)),)))
    assert isinstance(refused, ErrorReply) and refused.code == "bad_state"
    assert values(shards, "s1") == [{}] * 3


def test_a_leader_with_its_lease_presumes_abort_for_an_unknown_transaction() -> None:
    shards = Shards()
    leader = shards.leader("s1")
    shards.sim.execute_for(NodeId("n4"), [Send(to=leader.node, message=DecisionQuery(txn="t9", group="s2"))])
    shards.sim.run_for(5.0)
    assert dict(leader.statistics().counts).get("presumed_abort") == 1


def test_a_long_poll_watch_is_answered_when_a_change_in_its_range_is_applied() -> None:
    shards = Shards()
    waiting = shards.send("s1", WatchWait(start="a", end="c", from_revision=1, wait_ms=5_000.0))
    shards.sim.run_for(100.0)
    assert shards.reply(waiting) is None        # nothing changed yet: held open
    outside = shards.ask("s1", TxnCommit(txn="t1", ts=1, parts=(
        Part(group="s1", writes=(Write(key="dog", value="1"),)),)))
    assert outside == TxnOutcome(txn="t1", committed=True)
    assert shards.reply(waiting) is None        # a change outside the range does not wake it
    shards.ask("s1", TxnCommit(txn="t2", ts=2, parts=(Part(group="s1", writes=(Write(key="bee", value="2"),)),)))
    events = shards.reply(waiting)
    assert isinstance(events, WatchEvents)
    assert [(c.key, c.value, c.revision) for c in events.events] == [("bee", "2", 2)]


def test_a_long_poll_watch_runs_out_empty_and_waiting_watches_are_bounded() -> None:
    shards = Shards(config=dataclasses.replace(TxnConfig.sim(), watches_waiting_max=2, watch_wait_ms_max=300.0))
    sent = [shards.send("s1", WatchWait(start="a", end="c", from_revision=1, wait_ms=60_000.0)) for _ in range(3)]
    shards.sim.run_for(100.0)
    answered = [shards.reply(request_id) for request_id in sent]
    refused = [r for r in answered if isinstance(r, ErrorReply)]
    assert len(refused) == 1 and refused[0].code == "overloaded"   # the one that arrived third
    assert answered.count(None) == 2
    shards.sim.run_for(400.0)                  # the server's bound on the wait, not the client's
    for request_id, before in zip(sent, answered, strict=True):
        if before is None:
            empty = shards.reply(request_id)
            assert isinstance(empty, WatchEvents) and empty.events == ()


def test_a_batch_of_commits_is_answered_once_in_item_order() -> None:
    shards = Shards()
    commits = (
        TxnCommit(txn="t1", ts=1, parts=(Part(group="s1", writes=(Write(key="apple", value="1"),)),)),
        TxnCommit(txn="t2", ts=2, parts=(Part(group="s1", writes=(Write(key="zebra", value="2"),)),)),  # s2's key
        TxnCommit(txn="t3", ts=3, parts=(Part(group="s1", writes=(Write(key="bee", value="3"),)),)),
    )
    reply = shards.ask("s1", TxnBatch(items=commits))
    assert isinstance(reply, TxnBatchReply) and len(reply.items) == 3
    first, second, third = reply.items
    assert first == TxnOutcome(txn="t1", committed=True) and third == TxnOutcome(txn="t3", committed=True)
    assert isinstance(second, ErrorReply) and second.code == "wrong_shard"
    shards.sim.run_for(100.0)
    assert values(shards, "s1") == [{"apple": "1", "bee": "3"}] * 3
    again = shards.ask("s1", TxnBatch(items=commits[:1]))     # a re-sent commit: answered from the log
    assert again == TxnBatchReply(items=(TxnOutcome(txn="t1", committed=True),))
    assert not shards.leader("s1")._batches


def test_an_empty_or_oversized_batch_is_refused_whole() -> None:
    # (A batch of anything but commits does not even decode: the codec checks
    # the items' type.)
    shards = Shards(config=dataclasses.replace(TxnConfig.sim(), batch_items_max=2))
    empty = shards.ask("s1", TxnBatch(items=()))
    assert isinstance(empty, ErrorReply) and empty.code == "bad_request"
    commits = tuple(TxnCommit(txn=f"t{i}", ts=i, parts=(Part(group="s1", writes=(Write(key=f"a{i}", value="1"),)),))
                    for i in range(3))
    oversized = shards.ask("s1", TxnBatch(items=commits))
    assert isinstance(oversized, ErrorReply) and oversized.code == "too_large"
    shards.sim.run_for(100.0)
    assert values(shards, "s1") == [{}] * 3
