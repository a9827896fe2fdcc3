"""``OpBatch``: a shard leader proposes the operations made ready while its
Paxos window was shut as one log command. Applying the batch must be exactly
applying its operations one by one -- the same results, keys, revisions, watch
history, outcomes, prepare records and transaction records -- whatever they are:
keys written twice, deletes, duplicates, stale ballots, over the limits, commits
without a prepare record, decisions for unknown records."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.codec.registry import Message, decode, encode
from synod.core.ids import NodeId
from synod.paxos.messages import Ballot
from synod.txn.config import TxnConfig
from synod.txn.engine import SqliteEngine
from synod.txn.machine import ShardMachine
from synod.txn.messages import (
    DecideOp,
    EpochOp,
    FastCommitOp,
    OpBatch,
    OpResult,
    OpResults,
    Part,
    PrepareOp,
    RecordBeginOp,
    RecordDecideOp,
    Write,
)

BALLOT = Ballot(round=2, node=NodeId("n1"))
STALE = Ballot(round=1, node=NodeId("n2"))
CONFIG = TxnConfig(watch_history_max=8, outcomes_max=6, key_bytes_max=16)
TXNS = [f"t{i}" for i in range(10)]

keys = st.sampled_from(["a", "b", "c", "d", "k" * 20])   # the last is over the key limit
writes = st.lists(st.builds(Write, key=keys, value=st.none() | st.sampled_from(["1", "2", "3"])),
                  max_size=3).map(tuple)
txns = st.sampled_from(TXNS)
ballots = st.sampled_from([BALLOT, BALLOT, BALLOT, STALE])
parts = st.builds(Part, group=st.just("s1"), writes=writes)
operations: st.SearchStrategy[Message] = st.one_of(
    st.builds(FastCommitOp, txn=txns, ts=st.just(1), writes=writes, lock_ballot=ballots),
    st.builds(PrepareOp, txn=txns, ts=st.just(1), coordinator=st.just("s1"), part=parts, lock_ballot=ballots),
    st.builds(DecideOp, txn=txns, commit=st.booleans()),
    st.builds(RecordBeginOp, txn=txns, ts=st.just(1),
              parts=st.tuples(parts, st.builds(Part, group=st.just("s2"), writes=writes))),
    st.builds(RecordDecideOp, txn=txns, commit=st.booleans()),
)


def machine() -> ShardMachine:
    shard = ShardMachine(SqliteEngine(":memory:"), CONFIG)
    shard.apply(encode(EpochOp(ballot=BALLOT)))
    return shard


def state(shard: ShardMachine) -> tuple[object, ...]:
    """What the machine answers (partly from its in-memory mirrors) and what its
    tables hold (so the mirrors must have been written through)."""
    tables = tuple(shard.engine.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
                   for table in ("outcomes", "prepared", "records"))
    mirrors = (sorted((txn, committed) for txn in TXNS if (committed := shard.outcome(txn)) is not None),
               [(r.txn, encode(r)) for r in shard.prepared()],
               [(r.txn, state, encode(r)) for state, r in shard.records()])
    assert sorted((str(row[1]), bool(row[2])) for row in tables[0]) == mirrors[0]
    assert [tuple(row) for row in tables[1]] == mirrors[1]
    assert [(row[0], row[1], row[2]) for row in tables[2]] == mirrors[2]
    return (shard.items(), shard.revision, shard.changes("", "", 0, 1000), mirrors, tables)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(operations, max_size=6), max_size=4))
def test_a_batch_applies_exactly_as_its_operations_one_by_one(batches: list[list[Message]]) -> None:
    batched, single = machine(), machine()
    for batch in batches:
        answer = decode(batched.apply(encode(OpBatch(ops=tuple(batch)))))  # type: ignore[arg-type]
        assert isinstance(answer, OpResults)
        alone = [decode(single.apply(encode(op))) for op in batch]
        assert list(answer.items) == alone
        assert state(batched) == state(single)


def test_a_refused_operation_in_a_batch_leaves_the_others_whole() -> None:
    shard = machine()
    batch = OpBatch(ops=(
        FastCommitOp(txn="t1", ts=1, writes=(Write(key="a", value="1"),), lock_ballot=BALLOT),
        FastCommitOp(txn="t2", ts=1, writes=(Write(key="b", value="2"),), lock_ballot=STALE),
        PrepareOp(txn="t3", ts=1, coordinator="s1", part=Part(group="s1", writes=(Write(key="c", value="3"),)),
                  lock_ballot=BALLOT),
        DecideOp(txn="t4", commit=True),
        FastCommitOp(txn="t1", ts=1, writes=(Write(key="d", value="4"),), lock_ballot=BALLOT),
        DecideOp(txn="t3", commit=True),
    ))
    answer = decode(shard.apply(encode(batch)))
    assert isinstance(answer, OpResults)
    assert [(r.status, r.revision) for r in answer.items] == [
        ("ok", 1), ("refused", 0), ("ok", 0), ("refused", 0), ("duplicate", 0), ("ok", 2)]
    assert shard.items() == {"a": "1", "c": "3"}
    assert (shard.outcome("t1"), shard.outcome("t2"), shard.outcome("t3")) == (True, None, True)


def test_an_undecodable_batch_is_refused_whole() -> None:
    shard = machine()
    answer = decode(shard.apply(b"\x93\x01\xcd\x03\x31\x91\x92"))
    assert isinstance(answer, OpResult) and answer.status == "refused"
    assert shard.items() == {}
