"""The leader applies the op objects it proposed without decoding them
(``ShardMachine.proposed``) while followers decode the bytes: that is the same
state transition only if decoding gives back exactly the op that was encoded,
for every op a shard server can build."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.codec.registry import Message, decode, encode
from synod.core.ids import NodeId
from synod.paxos.messages import Ballot
from synod.txn.messages import (
    DecideOp,
    EpochOp,
    FastCommitOp,
    OpBatch,
    Part,
    PrepareOp,
    RecordBeginOp,
    RecordDecideOp,
    RecordForgetOp,
    Write,
)

texts = st.text(max_size=40)
ballots = st.builds(Ballot, round=st.integers(min_value=0, max_value=2**40),
                    node=st.text(min_size=1, max_size=8).map(NodeId))
writes = st.builds(Write, key=texts, value=st.none() | texts)
parts = st.builds(Part, group=texts, read_keys=st.lists(texts, max_size=4).map(tuple),
                  read_ranges=st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
                  writes=st.lists(writes, max_size=4).map(tuple),
                  read_ballots=st.lists(ballots, max_size=3).map(tuple))
timestamps = st.integers(min_value=0, max_value=2**62)
batchable: st.SearchStrategy[Message] = st.one_of(
    st.builds(PrepareOp, txn=texts, ts=timestamps, coordinator=texts, part=parts, lock_ballot=ballots),
    st.builds(DecideOp, txn=texts, commit=st.booleans(), writes=st.lists(writes, max_size=4).map(tuple)),
    st.builds(FastCommitOp, txn=texts, ts=timestamps, writes=st.lists(writes, max_size=4).map(tuple),
              lock_ballot=ballots, read_ballots=st.lists(ballots, max_size=3).map(tuple)),
    st.builds(RecordBeginOp, txn=texts, ts=timestamps, parts=st.lists(parts, max_size=3).map(tuple)),
    st.builds(RecordDecideOp, txn=texts, commit=st.booleans()),
)
ops: st.SearchStrategy[Message] = st.one_of(
    batchable,
    st.builds(OpBatch, ops=st.lists(batchable, max_size=4).map(tuple)),
    st.builds(RecordForgetOp, txns=st.lists(texts, max_size=5).map(tuple)),
    st.builds(EpochOp, ballot=ballots),
)


@settings(max_examples=300)
@given(ops)
def test_every_shard_op_decodes_to_exactly_the_op_encoded(op: Message) -> None:
    assert decode(encode(op)) == op
