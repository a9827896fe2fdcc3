"""Operations, results and events of the lock namespace (tags 600-799).

Operations are what the master proposes to the cell's Paxos group (or asks the
namespace for, read-only); each names the session it acts for. Operations whose
effect depends on time (sessions, lock-delay) carry ``now_ms``, the master's
clock when it proposed them: the namespace never reads a clock. ONLY APPEND tags.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from synod.codec.kernel import ErrorReply
from synod.codec.registry import Message, message
from synod.lock.sequencer import LockMode, Sequencer

#: ``expected_generation`` meaning "whatever the current generation is".
ANY_GENERATION = -1

# ---------------------------------------------------------------- operations


@message(610)
@dataclass(frozen=True, slots=True, kw_only=True)
class OpenSession(Message):
    """Start a session for ``principal`` (the identity the master authenticated)."""

    principal: str
    now_ms: float


@message(611)
@dataclass(frozen=True, slots=True, kw_only=True)
class CloseSession(Message):
    """The client ends its session: locks released at once (no lock-delay),
    ephemeral nodes deleted."""

    session: int
    now_ms: float


@message(612)
@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireSession(Message):
    """The master decided the session's lease ran out at ``now_ms``: its locks are
    released *with* lock-delay, its ephemeral nodes deleted."""

    session: int
    now_ms: float


@message(613)
@dataclass(frozen=True, slots=True, kw_only=True)
class Create(Message):
    """Create a file or directory. ``sequential`` appends a ten-digit number,
    unique and increasing within the parent, to the last component."""

    session: int
    path: str
    directory: bool = False
    ephemeral: bool = False
    sequential: bool = False
    contents: bytes = b""


@message(614)
@dataclass(frozen=True, slots=True, kw_only=True)
class Write(Message):
    """Replace a file's contents; with ``expected_generation`` a compare-and-set."""

    session: int
    path: str
    contents: bytes
    expected_generation: int = ANY_GENERATION


@message(615)
@dataclass(frozen=True, slots=True, kw_only=True)
class Delete(Message):
    session: int
    path: str
    expected_generation: int = ANY_GENERATION


@message(616)
@dataclass(frozen=True, slots=True, kw_only=True)
class Acquire(Message):
    """Try to take the lock on ``path`` in ``mode``. ``lock_delay_ms`` (negative:
    the cell's default) is the delay applied if this holder's session ends
    without releasing."""

    session: int
    path: str
    mode: LockMode
    now_ms: float
    lock_delay_ms: float = -1.0


@message(617)
@dataclass(frozen=True, slots=True, kw_only=True)
class Release(Message):
    session: int
    path: str


@message(618)
@dataclass(frozen=True, slots=True, kw_only=True)
class SetAcl(Message):
    """Replace the node's three ACLs (needs the change ACL)."""

    session: int
    path: str
    read: tuple[str, ...]
    write: tuple[str, ...]
    change: tuple[str, ...]


@message(619)
@dataclass(frozen=True, slots=True, kw_only=True)
class GetContents(Message):
    session: int
    path: str


@message(620)
@dataclass(frozen=True, slots=True, kw_only=True)
class Stat(Message):
    session: int
    path: str


@message(621)
@dataclass(frozen=True, slots=True, kw_only=True)
class ListChildren(Message):
    session: int
    path: str


@message(622)
@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSequencer(Message):
    """Is ``sequencer`` still the current holding of its lock?"""

    sequencer: Sequencer


@message(623)
@dataclass(frozen=True, slots=True, kw_only=True)
class BeginEpoch(Message):
    """A new master's first command: raise the cell's epoch (Chubby 2.9)."""

    node: str
    now_ms: float


@message(624)
@dataclass(frozen=True, slots=True, kw_only=True)
class OpenSessions(Message):
    """Start ``count`` sessions for ``principal`` in one command: a client host
    that keeps many sessions (a proxy, a job runner) opens them together, as it
    sends their KeepAlives together (``KeepAliveBatch``). The sessions get
    consecutive numbers; all or none are opened."""

    principal: str
    count: int
    now_ms: float


