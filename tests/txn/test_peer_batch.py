"""A shard leader sends the 2PC messages of one event for the same node as one
``PeerBatch``: nothing lost, nothing reordered, other effects untouched."""

from __future__ import annotations

from synod.codec.registry import decode, encode
from synod.core.effects import Send, SetTimer
from synod.core.ids import NodeId
from synod.txn.messages import Decision, PeerBatch, Vote
from synod.txn.server import PEER_BATCH_MAX, _batch_peer_sends

N4, N5 = NodeId("n4"), NodeId("n5")


def vote(txn: str) -> Vote:
    return Vote(txn=txn, group="s2", yes=True)


def test_messages_for_one_node_go_together_in_order_at_the_first_place() -> None:
    timer = SetTimer(key="t", delay_ms=1.0)
    decision = Decision(txn="c", coordinator="s1", commit=True)
    effects = [Send(to=N4, message=vote("a")), Send(to=N5, message=vote("b")), timer,
               Send(to=N4, message=decision), Send(to=N4, message=vote("d"))]
    assert _batch_peer_sends(effects) == [
        Send(to=N4, message=PeerBatch(messages=(vote("a"), decision, vote("d")))),
        Send(to=N5, message=vote("b")), timer]


def test_a_full_batch_starts_another_and_loses_nothing() -> None:
    effects = [Send(to=N4, message=vote(f"t{i}")) for i in range(PEER_BATCH_MAX + 10)]
    out = _batch_peer_sends(effects)
    assert len(out) == 2
    sent = [m for effect in out for m in effect.message.messages]  # type: ignore[attr-defined]
    assert sent == [vote(f"t{i}") for i in range(PEER_BATCH_MAX + 10)]
    assert decode(encode(out[0].message)) == out[0].message  # type: ignore[attr-defined]
