"""The membership API: snapshots of the view, the event stream, statistics.

Theory of operation
-------------------
A core makes no calls into I/O, so it cannot call subscribers' callbacks that
might block or re-enter it. Instead each member keeps a bounded FIFO of
``MemberEvent``s; the driver (or a block composing the member, such as the
node process or the MapReduce master) calls ``drain_events()`` after each step
and fans the events out itself. If nobody drains, the oldest events are
dropped beyond ``event_queue_max`` and counted (``events_dropped``); the view
(``view()``) is always exact, so a subscriber that fell behind resynchronises
from it.

Event kinds:

``JOINED``     a member became known alive (first sight, or rejoin after a
               tombstone with a higher incarnation);
``SUSPECT``    a member is suspected (may still refute);
``ALIVE``      a suspect member refuted: it is alive again;
``FAILED``     a member was declared dead (a failure verdict);
``LEFT``       a member left gracefully;
``UPDATED``    a member's metadata or address changed;
``USER``       a user event arrived (``name`` and ``payload`` set; ``node`` is its origin).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from synod.core.ids import NodeId
from synod.gossip.messages import MemberStatus


class EventKind(Enum):
    JOINED = "joined"
    SUSPECT = "suspect"
    ALIVE = "alive"
    FAILED = "failed"
    LEFT = "left"
    UPDATED = "updated"
    USER = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberEvent:
    kind: EventKind
    node: NodeId
    incarnation: int
    at_ms: float
    meta: bytes = b""
    name: str = ""
    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberInfo:
    node: NodeId
    address: str
    incarnation: int
    status: MemberStatus
    meta: bytes
    status_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipView:
    """A frozen snapshot of everything one member believes, sorted by node id."""

    local: NodeId
    at_ms: float
    members: tuple[MemberInfo, ...]

    def get(self, node: NodeId) -> MemberInfo | None:
        for info in self.members:
            if info.node == node:
                return info
        return None

    def with_status(self, *statuses: MemberStatus) -> tuple[NodeId, ...]:
        return tuple(info.node for info in self.members if info.status in statuses)

    @property
    def alive(self) -> tuple[NodeId, ...]:
        return self.with_status(MemberStatus.ALIVE, MemberStatus.SUSPECT)


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipStatistics:
    """Counters since start (a frozen snapshot)."""

    node: NodeId
    incarnation: int
    awareness: int
    members_alive: int
    members_suspect: int
    members_dead: int
    members_left: int
    broadcast_queue: int
    messages_sent: int
    updates_sent: int
    probes: int
    probes_failed: int
    indirect_probes: int
    suspicions: int
    refutations: int
    events_dropped: int
    ignored: tuple[tuple[str, int], ...]