Operation: TypeAlias = (
    OpenSession | OpenSessions | CloseSession | ExpireSession | Create | Write | Delete | Acquire | Release
    | SetAcl | GetContents | Stat | ListChildren | CheckSequencer | BeginEpoch
)
READ_ONLY: tuple[type[Message], ...] = (GetContents, Stat, ListChildren, CheckSequencer)

# ---------------------------------------------------------------- results


@message(630)
@dataclass(frozen=True, slots=True, kw_only=True)
class NodeMeta(Message):
    """A node's metadata (Chubby 2.6): the instance number tells apart nodes of
    the same name; the three generations grow with each change of contents, lock
    (free to held) and ACL; the checksum names the contents."""

    path: str
    instance: int
    content_generation: int
    lock_generation: int
    acl_generation: int
    checksum: int
    directory: bool
    ephemeral: bool
    lock_mode: LockMode
    read_acl: tuple[str, ...]
    write_acl: tuple[str, ...]
    change_acl: tuple[str, ...]


@message(631)
@dataclass(frozen=True, slots=True, kw_only=True)
class Contents(Message):
    meta: NodeMeta
    contents: bytes


@message(632)
@dataclass(frozen=True, slots=True, kw_only=True)
class Children(Message):
    path: str
    names: tuple[str, ...]


@message(633)
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOpened(Message):
    session: int
    principal: str


@message(634)
@dataclass(frozen=True, slots=True, kw_only=True)
class Acquired(Message):
    sequencer: Sequencer


@message(635)
@dataclass(frozen=True, slots=True, kw_only=True)
class Done(Message):
    detail: str = ""


@message(636)
@dataclass(frozen=True, slots=True, kw_only=True)
class SequencerValidity(Message):
    valid: bool


@message(637)
@dataclass(frozen=True, slots=True, kw_only=True)
class OpError(Message):
    """A typed refusal (``synod.lock.errors``); nothing was changed."""

    code: str
    detail: str


@message(638)
@dataclass(frozen=True, slots=True, kw_only=True)
class EpochBegun(Message):
    """The new epoch, and the log's clock (the new master's time never runs
    behind it)."""

    epoch: int
    clock_ms: float


@message(639)
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionsOpened(Message):
    """The sessions ``first`` .. ``first + count - 1`` of an ``OpenSessions``."""

    first: int
    count: int
    principal: str


Result: TypeAlias = (
    NodeMeta | Contents | Children | SessionOpened | SessionsOpened | Acquired | Done | SequencerValidity | OpError
    | EpochBegun
)

# ---------------------------------------------------------------- events


class EventKind(enum.IntEnum):
    """What a subscriber hears about (Chubby 2.7), plus ``LOCK_RELEASED`` (so a
    blocked acquirer knows when to try again) and ``SESSION_ENDED``."""

    CONTENTS_MODIFIED = 1
    CHILD_ADDED = 2
    CHILD_REMOVED = 3
    CHILD_MODIFIED = 4
    LOCK_ACQUIRED = 5
    CONFLICTING_LOCK_REQUEST = 6
    HANDLE_INVALID = 7
    MASTER_FAILED_OVER = 8
    LOCK_RELEASED = 9
    SESSION_ENDED = 10


@message(640)
@dataclass(frozen=True, slots=True, kw_only=True)
class Event(Message):
    """One event about ``path`` (for child events, ``path`` is the parent and
    ``name`` the child). ``index`` orders the events of one cell; ``session`` is
    the session concerned (the acquirer, the ended session), 0 if none."""

    kind: EventKind
    path: str
    name: str = ""
    session: int = 0
    index: int = 0
    #: For ``LOCK_ACQUIRED``: the lock generation the acquire produced.
    generation: int = 0


