"""The member lifecycle table and the probe order (SWIM 4.2, 4.3)."""

from __future__ import annotations

import random

import pytest

from synod.core.errors import InvariantViolation, LocalProtocolError
from synod.core.ids import NodeId
from synod.gossip.messages import MemberStatus
from synod.gossip.state import (
    INCARNATION_RULES,
    TRANSITIONS,
    Member,
    MemberTable,
    Transition,
    allowed,
    next_status,
)

A, S, D, L = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT


def table(*names: str) -> MemberTable:
    t = MemberTable(Member(NodeId("self"), "", 1, b"", 0.0))
    rng = random.Random(1)
    for name in names:
        t.join(NodeId(name), "", 1, b"", 0.0, rng)
    return t


@pytest.mark.parametrize(("before", "transition", "after"), [
    (None, Transition.JOIN, A),
    (A, Transition.SUSPECT, S),
    (S, Transition.REFRESH, A),
    (S, Transition.DEAD, D),
    (D, Transition.REFRESH, A),
    (L, Transition.REFRESH, A),
    (A, Transition.LEAVE, L),
    (D, Transition.REAP, None),
])
def test_legal_transitions(before: MemberStatus | None, transition: Transition,
                           after: MemberStatus | None) -> None:
    assert next_status(before, transition) is after


@pytest.mark.parametrize(("before", "transition"), [
    (D, Transition.SUSPECT),  # dead is final for its incarnation
    (D, Transition.DEAD),
    (L, Transition.SUSPECT),
    (L, Transition.DEAD),
    (D, Transition.LEAVE),
    (A, Transition.REAP),  # only tombstones are reaped
    (S, Transition.REAP),
    (A, Transition.JOIN),
    (None, Transition.SUSPECT),  # a member is never learnt from a suspicion
    (None, Transition.DEAD),
])
def test_illegal_transitions_raise(before: MemberStatus | None, transition: Transition) -> None:
    assert not allowed(before, transition)
    with pytest.raises(LocalProtocolError):
        next_status(before, transition)


def test_every_status_can_be_left_only_by_listed_moves() -> None:
    for status in (None, A, S, D, L):
        for transition in Transition:
            assert allowed(status, transition) == ((status, transition) in TRANSITIONS)


def test_incarnation_rules() -> None:
    assert INCARNATION_RULES[Transition.REFRESH](2, 1)
    assert not INCARNATION_RULES[Transition.REFRESH](1, 1)  # refutation needs a higher one
    assert INCARNATION_RULES[Transition.SUSPECT](1, 1)
    assert not INCARNATION_RULES[Transition.SUSPECT](0, 1)  # older suspicions are stale
    assert not INCARNATION_RULES[Transition.DEAD](0, 1)


def test_table_refuses_a_move_below_the_known_incarnation() -> None:
    t = table("b")
    member = t.get(NodeId("b"))
    assert member is not None
    t.move(member, Transition.REFRESH, 5, 1.0)
    with pytest.raises(InvariantViolation):
        t.move(member, Transition.SUSPECT, 4, 2.0)


def test_counts_follow_moves() -> None:
    t = table("b", "c")
    b = t.get(NodeId("b"))
    assert b is not None
    t.move(b, Transition.SUSPECT, 1, 1.0)
    assert (t.count(A), t.count(S), t.live_count()) == (2, 1, 3)
    t.move(b, Transition.DEAD, 1, 2.0)
    assert (t.count(S), t.count(D), t.live_count()) == (0, 1, 2)
    t.check()


def test_round_robin_probes_each_member_once_per_round_in_shuffled_order() -> None:
    names = [f"m{i}" for i in range(20)]
    t = table(*names)
    rng = random.Random(3)
    rounds = []
    for _ in range(3):
        order = []
        for _ in range(len(names)):
            target, _ = t.next_probe_target(0.0, 1000.0, rng)
            assert target is not None
            order.append(target.node)
        assert sorted(order) == sorted(names)
        rounds.append(order)
    assert rounds[1] != rounds[2]  # reshuffled at each wrap


def test_probe_skips_dead_and_left_but_not_suspect() -> None:
    t = table("b", "c", "d")
    for name, transition in (("b", Transition.DEAD), ("c", Transition.LEAVE),
                             ("d", Transition.SUSPECT)):
        m = t.get(NodeId(name))
        assert m is not None
        t.move(m, transition, 1, 0.0)
    rng = random.Random(1)
    seen = {t.next_probe_target(0.0, 1e9, rng)[0].node for _ in range(6)}  # type: ignore[union-attr]
    assert seen == {"d"}


def test_tombstones_are_reaped_at_the_wrap_after_tombstone_ms() -> None:
    t = table("b", "c")
    b = t.get(NodeId("b"))
    assert b is not None
    t.move(b, Transition.DEAD, 1, 100.0)
    rng = random.Random(1)
    reaped_early = [t.next_probe_target(500.0, 1000.0, rng)[1] for _ in range(3)]
    assert all(NodeId("b") not in r for r in reaped_early)
    assert t.get(NodeId("b")) is not None
    reaped = []
    for _ in range(3):
        reaped += t.next_probe_target(1200.0, 1000.0, rng)[1]
    assert reaped == ["b"]
    assert t.get(NodeId("b")) is None
    t.check()


def test_random_members_are_distinct_and_filtered() -> None:
    t = table(*(f"m{i}" for i in range(50)))
    rng = random.Random(2)
    chosen = t.random_members(rng, 5, lambda m: m.node != "m3")
    assert len({m.node for m in chosen}) == 5
    assert all(m.node != "m3" for m in chosen)
    small = table("b", "c")
    assert {m.node for m in small.random_members(rng, 5, lambda m: True)} == {"b", "c"}
