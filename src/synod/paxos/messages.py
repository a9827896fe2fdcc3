"""Wire messages and write-ahead-log records of the Multi-Paxos replica.

Tags 300-499 belong to paxos (``synod.codec.registry.TAG_RANGES``). ONLY APPEND:
a tag once shipped is never reused or renumbered.

Peer messages (Phase 1, Phase 2, learning, catch-up, elections) are one union,
``PeerMessage``; client request bodies are ``ClientBody``; WAL records are
``Record``. Each message is a frozen, keyword-only, slotted dataclass.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from synod.codec.registry import Message, message
from synod.core.ids import NodeId


@message(300)
@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Ballot(Message):
    """A ballot number: ordered by round, then by node id (so two proposers never
    share a ballot)."""

    round: int
    node: NodeId

    def __str__(self) -> str:
        return f"{self.round}.{self.node}"


#: The ballot below every real ballot.
BALLOT_ZERO = Ballot(round=0, node=NodeId(""))
#: Marks a log entry whose value is known to be chosen. Above every real ballot,
#: so a candidate that collects it in Phase 1 always keeps that value.
BALLOT_CHOSEN = Ballot(round=1 << 62, node=NodeId(""))


class ValueKind(enum.IntEnum):
    """What a log slot holds."""

    NOOP = 0
    COMMANDS = 1
    MEMBERS = 2


class ReadMode(enum.IntEnum):
    """How a read is served (see docs/paxos.md)."""

    #: Linearizable, served by the leader from its state while its lease holds
    #: (falls back to QUORUM when it does not).
    LEASE = 0
    #: Linearizable, after a round of acknowledgements from a majority confirms the
    #: leader's ballot still stands (no lease needed).
    QUORUM = 1
    #: Served by any replica from its local state: may be arbitrarily stale.
    STALE = 2


# ---------------------------------------------------------------- log values


@message(301)
@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Message):
    """One client command. ``(client, seq)`` names it for exactly-once;
    ``seen_below`` is the lowest sequence number whose answer the client has not
    yet seen, so results below it may be forgotten."""

    client: str
    seq: int
    seen_below: int
    op: bytes


@message(302)
@dataclass(frozen=True, slots=True, kw_only=True)
class Value(Message):
    """The value of one slot: a no-op, a batch of commands, or a new member set."""

    kind: ValueKind
    commands: tuple[Command, ...] = ()
    members: tuple[NodeId, ...] = ()


NOOP = Value(kind=ValueKind.NOOP)


@message(303)
@dataclass(frozen=True, slots=True, kw_only=True)
class Entry(Message):
    """``value`` accepted in ``slot`` at ``ballot`` (``BALLOT_CHOSEN``: known chosen)."""

    slot: int
    ballot: Ballot
    value: Value


# ---------------------------------------------------------------- peer messages


@message(310)
@dataclass(frozen=True, slots=True, kw_only=True)
class PreVote(Message):
    """Could I win with ``ballot``? (Nothing is promised or persisted.)"""

    ballot: Ballot
    chosen_index: int


@message(311)
@dataclass(frozen=True, slots=True, kw_only=True)
class PreVoteReply(Message):
    ballot: Ballot
    granted: bool


@message(312)
@dataclass(frozen=True, slots=True, kw_only=True)
class Prepare(Message):
    """Phase 1a for every slot from ``from_slot`` on."""

    ballot: Ballot
    from_slot: int


@message(313)
@dataclass(frozen=True, slots=True, kw_only=True)
class Promise(Message):
    """Phase 1b: the acceptor's accepted entries from ``from_slot`` on.
    ``truncated``: there were more than fit, or the acceptor's log no longer
    reaches back to ``from_slot`` (the candidate must catch up first)."""

    ballot: Ballot
    from_slot: int
    entries: tuple[Entry, ...]
    chosen_index: int
    truncated: bool


@message(314)
@dataclass(frozen=True, slots=True, kw_only=True)
class Accept(Message):
    """Phase 2a for ``entries`` (possibly none: a heartbeat). ``round`` numbers the
    leader's sends for lease accounting; ``chosen_index`` tells learners which
    prefix of the log is chosen."""

    ballot: Ballot
    round: int
    entries: tuple[Entry, ...]
    chosen_index: int


@message(315)
@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted(Message):
    """Phase 2b: ``slots`` accepted at ``ballot``, sent only once durable."""

    ballot: Ballot
    round: int
    slots: tuple[int, ...]
    chosen_index: int


@message(316)
@dataclass(frozen=True, slots=True, kw_only=True)
class Reject(Message):
    """A Prepare or Accept was refused: ``promised`` is what the acceptor holds;
    ``reason`` is ``"stale"`` or ``"lease"`` or ``"waiting"``; for the last two,
    ``retry_after_ms`` is how long until the acceptor may promise (its clock)."""

    ballot: Ballot
    promised: Ballot
    reason: str
    retry_after_ms: float = 0.0


@message(317)
@dataclass(frozen=True, slots=True, kw_only=True)
class CatchupRequest(Message):
    """Send me chosen entries from ``from_slot``; or, with ``snapshot_index`` > 0,
    chunk ``chunk`` of that snapshot."""

    from_slot: int
    snapshot_index: int = 0
    chunk: int = 0


@message(318)
@dataclass(frozen=True, slots=True, kw_only=True)
class CatchupReply(Message):
    """Chosen entries (ballot ``BALLOT_CHOSEN``) in slot order."""

    entries: tuple[Entry, ...]
    chosen_index: int


@message(319)
@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotChunk(Message):
    """Chunk ``chunk`` of ``chunk_count`` of the snapshot taken at ``index``."""

    index: int
    chunk: int
    chunk_count: int
    data: bytes
    previous_members: tuple[NodeId, ...]
    members: tuple[NodeId, ...]
    members_from_slot: int


@message(320)
@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow(Message):
    """Leader transfer: campaign now (the sender released its lease)."""

    ballot: Ballot


@message(321)
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRelease(Message):
    """The leader at ``ballot`` gives up its lease (leader transfer)."""

    ballot: Ballot


PeerMessage: TypeAlias = (
    PreVote | PreVoteReply | Prepare | Promise | Accept | Accepted | Reject
    | CatchupRequest | CatchupReply | SnapshotChunk | TimeoutNow | LeaseRelease
)

# ---------------------------------------------------------------- client bodies


@message(340)
@dataclass(frozen=True, slots=True, kw_only=True)
class Read(Message):
    """A read-only query ``op`` served in ``mode``."""

    op: bytes
    mode: ReadMode = ReadMode.LEASE


@message(341)
@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeMembers(Message):
    """Add or remove one replica: the group becomes ``members`` (one change)."""

    members: tuple[NodeId, ...]


@message(342)
@dataclass(frozen=True, slots=True, kw_only=True)
class TransferLeader(Message):
    """Hand leadership to ``to`` (graceful shutdown of the current leader)."""

    to: NodeId


@message(343)
@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult(Message):
    """The result of command ``seq`` (``applied_slot`` is where it was applied)."""

    seq: int
    result: bytes
    applied_slot: int


@message(344)
@dataclass(frozen=True, slots=True, kw_only=True)
class ReadResult(Message):
    result: bytes
    applied_slot: int


@message(345)
@dataclass(frozen=True, slots=True, kw_only=True)
class Done(Message):
    """An administrative request (membership change, leader transfer) was done."""

    detail: str = ""


ClientBody: TypeAlias = Command | Read | ChangeMembers | TransferLeader

# ---------------------------------------------------------------- WAL records


@message(360)
@dataclass(frozen=True, slots=True, kw_only=True)
class PromiseRecord(Message):
    """The acceptor promised ``ballot``."""

    ballot: Ballot


@message(361)
@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptRecord(Message):
    """The acceptor accepted (or learned as chosen) ``entries``; an entry's
    ballot is also an implicit promise."""

    entries: tuple[Entry, ...]


@message(362)
@dataclass(frozen=True, slots=True, kw_only=True)
class LearnedRecord(Message):
    """Every slot up to ``chosen_index`` is chosen, and the latest entry recorded
    for it in this log (or the snapshot) holds its value."""

    chosen_index: int


@message(363)
@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRecord(Message):
    """The replicated state after applying every slot up to ``index``."""

    index: int
    chunks: tuple[bytes, ...]
    previous_members: tuple[NodeId, ...]
    members: tuple[NodeId, ...]
    members_from_slot: int


Record: TypeAlias = PromiseRecord | AcceptRecord | LearnedRecord | SnapshotRecord
