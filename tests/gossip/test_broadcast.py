"""The retransmit-limited broadcast queue (SWIM 4.1, memberlist queue.go)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core import faults
from synod.core.ids import NodeId
from synod.gossip.broadcast import (
    NO_DEAD_RETRANSMIT,
    BroadcastQueue,
    retransmit_limit,
    update_size_bytes,
)
from synod.gossip.messages import Alive, Dead, Suspect, UserEvent


def alive(name: str, incarnation: int = 1) -> Alive:
    return Alive(node=NodeId(name), incarnation=incarnation)


def test_retransmit_limit_is_mult_times_ceil_log10_n_plus_one() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 99) == 8
    assert retransmit_limit(4, 100) == 12
    assert retransmit_limit(4, 2000) == 4 * math.ceil(math.log10(2001))


def test_each_update_is_sent_exactly_the_retransmit_limit_then_dropped() -> None:
    queue = BroadcastQueue(retransmit_mult=3, queue_max=100)
    queue.enqueue("a", alive("a"))
    sends = 0
    while queue.select(members=50, bytes_max=1000):
        sends += 1
    assert sends == retransmit_limit(3, 50) == 6
    assert len(queue) == 0


def test_least_sent_first_newest_first_among_equals() -> None:
    queue = BroadcastQueue(retransmit_mult=4, queue_max=100)
    queue.enqueue("a", alive("a"))
    size = update_size_bytes(alive("a"))
    assert queue.select(10, size) == [alive("a")]  # a sent once
    queue.enqueue("b", alive("b"))
    queue.enqueue("c", alive("c"))
    assert queue.select(10, size) == [alive("c")]  # unsent, newest first
    assert queue.select(10, size) == [alive("b")]
    # All at one send now: the last to get there goes first.
    assert queue.select(10, 10 * size) == [alive("b"), alive("c"), alive("a")]
    assert queue.select(10, size) == [alive("a")]  # a is now the least sent


def test_packet_byte_bound_skips_updates_that_do_not_fit() -> None:
    queue = BroadcastQueue(retransmit_mult=4, queue_max=100)
    big = UserEvent(origin=NodeId("x"), event_id=1, name="big", payload=b"x" * 300)
    queue.enqueue(("x", 1), big)
    queue.enqueue("a", alive("a"))
    chosen = queue.select(10, 100)
    assert chosen == [alive("a")]
    assert sum(update_size_bytes(u) for u in chosen) <= 100


def test_a_newer_update_about_a_member_invalidates_the_older() -> None:
    queue = BroadcastQueue(retransmit_mult=4, queue_max=100)
    queue.enqueue("b", Suspect(node=NodeId("b"), incarnation=1, source=NodeId("c")))
    queue.enqueue("b", Dead(node=NodeId("b"), incarnation=1, source=NodeId("c")))
    assert len(queue) == 1
    assert queue.select(10, 1000) == [Dead(node=NodeId("b"), incarnation=1, source=NodeId("c"))]


def test_the_queue_bound_drops_the_most_sent() -> None:
    queue = BroadcastQueue(retransmit_mult=10, queue_max=3)
    queue.enqueue("a", alive("a"))
    queue.select(10, update_size_bytes(alive("a")))  # a: sent once
    queue.enqueue("b", alive("b"))
    queue.enqueue("c", alive("c"))
    queue.enqueue("d", alive("d"))
    assert len(queue) == 3 and queue.pending("a") is None and queue.dropped == 1
    queue.check()


def test_the_planted_no_dead_retransmit_bug_sends_a_dead_verdict_once() -> None:
    faults.enable_mutant(NO_DEAD_RETRANSMIT)
    queue = BroadcastQueue(retransmit_mult=4, queue_max=10)
    queue.enqueue("b", Dead(node=NodeId("b"), incarnation=1, source=NodeId("c")))
    assert queue.select(10, 1000)
    assert queue.select(10, 1000) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(1, 5)), max_size=40),
       st.integers(1, 30))
def test_against_a_naive_model(ops: list[tuple[str, int]], members: int) -> None:
    """Every queued update (the last per key) is sent exactly ``limit`` times."""
    queue = BroadcastQueue(retransmit_mult=2, queue_max=1000)
    last: dict[str, Alive] = {}
    for key, incarnation in ops:
        queue.enqueue(key, alive(key, incarnation))
        last[key] = alive(key, incarnation)
    counts: dict[Alive, int] = {}
    for _ in range(1000):
        chosen = queue.select(members, 120)
        if not chosen:
            break
        assert len(set(chosen)) == len(chosen)
        assert sum(update_size_bytes(u) for u in chosen) <= 120
        for update in chosen:
            counts[update] = counts.get(update, 0) + 1
    limit = retransmit_limit(2, members)
    assert counts == {update: limit for update in last.values()}
