"""The member table: each member's lifecycle as a transition table, and the probe order.

Theory of operation
-------------------
Every member other than ourselves is, in our table, in one of four states (SWIM
section 4.2, Lifeguard, memberlist's state.go):

    (unknown) --join--> ALIVE --suspect--> SUSPECT --dead--> DEAD --reap--> (unknown)
                          ^                   |                |
                          +-----refresh-------+----------------+  (a newer incarnation)
                        ALIVE/SUSPECT --leave--> LEFT --reap--> (unknown)

``TRANSITIONS`` is that diagram; ``next_status`` raises ``LocalProtocolError`` on a
move that is not in it, so a bug cannot take a member from DEAD to SUSPECT.
Whether a peer's update *may* cause a move is decided by incarnation numbers,
``INCARNATION_RULES``: only a strictly newer incarnation refreshes (refutes a
suspicion, revives a tombstone); a suspicion, death or leave applies to the
current incarnation or a newer one; anything older is stale and ignored. So a
DEAD verdict is final for its incarnation: only the member itself, by raising its
incarnation, can come back.

Probing order (SWIM section 4.3): members are probed round-robin over a list
shuffled at every wrap, so each member is probed once per round in random
order; a new member is swapped into a random position. Dead and left members are
skipped; suspects are still probed (so the buddy system can reach them). At each
wrap, tombstones older than ``tombstone_ms`` are reaped and forgotten.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import Enum

from synod.core.errors import LocalProtocolError, invariant
from synod.core.ids import NodeId
from synod.gossip.messages import MemberState, MemberStatus


class Transition(Enum):
    JOIN = "join"  # first "alive" about an unknown member
    REFRESH = "refresh"  # "alive" at a newer incarnation: refutation, new metadata, rejoin
    SUSPECT = "suspect"  # a suspicion (new, or of a newer incarnation)
    DEAD = "dead"  # a failure verdict: a peer's, or our own suspicion timeout
    LEAVE = "leave"  # a graceful leave
    REAP = "reap"  # the tombstone expired: forget the member


ALIVE, SUSPECT, DEAD, LEFT = (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD,
                              MemberStatus.LEFT)

#: (current status or None for unknown, transition) -> next status (None: forgotten).
TRANSITIONS: dict[tuple[MemberStatus | None, Transition], MemberStatus | None] = {
    (None, Transition.JOIN): ALIVE,
    (ALIVE, Transition.REFRESH): ALIVE,
    (SUSPECT, Transition.REFRESH): ALIVE,
    (DEAD, Transition.REFRESH): ALIVE,
    (LEFT, Transition.REFRESH): ALIVE,
    (ALIVE, Transition.SUSPECT): SUSPECT,
    (SUSPECT, Transition.SUSPECT): SUSPECT,
    (ALIVE, Transition.DEAD): DEAD,
    (SUSPECT, Transition.DEAD): DEAD,
    (ALIVE, Transition.LEAVE): LEFT,
    (SUSPECT, Transition.LEAVE): LEFT,
    (DEAD, Transition.REAP): None,
    (LEFT, Transition.REAP): None,
}

#: Which incarnations (compared with the one we know) let a peer's update apply.
INCARNATION_RULES: dict[Transition, Callable[[int, int], bool]] = {
    Transition.REFRESH: lambda update, known: update > known,
    Transition.SUSPECT: lambda update, known: update >= known,
    Transition.DEAD: lambda update, known: update >= known,
    Transition.LEAVE: lambda update, known: update >= known,
}


def next_status(current: MemberStatus | None, transition: Transition) -> MemberStatus | None:
    """The status after ``transition``; ``LocalProtocolError`` if the move is illegal."""
    try:
        return TRANSITIONS[(current, transition)]
    except KeyError:
        name = current.name if current is not None else "unknown"
        raise LocalProtocolError(f"illegal member transition {transition.value} from {name}") from None


def allowed(current: MemberStatus | None, transition: Transition) -> bool:
    return (current, transition) in TRANSITIONS


class Member:
    """Our record of one member (mutable; only ``MemberTable`` changes ``status``)."""

    __slots__ = ("address", "incarnation", "meta", "node", "status", "status_ms")

    def __init__(self, node: NodeId, address: str, incarnation: int, meta: bytes,
                 now_ms: float) -> None:
        self.node = node
        self.address = address
        self.incarnation = incarnation
        self.meta = meta
        self.status = ALIVE
        self.status_ms = now_ms

    def to_state(self) -> MemberState:
        return MemberState(node=self.node, address=self.address, incarnation=self.incarnation,
                           status=self.status, meta=self.meta)


class MemberTable:
    """Every member we know (ourselves included), status counts and the probe ring."""

    __slots__ = ("_counts", "_members", "_ring", "_ring_index", "local")

    def __init__(self, local: Member) -> None:
        self.local = local
        self._members: dict[NodeId, Member] = {local.node: local}
        self._counts = {ALIVE: 1, SUSPECT: 0, DEAD: 0, LEFT: 0}
        self._ring: list[NodeId] = []  # every member but ourselves
        self._ring_index = 0

    # ------------------------------------------------------------ queries

    def get(self, node: NodeId) -> Member | None:
        return self._members.get(node)

    def __len__(self) -> int:
        return len(self._members)

    def members(self) -> list[Member]:
        return list(self._members.values())

    def count(self, status: MemberStatus) -> int:
        return self._counts[status]

    def live_count(self) -> int:
        """Members believed alive or suspect, ourselves included (SWIM's n)."""
        return self._counts[ALIVE] + self._counts[SUSPECT]

    # ------------------------------------------------------------ transitions

    def join(self, node: NodeId, address: str, incarnation: int, meta: bytes,
             now_ms: float, rng: random.Random) -> Member:
        invariant(node not in self._members, f"join of known member {node}")
        next_status(None, Transition.JOIN)
        member = Member(node, address, incarnation, meta, now_ms)
        self._members[node] = member
        self._counts[ALIVE] += 1
        # Swap the newcomer into a random slot of the ring (memberlist's probe order).
        self._ring.append(node)
        slot = rng.randrange(len(self._ring))
        self._ring[slot], self._ring[-1] = self._ring[-1], self._ring[slot]
        return member

    def move(self, member: Member, transition: Transition, incarnation: int,
             now_ms: float) -> MemberStatus | None:
        """Apply ``transition`` to ``member``; returns the previous status."""
        invariant(transition is not Transition.JOIN, "join goes through join()")
        after = next_status(member.status, transition)
        before = member.status
        if transition is not Transition.REAP:
            invariant(INCARNATION_RULES[transition](incarnation, member.incarnation),
                      f"{transition.value} of {member.node} at incarnation {incarnation} "
                      f"below the known {member.incarnation}")
        if after is None:
            invariant(member is not self.local, "cannot reap ourselves")
            del self._members[member.node]
            self._counts[before] -= 1
            return before
        member.incarnation = incarnation
        if after is not before:
            self._counts[before] -= 1
            self._counts[after] += 1
            member.status = after
            member.status_ms = now_ms
        return before

    # ------------------------------------------------------------ probe order

    def next_probe_target(self, now_ms: float, tombstone_ms: float,
                          rng: random.Random) -> tuple[Member | None, list[NodeId]]:
        """The next member to probe (None if nobody is probeable) and the tombstones
        reaped if the ring wrapped."""
        reaped: list[NodeId] = []
        for _ in range(len(self._ring) + 1):
            if self._ring_index >= len(self._ring):
                reaped = self._wrap(now_ms, tombstone_ms, rng)
                if not self._ring:
                    return None, reaped
            node = self._ring[self._ring_index]
            self._ring_index += 1
            member = self._members.get(node)
            if member is not None and member.status in (ALIVE, SUSPECT):
                return member, reaped
        return None, reaped

    def _wrap(self, now_ms: float, tombstone_ms: float, rng: random.Random) -> list[NodeId]:
        reaped: list[NodeId] = []
        kept: list[NodeId] = []
        for node in self._ring:
            member = self._members[node]
            if member.status in (DEAD, LEFT) and now_ms - member.status_ms >= tombstone_ms:
                self.move(member, Transition.REAP, member.incarnation, now_ms)
                reaped.append(node)
            else:
                kept.append(node)
        rng.shuffle(kept)
        self._ring = kept
        self._ring_index = 0
        return reaped

    def random_members(self, rng: random.Random, count: int,
                       accept: Callable[[Member], bool]) -> list[Member]:
        """Up to ``count`` distinct random members satisfying ``accept`` (memberlist's
        kRandomNodes: bounded tries, so it costs O(count), not O(n))."""
        chosen: list[Member] = []
        ring = self._ring
        if not ring:
            return chosen
        seen: set[NodeId] = set()
        for _ in range(3 * count + 8):
            if len(chosen) >= count:
                break
            node = ring[rng.randrange(len(ring))]
            if node in seen:
                continue
            seen.add(node)
            member = self._members[node]
            if accept(member):
                chosen.append(member)
        if len(chosen) < count and len(ring) <= 4 * count + 8:
            # Small clusters: random tries can miss the few eligible members.
            for node in ring:
                if len(chosen) >= count:
                    break
                if node not in seen:
                    member = self._members[node]
                    if accept(member):
                        chosen.append(member)
        return chosen

    # ------------------------------------------------------------ invariants

    def check(self) -> None:
        invariant(self._members.get(self.local.node) is self.local, "local member missing")
        invariant(len(self._ring) == len(self._members) - 1,
                  "probe ring must hold every member but ourselves")
        invariant(sum(self._counts.values()) == len(self._members), "status counts drifted")
        invariant(all(v >= 0 for v in self._counts.values()), "negative status count")
