"""``FastCommitBatchOp``: a shard leader proposes the fast-path commits made
ready together as one log command. Applying the batch must be exactly applying
its commits one by one -- the same results, the same keys, revisions, watch
history and outcomes -- whatever the commits are: keys written twice, deletes,
duplicates of a commit, stale ballots, commits over the limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.codec.registry import decode, encode
from synod.core.ids import NodeId
from synod.paxos.messages import Ballot
from synod.txn.config import TxnConfig
from synod.txn.engine import SqliteEngine
from synod.txn.machine import ShardMachine
from synod.txn.messages import EpochOp, FastCommitBatchOp, FastCommitOp, OpResult, OpResults, Write

BALLOT = Ballot(round=2, node=NodeId("n1"))
STALE = Ballot(round=1, node=NodeId("n2"))
CONFIG = TxnConfig(watch_history_max=8, outcomes_max=6, key_bytes_max=16)

keys = st.sampled_from(["a", "b", "c", "d", "k" * 20])   # the last is over the key limit
writes = st.builds(Write, key=keys, value=st.none() | st.sampled_from(["1", "2", "3"]))
commits = st.builds(FastCommitOp, txn=st.sampled_from([f"t{i}" for i in range(12)]), ts=st.just(1),
                    writes=st.lists(writes, max_size=3).map(tuple),
                    lock_ballot=st.sampled_from([BALLOT, BALLOT, BALLOT, STALE]))


def machine() -> ShardMachine:
    shard = ShardMachine(SqliteEngine(":memory:"), CONFIG)
    shard.apply(encode(EpochOp(ballot=BALLOT)))
    return shard


def state(shard: ShardMachine) -> tuple[object, ...]:
    return (shard.items(), shard.revision, shard.changes("", "", 0, 1000),
            {f"t{i}": shard.outcome(f"t{i}") for i in range(12)},
            shard.engine.execute("SELECT seq, txn, committed FROM outcomes ORDER BY seq"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(commits, max_size=6), max_size=4))
def test_a_batch_applies_exactly_as_its_commits_one_by_one(batches: list[list[FastCommitOp]]) -> None:
    batched, single = machine(), machine()
    for batch in batches:
        answer = decode(batched.apply(encode(FastCommitBatchOp(commits=tuple(batch)))))
        assert isinstance(answer, OpResults)
        alone = [decode(single.apply(encode(commit))) for commit in batch]
        assert list(answer.items) == alone
        assert state(batched) == state(single)


def test_a_refused_commit_in_a_batch_leaves_the_others_whole() -> None:
    shard = machine()
    batch = FastCommitBatchOp(commits=(
        FastCommitOp(txn="t1", ts=1, writes=(Write(key="a", value="1"),), lock_ballot=BALLOT),
        FastCommitOp(txn="t2", ts=1, writes=(Write(key="b", value="2"),), lock_ballot=STALE),
        FastCommitOp(txn="t3", ts=1, writes=(Write(key="c", value="3"),), lock_ballot=BALLOT),
        FastCommitOp(txn="t1", ts=1, writes=(Write(key="d", value="4"),), lock_ballot=BALLOT),
    ))
    answer = decode(shard.apply(encode(batch)))
    assert isinstance(answer, OpResults)
    assert [(r.status, r.revision) for r in answer.items] == [("ok", 1), ("refused", 0), ("ok", 2), ("duplicate", 0)]
    assert shard.items() == {"a": "1", "c": "3"}
    assert (shard.outcome("t1"), shard.outcome("t2"), shard.outcome("t3")) == (True, None, True)


def test_an_undecodable_batch_is_refused_whole() -> None:
    shard = machine()
    answer = decode(shard.apply(b"\x93\x01\xcd\x03\x31\x91\x92"))
    assert isinstance(answer, OpResult) and answer.status == "refused"
    assert shard.items() == {}
