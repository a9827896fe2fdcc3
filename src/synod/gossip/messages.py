"""Gossip wire messages (tags 500-599). ONLY APPEND: never renumber or reuse a tag.

Theory of operation
-------------------
Failure detection (SWIM section 3): ``Ping`` asks ``target`` for an ``Ack`` with
the same ``seq``. ``PingReq`` asks a member to ping ``target`` on our behalf; it
answers with the target's ``Ack`` forwarded under *our* ``seq`` (the indirect
ack) or, when the target stays silent for a probe timeout, a ``Nack`` (Lifeguard
section 4.1: a nack tells the requester its own path works, so a missed ack is
the target's fault rather than ours).

Dissemination (SWIM section 4): every datagram carries ``updates``, the
piggybacked membership facts (``Alive``, ``Suspect``, ``Dead``, ``Left``) and user
events. ``Gossip`` is a datagram with nothing but updates, sent by the gossip round.

Anti-entropy: ``PushPull`` carries the sender's whole member table; the receiver
merges it and answers with its own in ``PushPullReply`` (a TCP exchange in the
runtime; in the core, a request/response pair). ``join=True`` marks the first
exchange of a joining member with a seed.

Hard bounds here (``*_MAX``) only stop absurd input at decode time; the smaller
configured bounds (metadata size, event size) are checked by the core, which
counts what it drops.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from synod.codec.registry import Message, message
from synod.core.ids import NodeId

#: Decode-time caps, far above any configured bound.
UPDATES_MAX = 512
MEMBERS_MAX = 1_000_000
META_BYTES_HARD_MAX = 64 * 1024
EVENT_BYTES_HARD_MAX = 64 * 1024
INCARNATION_MAX = 2**62


class MemberStatus(IntEnum):
    """What a member is believed to be. ONLY APPEND."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


def _check_incarnation(incarnation: int) -> None:
    if not 0 <= incarnation <= INCARNATION_MAX:
        raise ValueError(f"incarnation {incarnation} out of range")


def _check_updates(updates: tuple[Update, ...]) -> None:
    if len(updates) > UPDATES_MAX:
        raise ValueError(f"{len(updates)} piggybacked updates over {UPDATES_MAX}")


@message(500)
@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Message):
    """Direct probe: ``target`` answers with ``Ack(seq)``. ``target`` is named so that
    a different member reached at a reused address does not ack by mistake."""

    seq: int
    target: NodeId
    updates: tuple[Update, ...] = ()

    def __post_init__(self) -> None:
        _check_updates(self.updates)


@message(501)
@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(Message):
    """Answer to a ``Ping`` (direct), or a forwarded answer to a ``PingReq`` (indirect)."""

    seq: int
    updates: tuple[Update, ...] = ()

    def __post_init__(self) -> None:
        _check_updates(self.updates)


@message(502)
@dataclass(frozen=True, slots=True, kw_only=True)
class PingReq(Message):
    """Please ping ``target`` for me and forward its ack (or a nack) under ``seq``."""

    seq: int
    target: NodeId
    updates: tuple[Update, ...] = ()

    def __post_init__(self) -> None:
        _check_updates(self.updates)


@message(503)
@dataclass(frozen=True, slots=True, kw_only=True)
class Nack(Message):
    """The indirect probe ``seq`` got no ack from its target within a probe timeout."""

    seq: int
    updates: tuple[Update, ...] = ()

    def __post_init__(self) -> None:
        _check_updates(self.updates)


@message(504)
@dataclass(frozen=True, slots=True, kw_only=True)
class Gossip(Message):
    """A datagram of piggybacked updates only (the gossip round)."""

    updates: tuple[Update, ...]

    def __post_init__(self) -> None:
        _check_updates(self.updates)


