"""Wire messages and state-machine operations of the transaction block.

Tags 800-999 belong to txn (``synod.codec.registry.TAG_RANGES``). ONLY APPEND:
a tag once shipped is never reused or renumbered.

Three families, each a union:

* ``ShardOp`` (800-829): operations chosen through a shard's Paxos log and
  applied by ``ShardMachine`` (prepare records, decisions, fast-path commits,
  coordinator transaction records). They travel inside ``paxos.Command.op`` as
  encoded bytes.
* ``ClientBody`` (830-859): what a client asks a shard leader, inside
  ``ClientRequest``, and the answers (``ErrorReply`` for refusals, whose
  ``hint`` carries the conflicting key).
* ``PeerMessage`` (860-889): 2PC between shard leaders: prepare requests,
  votes, decisions, acknowledgements and in-doubt queries, one at a time or
  in a ``PeerBatch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from synod.codec.registry import Message, message
from synod.paxos.messages import Ballot

# ---------------------------------------------------------------- data


@message(800)
@dataclass(frozen=True, slots=True, kw_only=True)
class Write(Message):
    """Set ``key`` to ``value``; ``value`` None deletes the key."""

    key: str
    value: str | None


@message(801)
@dataclass(frozen=True, slots=True, kw_only=True)
class Part(Message):
    """What one transaction did at one shard: the keys and ranges it read there
    (its shared locks), the ballots of the leaders that served those reads
    (every distinct one, from ``TxnValue.ballot`` / ``TxnRows.ballot``; a part
    with reads must carry at least one), and the writes it asks to make there.
    The part commits only if every read ballot is the ballot of the leader
    committing it (and, in the log, of the last epoch): a read answered by a
    deposed leader from its stale state can never be committed."""

    group: str
    read_keys: tuple[str, ...] = ()
    read_ranges: tuple[tuple[str, str], ...] = ()
    writes: tuple[Write, ...] = ()
    read_ballots: tuple[Ballot, ...] = ()


@message(802)
@dataclass(frozen=True, slots=True, kw_only=True)
class Change(Message):
    """One applied change, for watches: ``key`` became ``value`` (None: deleted)
    at shard revision ``revision``."""

    revision: int
    key: str
    value: str | None


# ---------------------------------------------------------------- shard ops


@message(810)
@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareOp(Message):
    """A participant's prepare record: ``txn`` holds ``part``'s locks, taken under
    ``lock_ballot``, and will apply ``part.writes`` if the coordinator decides commit."""

    txn: str
    ts: int
    coordinator: str
    part: Part
    lock_ballot: Ballot


@message(811)
@dataclass(frozen=True, slots=True, kw_only=True)
class DecideOp(Message):
    """A participant applies the coordinator's decision for ``txn``.
    ``writes`` is empty in a correct run (the prepare record holds them)."""

    txn: str
    commit: bool
    writes: tuple[Write, ...] = ()


@message(812)
@dataclass(frozen=True, slots=True, kw_only=True)
class FastCommitOp(Message):
    """The single-shard fast path: ``txn`` read and writes only at this shard, its
    locks were taken under ``lock_ballot``; apply its writes (no 2PC)."""

    txn: str
    ts: int
    writes: tuple[Write, ...]
    lock_ballot: Ballot
    #: The ballots its reads were served under (``Part.read_ballots``).
    read_ballots: tuple[Ballot, ...] = ()


@message(813)
@dataclass(frozen=True, slots=True, kw_only=True)
class RecordBeginOp(Message):
    """The coordinator's transaction record for ``txn``: pending, over ``parts``."""

    txn: str
    ts: int
    parts: tuple[Part, ...]


@message(814)
@dataclass(frozen=True, slots=True, kw_only=True)
class RecordDecideOp(Message):
    """The coordinator's decision: the record moves pending -> committed/aborted."""

    txn: str
    commit: bool


@message(815)
@dataclass(frozen=True, slots=True, kw_only=True)
class RecordForgetOp(Message):
    """Every participant acknowledged these decisions: drop their records (one
    operation for many, so forgetting costs the log little)."""

    txns: tuple[str, ...]


@message(816)
@dataclass(frozen=True, slots=True, kw_only=True)
class EpochOp(Message):
    """A new leader's first operation: from here on in the log, only prepare
    records and fast-path commits whose locks were taken under ``ballot`` are
    valid. (A proposal of a deposed leader may still be chosen later -- a newer
    leader re-proposes what it finds accepted -- and must then be refused.)"""

    ballot: Ballot


@message(817)
@dataclass(frozen=True, slots=True, kw_only=True)
class OpBatch(Message):
    """Operations a leader proposed while its Paxos window was shut, in one log
    command: each is applied in order exactly as it would be alone (its own
    checks, its own revision, its own result), and one refused leaves the others
    whole. One command instead of one each saves a command's exactly-once entry,
    result and decoding per operation, and lets the rows of all go to the engine
    in one statement per table."""

    ops: tuple[PrepareOp | DecideOp | FastCommitOp | RecordBeginOp | RecordDecideOp, ...]


ShardOp: TypeAlias = (
    PrepareOp | DecideOp | FastCommitOp | OpBatch | RecordBeginOp | RecordDecideOp | RecordForgetOp | EpochOp
)