# ---------------------------------------------------------------- client protocol


@message(650)
@dataclass(frozen=True, slots=True, kw_only=True)
class LockCall(Message):
    """A client's operation for the master. ``(seq, seen_below)`` make it
    exactly-once across retries (``synod.paxos.statemachine``), within the
    client library's ``incarnation`` (random, so a new session object of the
    same client never meets the results of an older one); ``epoch`` is the
    master epoch the client knows (0 only for ``OpenSession``); ``cache`` asks
    for a ``GetContents`` result the client may cache."""

    epoch: int
    incarnation: int
    seq: int
    seen_below: int
    op: Message
    cache: bool = False


@message(651)
@dataclass(frozen=True, slots=True, kw_only=True)
class LockReply(Message):
    """The result of a ``LockCall``. ``cacheable``: the client may keep the
    ``Contents`` until invalidated; ``invalidation_mark`` is the last
    invalidation number the master had issued when it read them (an
    invalidation of the same path numbered above it, if the client already got
    one, means the contents are already stale and must not be cached)."""

    epoch: int
    result: Message
    cacheable: bool = False
    invalidation_mark: int = 0


@message(652)
@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAlive(Message):
    """Extend the session's lease; acknowledges events up to ``events_acked``
    and the invalidations listed (the client has dropped those cache entries)."""

    session: int
    epoch: int
    events_acked: int = 0
    invalidations_acked: tuple[int, ...] = ()


@message(653)
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent(Message):
    """An event queued for one session, numbered per session."""

    seq: int
    event: Event


@message(654)
@dataclass(frozen=True, slots=True, kw_only=True)
class Invalidation(Message):
    """Drop the cached contents of ``path``; ``number`` grows over the master's life."""

    number: int
    path: str


@message(655)
@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAliveReply(Message):
    """The master's answer, held until shortly before the lease would end or
    until there are events or invalidations to carry. ``lease_ms``: how long the
    lease lasts from when the master sent this. ``failover``: the master changed
    since the client's epoch; the client flushes its cache and re-subscribes."""

    epoch: int
    lease_ms: float
    events: tuple[SessionEvent, ...] = ()
    invalidations: tuple[Invalidation, ...] = ()
    failover: bool = False


@message(656)
@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe(Message):
    """Ask for events of ``kinds`` about ``path`` (kept by the master in memory;
    a client re-subscribes after a failover event)."""

    session: int
    epoch: int
    path: str
    kinds: tuple[EventKind, ...]


@message(657)
@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAliveBatch(Message):
    """Many sessions' KeepAlives in one request, from a client host that keeps
    many sessions on one connection (``synod.lock.client.KeepAliveBatcher``).
    The master treats each entry as that session's KeepAlive but holds the batch
    as one: it answers every entry when the first of them must be answered
    (events or invalidations waiting, or the earliest lease about to end), so
    an idle host costs the master one request per lease, not one per session."""

    keepalives: tuple[KeepAlive, ...]


@message(658)
@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAliveBatchReply(Message):
    """One answer per entry of a ``KeepAliveBatch``, in the same order: what a
    single KeepAlive of that session would have got."""

    replies: tuple[KeepAliveReply | ErrorReply, ...]


@message(659)
@dataclass(frozen=True, slots=True, kw_only=True)
class LockCallBatch(Message):
    """Several calls of one client connection in one request
    (``LockClient`` gathers the changes its sessions send during one turn of
    its event loop). The master takes each entry exactly as a ``LockCall`` of
    its own and answers the batch once every entry has its answer."""

    calls: tuple[LockCall, ...]


@message(660)
@dataclass(frozen=True, slots=True, kw_only=True)
class LockCallBatchReply(Message):
    """One answer per entry of a ``LockCallBatch``, in the same order: what the
    ``LockCall`` alone would have got."""

    replies: tuple[LockReply | ErrorReply, ...]