@message(505)
@dataclass(frozen=True, slots=True, kw_only=True)
class Alive(Message):
    """``node`` is alive at ``incarnation``, reachable at ``address``, with ``meta``."""

    node: NodeId
    incarnation: int
    address: str = ""
    meta: bytes = b""

    def __post_init__(self) -> None:
        _check_incarnation(self.incarnation)
        if len(self.meta) > META_BYTES_HARD_MAX or len(self.address) > 256:
            raise ValueError("alive: meta or address too large")


@message(506)
@dataclass(frozen=True, slots=True, kw_only=True)
class Suspect(Message):
    """``source`` suspects ``node`` at ``incarnation``."""

    node: NodeId
    incarnation: int
    source: NodeId

    def __post_init__(self) -> None:
        _check_incarnation(self.incarnation)


@message(507)
@dataclass(frozen=True, slots=True, kw_only=True)
class Dead(Message):
    """``source`` declares ``node`` failed at ``incarnation`` (final for it)."""

    node: NodeId
    incarnation: int
    source: NodeId

    def __post_init__(self) -> None:
        _check_incarnation(self.incarnation)


@message(508)
@dataclass(frozen=True, slots=True, kw_only=True)
class Left(Message):
    """``node`` left the cluster gracefully at ``incarnation``."""

    node: NodeId
    incarnation: int

    def __post_init__(self) -> None:
        _check_incarnation(self.incarnation)


@message(509)
@dataclass(frozen=True, slots=True, kw_only=True)
class UserEvent(Message):
    """A user event ``name`` with ``payload``, the ``event_id``-th sent by ``origin``."""

    origin: NodeId
    event_id: int
    name: str
    payload: bytes = b""

    def __post_init__(self) -> None:
        if len(self.name) + len(self.payload) > EVENT_BYTES_HARD_MAX:
            raise ValueError("user event too large")


@message(510)
@dataclass(frozen=True, slots=True, kw_only=True)
class MemberState(Message):
    """One row of a push-pull exchange."""

    node: NodeId
    address: str
    incarnation: int
    status: MemberStatus
    meta: bytes = b""

    def __post_init__(self) -> None:
        _check_incarnation(self.incarnation)
        if len(self.meta) > META_BYTES_HARD_MAX or len(self.address) > 256:
            raise ValueError("member state: meta or address too large")


@message(511)
@dataclass(frozen=True, slots=True, kw_only=True)
class PushPull(Message):
    """Anti-entropy request carrying the sender's member table."""

    join: bool
    members: tuple[MemberState, ...]

    def __post_init__(self) -> None:
        if len(self.members) > MEMBERS_MAX:
            raise ValueError("push-pull: too many members")


@message(512)
@dataclass(frozen=True, slots=True, kw_only=True)
class PushPullReply(Message):
    """Anti-entropy answer carrying the responder's member table."""

    members: tuple[MemberState, ...]

    def __post_init__(self) -> None:
        if len(self.members) > MEMBERS_MAX:
            raise ValueError("push-pull reply: too many members")


@message(513)
@dataclass(frozen=True, slots=True, kw_only=True)
class IncarnationRecord(Message):
    """Write-ahead log record: this member started at ``incarnation``."""

    incarnation: int

    def __post_init__(self) -> None:
        _check_incarnation(self.incarnation)


#: A piggybacked update.
Update: TypeAlias = Alive | Suspect | Dead | Left | UserEvent

#: Every gossip datagram or stream message a member receives.
GossipMessage: TypeAlias = Ping | Ack | PingReq | Nack | Gossip | PushPull | PushPullReply


@message(514)
@dataclass(frozen=True, slots=True, kw_only=True)
class MembersQuery(Message):
    """Ask an agent for its view (``synod members``); answered by the agent glue."""

    request_id: int


@message(515)
@dataclass(frozen=True, slots=True, kw_only=True)
class MembersReply(Message):
    """An agent's view, for ``synod members``."""

    request_id: int
    members: tuple[MemberState, ...]

    def __post_init__(self) -> None:
        if len(self.members) > MEMBERS_MAX:
            raise ValueError("members reply: too many members")