@message(820)
@dataclass(frozen=True, slots=True, kw_only=True)
class OpResult(Message):
    """What applying a ``ShardOp`` did: ``status`` is ``"ok"``, ``"duplicate"``
    (already applied or already decided) or ``"refused"`` with ``detail``."""

    status: str
    detail: str = ""
    revision: int = 0


@message(821)
@dataclass(frozen=True, slots=True, kw_only=True)
class OpResults(Message):
    """What applying an ``OpBatch`` did: one ``OpResult`` per operation, in order."""

    items: tuple[OpResult, ...]


# ---------------------------------------------------------------- client bodies


@message(830)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnGet(Message):
    """Read ``key`` in transaction ``txn`` (a shared lock until it ends).
    ``ts`` is the transaction's first timestamp (its wound-wait priority)."""

    txn: str
    ts: int
    key: str


@message(831)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnScan(Message):
    """Read keys in ``[start, end)`` (``end`` "" = to the end of the shard), at most
    ``limit``, in transaction ``txn`` (a shared lock on the range read)."""

    txn: str
    ts: int
    start: str
    end: str
    limit: int


@message(832)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnCommit(Message):
    """Commit ``txn``: ``parts`` lists every shard it touched; the receiving group
    coordinates (``parts[0]`` names it). One part equal to this group: fast path."""

    txn: str
    ts: int
    parts: tuple[Part, ...]


@message(833)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnRelease(Message):
    """The client aborts ``txn`` before commit: release its locks here."""

    txn: str


@message(834)
@dataclass(frozen=True, slots=True, kw_only=True)
class Watch(Message):
    """Changes to keys in ``[start, end)`` from ``from_revision`` on (answered at
    once with what is there, possibly nothing)."""

    start: str
    end: str
    from_revision: int


@message(835)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnValue(Message):
    """A read's answer. ``ballot``: the ballot of the leader that served it under
    a shared lock (None from a plain query); the commit carries it back."""

    value: str | None
    revision: int
    ballot: Ballot | None = None


@message(836)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnRows(Message):
    """A scan's answer; ``ballot`` as in ``TxnValue``."""

    rows: tuple[tuple[str, str], ...]
    more: bool
    revision: int
    ballot: Ballot | None = None


@message(837)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnOutcome(Message):
    """``txn`` committed (``committed``) or was released/aborted."""

    txn: str
    committed: bool


@message(838)
@dataclass(frozen=True, slots=True, kw_only=True)
class WatchEvents(Message):
    events: tuple[Change, ...]
    revision: int


@message(839)
@dataclass(frozen=True, slots=True, kw_only=True)
class WatchWait(Message):
    """``Watch`` as a long poll: answered as soon as a change to a key in
    ``[start, end)`` at ``from_revision`` or later is applied at the replica, or
    with no events after ``wait_ms`` (bounded by ``TxnConfig.watch_wait_ms_max``)."""

    start: str
    end: str
    from_revision: int
    wait_ms: float


@message(840)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnBatch(Message):
    """Several ``TxnCommit``s coordinated by one group, for its leader, in one request
    (the client library batches the commits its callers issue at once); answered
    by one ``TxnBatchReply`` once every commit has its answer. Only commits: a
    commit's progress at the server never waits for a client to hear an answer,
    so holding the answers back until the last is ready cannot block anything."""

    items: tuple[TxnCommit, ...]


@message(841)
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnBatchReply(Message):
    """One answer per item of a ``TxnBatch``, in order (``TxnOutcome`` or ``ErrorReply``)."""

    items: tuple[Message, ...]


ClientBody: TypeAlias = TxnGet | TxnScan | TxnCommit | TxnRelease | Watch | WatchWait | TxnBatch

# ---------------------------------------------------------------- peer messages


@message(860)
@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareRequest(Message):
    """Coordinator -> participant group: prepare ``part`` of ``txn``."""

    txn: str
    ts: int
    coordinator: str
    part: Part
    #: No part of the transaction writes: votes need no prepare record.
    read_only: bool = False


@message(861)
@dataclass(frozen=True, slots=True, kw_only=True)
class Vote(Message):
    """Participant ``group`` votes on ``txn``; a no names its reason and key."""

    txn: str
    group: str
    yes: bool
    code: str = ""
    key: str = ""


@message(862)
@dataclass(frozen=True, slots=True, kw_only=True)
class Decision(Message):
    """Coordinator -> participant: the decision chosen for ``txn``."""

    txn: str
    coordinator: str
    commit: bool
    writes: tuple[Write, ...] = ()


@message(863)
@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionAck(Message):
    """Participant ``group`` applied the decision on ``txn``."""

    txn: str
    group: str


@message(864)
@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionQuery(Message):
    """An in-doubt participant ``group`` asks the coordinator's group about ``txn``."""

    txn: str
    group: str


PeerMessage: TypeAlias = PrepareRequest | Vote | Decision | DecisionAck | DecisionQuery


@message(865)
@dataclass(frozen=True, slots=True, kw_only=True)
class PeerBatch(Message):
    """The 2PC messages one event of a shard leader has for the same node, in one
    message: handled there in order, in one event, as if they came alone (so the
    operations they lead to leave together too)."""

    messages: tuple[PeerMessage, ...]
