"""The lock cell's replicated state machine: files, directories, locks, sessions.

Theory of operation
-------------------
Burrows, *The Chubby lock service*, sections 2.3-2.8. The namespace is a tree of
nodes under ``/ls/<cell>``. Every node is a file or a directory, permanent or
ephemeral (deleted when the session that created it ends), carries small
contents (files only, at most ``contents_bytes_max``), three ACLs (read, write,
change ACL; inherited from the parent at creation) and metadata: an *instance*
number unique over the cell's whole life (so a node deleted and created again is
told apart), a *content generation* raised by every write (the basis of
compare-and-set), a *lock generation* raised each time its lock goes from free to
held (the basis of sequencers), an *ACL generation*, and a checksum of the
contents.

Every node is also an advisory reader/writer lock. ``Acquire`` only *tries*:
blocking acquires are the master's and the client's business (they retry when a
``LOCK_RELEASED`` event arrives, until their deadline). When a session ends by
*expiry* while holding a lock, the lock stays unavailable for its lock-delay;
when a session closes cleanly or releases, there is no delay.

Sessions are part of the state: ``OpenSession`` gives a session number and
records its principal (authenticated by the master), against which every ACL is
checked. Leases are *not* replicated: the master keeps them in memory and, when
one runs out, proposes ``ExpireSession`` with its clock in it. The namespace
itself never reads a clock: the only time it knows is the ``now_ms`` carried by
operations, kept as a high-water mark (``clock_ms``) so that it never goes back
when a new master with a slower clock takes over.

Every operation is checked completely before anything changes, so a refused
operation (a typed ``LockError``, answered as ``OpError``) changes nothing.
Every applied change appends ``Event`` records to ``events`` (drained by the
master glue), numbered by a cell-wide index: they exist only once the change
is chosen and applied, which is when subscribers may hear of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import msgpack

from synod.codec.registry import Message, decode, encode
from synod.core.errors import RemoteProtocolError, invariant
from synod.core.faults import declare_mutant, mutant
from synod.lock.config import LockConfig
from synod.lock.errors import (
    BadPathError,
    BadRequestError,
    ExistsError,
    GenerationMismatchError,
    IsDirectoryError,
    LimitError,
    LockBusyError,
    LockDelayError,
    LockError,
    NotDirectoryError,
    NotEmptyError,
    NotFoundError,
    NotHolderError,
    PermissionDeniedError,
    SessionExpiredError,
    TooLargeError,
)
from synod.lock.messages import (
    ANY_GENERATION,
    Acquire,
    Acquired,
    BeginEpoch,
    CheckSequencer,
    Children,
    CloseSession,
    Contents,
    Create,
    Delete,
    Done,
    EpochBegun,
    Event,
    EventKind,
    ExpireSession,
    GetContents,
    ListChildren,
    NodeMeta,
    OpenSession,
    OpenSessions,
    OpError,
    Release,
    SequencerValidity,
    SessionOpened,
    SessionsOpened,
    SetAcl,
    Stat,
    Write,
)
from synod.lock.sequencer import LockMode, Sequencer

MUTANT_SKIP_LOCK_DELAY = declare_mutant(
    "lock.skip_lock_delay",
    "a lock whose holder's session expired is free at once, without lock-delay",
)
MUTANT_EXPIRED_SESSION_KEEPS_LOCK = declare_mutant(
    "lock.expired_session_keeps_lock",
    "an expired session's exclusive locks are not released",
)

#: The wildcard principal: an ACL naming it admits everyone.
ANYONE = "*"
#: Digits of a sequential child's number.
SEQUENCE_DIGITS = 10
#: Events kept between two drains, at most (the master drains after each apply).
EVENTS_MAX = 100_000
#: Sessions one ``OpenSessions`` command opens, at most.
OPEN_SESSIONS_MAX = 4_096


@dataclass(slots=True)
class _Node:
    path: str
    directory: bool
    ephemeral_owner: int
    instance: int
    contents: bytes = b""
    content_generation: int = 0
    lock_generation: int = 0
    acl_generation: int = 0
    checksum: int = 0
    read_acl: tuple[str, ...] = ()
    write_acl: tuple[str, ...] = ()
    change_acl: tuple[str, ...] = ()
    children: set[str] = field(default_factory=set)
    sequence_next: int = 0
    lock_mode: LockMode = LockMode.FREE
    holders: set[int] = field(default_factory=set)
    holder_delay_ms: dict[int, float] = field(default_factory=dict)
    lock_delay_until_ms: float = 0.0


@dataclass(slots=True)
class _Session:
    principal: str
    locks: set[str] = field(default_factory=set)
    ephemerals: set[str] = field(default_factory=set)


def checksum_of(contents: bytes) -> int:
    """A 64-bit checksum of file contents (Chubby keeps one per file)."""
    return int.from_bytes(hashlib.blake2b(contents, digest_size=8).digest(), "big")


def _admits(acl: tuple[str, ...], principal: str) -> bool:
    return ANYONE in acl or principal in acl


class Namespace:
    """The namespace state machine (``synod.paxos.statemachine.StateMachine``).

    ``apply`` and ``query`` take encoded ``synod.lock.messages`` operations and
    return encoded results; ``execute`` does the same on message objects (for
    tests and for the master, which already holds the objects)."""

    __slots__ = ("_nodes", "_sessions", "clock_ms", "config", "epoch", "event_index", "events",
                 "instance_next", "listener", "session_next")

    def __init__(self, config: LockConfig | None = None) -> None:
        self.config = config or LockConfig()
        self._nodes: dict[str, _Node] = {}
        self._sessions: dict[int, _Session] = {}
        self.session_next = 1
        self.instance_next = 1
        self.clock_ms = 0.0
        self.epoch = 0
        self.event_index = 0
        self.events: list[Event] = []
        #: Called with the events of each applied operation (the master glue).
        self.listener: Callable[[list[Event]], None] | None = None
        self._make_root()

    def _make_root(self) -> None:
        acl = self.config.root_acl
        self._nodes[self.config.root] = _Node(
            path=self.config.root, directory=True, ephemeral_owner=0, instance=self._instance(),
            read_acl=acl, write_acl=acl, change_acl=acl, checksum=checksum_of(b""),
        )

    def _instance(self) -> int:
        number = self.instance_next
        self.instance_next += 1
        return number

    # ================================================================ StateMachine

    def apply(self, op: bytes) -> bytes:
        try:
            operation = decode(op)
        except RemoteProtocolError as error:
            return encode(OpError(code=BadRequestError.code, detail=str(error)))
        return encode(self.execute(operation))

    def query(self, op: bytes) -> bytes:
        try:
            operation = decode(op)
        except RemoteProtocolError as error:
            return encode(OpError(code=BadRequestError.code, detail=str(error)))
        if not isinstance(operation, GetContents | Stat | ListChildren | CheckSequencer):
            return encode(OpError(code=BadRequestError.code, detail="not a read-only operation"))
        return encode(self.execute(operation))

    def execute(self, operation: Message) -> Message:
        """Apply one operation object; a ``LockError`` becomes an ``OpError`` result."""
        start = len(self.events)
        try:
            result = self._dispatch(operation)
        except LockError as error:
            invariant(len(self.events) == start, "a refused operation emitted events")
            return OpError(code=error.code, detail=str(error))
        fresh = self.events[start:]
        if len(self.events) > EVENTS_MAX:
            del self.events[: len(self.events) - EVENTS_MAX]
        if fresh and self.listener is not None:
            self.listener(fresh)
        return result

    def take_events(self) -> list[Event]:
        """The events since the last call, in order."""
        taken, self.events = self.events, []
        return taken

    def _dispatch(self, operation: Message) -> Message:
        match operation:
            case OpenSession():
                return self._open_session(operation)
            case OpenSessions():
                return self._open_sessions(operation)
            case CloseSession():
                self._session(operation.session)
                self._tick(operation.now_ms)
                self._end_session(operation.session, expired=False)
                return Done(detail="closed")
            case ExpireSession():
                self._session(operation.session)
                self._tick(operation.now_ms)
                self._end_session(operation.session, expired=True)
                return Done(detail="expired")
            case Create():
                return self._create(operation)
            case Write():
                return self._write(operation)
            case Delete():
                return self._delete(operation)
            case Acquire():
                return self._acquire(operation)
            case Release():
                return self._release(operation)
            case SetAcl():
                return self._set_acl(operation)
            case GetContents():
                node = self._readable(operation.session, operation.path)
                return Contents(meta=self._meta(node), contents=node.contents)
            case Stat():
                return self._meta(self._readable(operation.session, operation.path))
            case ListChildren():
                node = self._readable(operation.session, operation.path)
                if not node.directory:
                    raise NotDirectoryError(f"{node.path} is a file")
                return Children(path=node.path, names=tuple(sorted(node.children)))
            case BeginEpoch():
                self._tick(operation.now_ms)
                self.epoch += 1
                return EpochBegun(epoch=self.epoch, clock_ms=self.clock_ms)
            case CheckSequencer():
                return SequencerValidity(valid=self.sequencer_valid(operation.sequencer))
            case _:
                raise BadRequestError(f"{type(operation).__name__} is not a lock operation")

    # ================================================================ paths, ACLs

    def validate_path(self, path: str) -> str:
        """Return ``path`` if it is a well-formed absolute path inside this cell."""
        config = self.config
        if not path:
            raise BadPathError("empty path")
        if "\x00" in path:
            raise BadPathError("path contains NUL")
        if not path.startswith("/"):
            raise BadPathError(f"relative path {path!r}: paths start with {config.root}")
        if len(path.encode()) > config.path_bytes_max:
            raise BadPathError(f"path longer than {config.path_bytes_max} bytes")
        if path != config.root and not path.startswith(config.root + "/"):
            raise BadPathError(f"path {path!r} is outside cell {config.root}")
        parts = path[len(config.root):].split("/")[1:]
        if len(parts) > config.depth_max:
            raise BadPathError(f"path deeper than {config.depth_max}")
        for part in parts:
            if part in ("", ".", ".."):
                raise BadPathError(f"path {path!r} has an empty, '.' or '..' component")
            if len(part.encode()) > config.component_bytes_max:
                raise BadPathError(f"component longer than {config.component_bytes_max} bytes")
        return path

    def _session(self, session: int) -> _Session:
        record = self._sessions.get(session)
        if record is None:
            raise SessionExpiredError(f"session {session} has ended")
        return record

    def _node(self, path: str) -> _Node:
        node = self._nodes.get(self.validate_path(path))
        if node is None:
            raise NotFoundError(f"{path} does not exist")
        return node

    def _readable(self, session: int, path: str) -> _Node:
        principal = self._session(session).principal
        node = self._node(path)
        if not _admits(node.read_acl, principal):
            raise PermissionDeniedError(f"{principal} may not read {path}")
        return node

    def _writable(self, session: int, path: str) -> tuple[_Session, _Node]:
        record = self._session(session)
        node = self._node(path)
        if not _admits(node.write_acl, record.principal):
            raise PermissionDeniedError(f"{record.principal} may not write {path}")
        return record, node

    def _check_acl(self, acl: tuple[str, ...]) -> tuple[str, ...]:
        if not acl or len(acl) > self.config.acl_principals_max:
            raise LimitError(f"an ACL names 1..{self.config.acl_principals_max} principals")
        for principal in acl:
            if not principal or "\x00" in principal or len(principal) > 255:
                raise BadRequestError(f"bad principal {principal!r}")
        return tuple(sorted(set(acl)))

    def _time(self, now_ms: float) -> float:
        """The log's time after an operation carrying ``now_ms`` (not yet kept)."""
        if now_ms != now_ms or now_ms < 0 or now_ms == float("inf"):  # NaN, negative, inf
            raise BadRequestError(f"bad time {now_ms!r}")
        return max(self.clock_ms, now_ms)

    def _tick(self, now_ms: float) -> None:
        self.clock_ms = self._time(now_ms)

    def _emit(self, kind: EventKind, path: str, name: str = "", session: int = 0,
              generation: int = 0) -> None:
        self.event_index += 1
        self.events.append(Event(kind=kind, path=path, name=name, session=session,
                                 index=self.event_index, generation=generation))

    # ================================================================ sessions

    def _open_session(self, operation: OpenSession) -> Message:
        if not operation.principal or len(operation.principal) > 255 or "\x00" in operation.principal:
            raise BadRequestError(f"bad principal {operation.principal!r}")
        now_ms = self._time(operation.now_ms)
        if len(self._sessions) >= self.config.sessions_max:
            raise LimitError(f"{self.config.sessions_max} sessions open")
        self.clock_ms = now_ms
        session = self.session_next
        self.session_next += 1
        self._sessions[session] = _Session(principal=operation.principal)
        return SessionOpened(session=session, principal=operation.principal)

    def _open_sessions(self, operation: OpenSessions) -> Message:
        if not operation.principal or len(operation.principal) > 255 or "\x00" in operation.principal:
            raise BadRequestError(f"bad principal {operation.principal!r}")
        if not 1 <= operation.count <= OPEN_SESSIONS_MAX:
            raise BadRequestError(f"open 1 to {OPEN_SESSIONS_MAX} sessions at once, not {operation.count}")
        now_ms = self._time(operation.now_ms)
        if len(self._sessions) + operation.count > self.config.sessions_max:
            raise LimitError(f"{self.config.sessions_max} sessions at most")
        self.clock_ms = now_ms
        first = self.session_next
        self.session_next += operation.count
        for session in range(first, self.session_next):
            self._sessions[session] = _Session(principal=operation.principal)
        return SessionsOpened(first=first, count=operation.count, principal=operation.principal)

    def _end_session(self, session: int, *, expired: bool) -> None:
        record = self._session(session)
        for path in sorted(record.locks):
            node = self._nodes[path]
            if expired and mutant(MUTANT_EXPIRED_SESSION_KEEPS_LOCK) and node.lock_mode is LockMode.EXCLUSIVE:
                continue
            delay_ms = node.holder_delay_ms.get(session, self.config.lock_delay_ms)
            self._drop_holder(node, session)
            if expired and not mutant(MUTANT_SKIP_LOCK_DELAY):
                node.lock_delay_until_ms = max(node.lock_delay_until_ms, self.clock_ms + delay_ms)
        # Deepest first, so an ephemeral directory's ephemeral children go before it.
        for path in sorted(record.ephemerals, key=lambda p: (-p.count("/"), p)):
            if path in self._nodes:
                self._remove(self._nodes[path])
        if expired and mutant(MUTANT_EXPIRED_SESSION_KEEPS_LOCK) and record.locks:
            # The planted bug: the session record lingers so its locks look held.
            record.ephemerals.clear()
            self._emit(EventKind.SESSION_ENDED, self.config.root, session=session)
            return
        del self._sessions[session]
        self._emit(EventKind.SESSION_ENDED, self.config.root, session=session)

    def session_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._sessions))

    def ephemerals_of(self, session: int) -> tuple[str, ...]:
        record = self._sessions.get(session)
        return () if record is None else tuple(sorted(record.ephemerals))

    def principal_of(self, session: int) -> str | None:
        record = self._sessions.get(session)
        return None if record is None else record.principal

    # ================================================================ nodes

    def _parent_path(self, path: str) -> str:
        return path.rsplit("/", 1)[0]

    def _create(self, operation: Create) -> Message:
        record = self._session(operation.session)
        path = self.validate_path(operation.path)
        if path == self.config.root:
            raise ExistsError(f"{path} exists")
        parent = self._node(self._parent_path(path))
        if not parent.directory:
            raise NotDirectoryError(f"{parent.path} is a file")
        if parent.ephemeral_owner:
            raise BadRequestError(f"{parent.path} is ephemeral and cannot have children")
        if not _admits(parent.write_acl, record.principal):
            raise PermissionDeniedError(f"{record.principal} may not create in {parent.path}")
        if operation.directory and operation.contents:
            raise IsDirectoryError("a directory has no contents")
        if len(operation.contents) > self.config.contents_bytes_max:
            raise TooLargeError(f"contents of {len(operation.contents)} bytes over {self.config.contents_bytes_max}")
        if len(self._nodes) >= self.config.nodes_max:
            raise LimitError(f"{self.config.nodes_max} nodes in the cell")
        if len(parent.children) >= self.config.children_max:
            raise LimitError(f"{self.config.children_max} children in {parent.path}")
        name = path.rsplit("/", 1)[1]
        if operation.sequential:
            name = f"{name}{parent.sequence_next:0{SEQUENCE_DIGITS}d}"
            if len(name.encode()) > self.config.component_bytes_max:
                raise BadPathError("sequential name too long")
            path = f"{parent.path}/{name}"
        if path in self._nodes:
            raise ExistsError(f"{path} exists")
        if operation.sequential:
            parent.sequence_next += 1
        node = _Node(
            path=path, directory=operation.directory,
            ephemeral_owner=operation.session if operation.ephemeral else 0,
            instance=self._instance(), contents=operation.contents,
            checksum=checksum_of(operation.contents), read_acl=parent.read_acl,
            write_acl=parent.write_acl, change_acl=parent.change_acl,
        )
        self._nodes[path] = node
        parent.children.add(name)
        if operation.ephemeral:
            record.ephemerals.add(path)
        self._emit(EventKind.CHILD_ADDED, parent.path, name=name, session=operation.session)
        return self._meta(node)

    def _write(self, operation: Write) -> Message:
        _record, node = self._writable(operation.session, operation.path)
        if node.directory:
            raise IsDirectoryError(f"{node.path} is a directory")
        if len(operation.contents) > self.config.contents_bytes_max:
            raise TooLargeError(f"contents of {len(operation.contents)} bytes over {self.config.contents_bytes_max}")
        expected = operation.expected_generation
        if expected != ANY_GENERATION and expected != node.content_generation:
            raise GenerationMismatchError(
                f"{node.path} is at content generation {node.content_generation}, not {expected}")
        node.contents = operation.contents
        node.content_generation += 1
        node.checksum = checksum_of(operation.contents)
        self._emit(EventKind.CONTENTS_MODIFIED, node.path, session=operation.session)
        parent = self._parent_path(node.path)
        if node.path != self.config.root:
            self._emit(EventKind.CHILD_MODIFIED, parent, name=node.path.rsplit("/", 1)[1],
                       session=operation.session)
        return self._meta(node)

    def _delete(self, operation: Delete) -> Message:
        _record, node = self._writable(operation.session, operation.path)
        if node.path == self.config.root:
            raise BadRequestError("the cell's root cannot be deleted")
        if node.children:
            raise NotEmptyError(f"{node.path} has {len(node.children)} children")
        expected = operation.expected_generation
        if expected != ANY_GENERATION and expected != node.content_generation:
            raise GenerationMismatchError(
                f"{node.path} is at content generation {node.content_generation}, not {expected}")
        self._remove(node)
        return Done(detail="deleted")

    def _remove(self, node: _Node) -> None:
        invariant(not node.children, f"removing {node.path} with children")
        for session in sorted(node.holders):
            self._sessions[session].locks.discard(node.path)
        if node.ephemeral_owner:
            owner = self._sessions.get(node.ephemeral_owner)
            if owner is not None:
                owner.ephemerals.discard(node.path)
        del self._nodes[node.path]
        parent_path, name = node.path.rsplit("/", 1)
        self._nodes[parent_path].children.discard(name)
        self._emit(EventKind.HANDLE_INVALID, node.path)
        self._emit(EventKind.CHILD_REMOVED, parent_path, name=name)

    def _set_acl(self, operation: SetAcl) -> Message:
        record = self._session(operation.session)
        node = self._node(operation.path)
        if not _admits(node.change_acl, record.principal):
            raise PermissionDeniedError(f"{record.principal} may not change the ACLs of {node.path}")
        read = self._check_acl(operation.read)
        write = self._check_acl(operation.write)
        change = self._check_acl(operation.change)
        node.read_acl, node.write_acl, node.change_acl = read, write, change
        node.acl_generation += 1
        return self._meta(node)

    # ================================================================ locks

    def _acquire(self, operation: Acquire) -> Message:
        record, node = self._writable(operation.session, operation.path)
        if operation.mode is LockMode.FREE:
            raise BadRequestError("acquire in mode FREE")
        delay_ms = operation.lock_delay_ms
        if delay_ms < 0:
            delay_ms = self.config.lock_delay_ms
        if delay_ms != delay_ms or delay_ms > self.config.lock_delay_ms_max:
            raise BadRequestError(f"lock-delay over {self.config.lock_delay_ms_max} ms")
        now_ms = self._time(operation.now_ms)
        if operation.session in node.holders:
            if node.lock_mode is operation.mode:
                return Acquired(sequencer=self._sequencer(node))
            raise LockBusyError(f"{node.path} already held by this session in another mode")
        if now_ms < node.lock_delay_until_ms:
            raise LockDelayError(
                f"{node.path} is in lock-delay for {node.lock_delay_until_ms - now_ms:.0f} ms more")
        self.clock_ms = now_ms
        free = node.lock_mode is LockMode.FREE
        compatible = free or (node.lock_mode is LockMode.SHARED and operation.mode is LockMode.SHARED)
        if not compatible:
            # Not an error of the state: tell the holders someone wants it.
            self._emit(EventKind.CONFLICTING_LOCK_REQUEST, node.path, session=operation.session)
            return OpError(code=LockBusyError.code, detail=f"{node.path} is held {node.lock_mode.name.lower()}")
        if free:
            node.lock_generation += 1
            node.lock_mode = operation.mode
        node.holders.add(operation.session)
        node.holder_delay_ms[operation.session] = delay_ms
        record.locks.add(node.path)
        self._emit(EventKind.LOCK_ACQUIRED, node.path, session=operation.session,
                   generation=node.lock_generation)
        return Acquired(sequencer=self._sequencer(node))

    def _release(self, operation: Release) -> Message:
        self._session(operation.session)
        node = self._node(operation.path)
        if operation.session not in node.holders:
            raise NotHolderError(f"session {operation.session} does not hold {node.path}")
        self._drop_holder(node, operation.session)
        return Done(detail="released")

    def _drop_holder(self, node: _Node, session: int) -> None:
        node.holders.discard(session)
        node.holder_delay_ms.pop(session, None)
        self._sessions[session].locks.discard(node.path)
        if not node.holders:
            node.lock_mode = LockMode.FREE
            self._emit(EventKind.LOCK_RELEASED, node.path, session=session)

    def _sequencer(self, node: _Node) -> Sequencer:
        return Sequencer(path=node.path, mode=node.lock_mode, lock_generation=node.lock_generation,
                         instance=node.instance)

    def sequencer_valid(self, sequencer: Sequencer) -> bool:
        """True if ``sequencer`` names the current holding of its lock (Chubby's
        ``CheckSequencer``): same node instance, same generation, still held in
        that mode."""
        node = self._nodes.get(sequencer.path)
        return (
            node is not None
            and node.instance == sequencer.instance
            and node.lock_generation == sequencer.lock_generation
            and node.lock_mode is sequencer.mode
            and sequencer.mode is not LockMode.FREE
        )

    # ================================================================ inspection

    def _meta(self, node: _Node) -> NodeMeta:
        return NodeMeta(
            path=node.path, instance=node.instance, content_generation=node.content_generation,
            lock_generation=node.lock_generation, acl_generation=node.acl_generation,
            checksum=node.checksum, directory=node.directory, ephemeral=node.ephemeral_owner != 0,
            lock_mode=node.lock_mode, read_acl=node.read_acl, write_acl=node.write_acl,
            change_acl=node.change_acl,
        )

    def exists(self, path: str) -> bool:
        return path in self._nodes

    def meta_of(self, path: str) -> NodeMeta | None:
        """The metadata of ``path`` now, or None if there is no such node."""
        node = self._nodes.get(path)
        return None if node is None else self._meta(node)

    def holders(self, path: str) -> tuple[int, ...]:
        node = self._nodes.get(path)
        return () if node is None else tuple(sorted(node.holders))

    def paths(self) -> tuple[str, ...]:
        return tuple(sorted(self._nodes))

    def ephemeral_owners(self) -> dict[str, int]:
        return {path: node.ephemeral_owner for path, node in self._nodes.items() if node.ephemeral_owner}

    def check_invariants(self) -> None:
        """The tree, the lock tables and the session tables agree."""
        root = self._nodes.get(self.config.root)
        invariant(root is not None and root.directory, "the root is missing")
        for path, node in self._nodes.items():
            invariant(node.path == path, f"{path} filed under another name")
            if path != self.config.root:
                parent_path, name = path.rsplit("/", 1)
                parent = self._nodes.get(parent_path)
                invariant(parent is not None and name in parent.children, f"{path} is an orphan")
            for child in node.children:
                invariant(f"{path}/{child}" in self._nodes, f"{path} lists missing child {child}")
            invariant((node.lock_mode is LockMode.FREE) == (not node.holders), f"{path} lock mode and holders disagree")
            invariant(node.lock_mode is not LockMode.EXCLUSIVE or len(node.holders) == 1, f"{path} has several writers")
            for session in node.holders:
                record = self._sessions.get(session)
                invariant(record is not None and path in record.locks, f"{path} held by ended session {session}")
            if node.ephemeral_owner:
                owner = self._sessions.get(node.ephemeral_owner)
                invariant(owner is not None and path in owner.ephemerals, f"ephemeral {path} outlived its session")
        for session, record in self._sessions.items():
            invariant(0 < session < self.session_next, f"session {session} out of range")
            for path in record.locks:
                invariant(path in self._nodes and session in self._nodes[path].holders, f"session {session} lock table stale")

    # ================================================================ snapshots

    def snapshot(self) -> Iterator[bytes]:
        header = [self.session_next, self.instance_next, self.clock_ms, self.event_index, self.epoch,
                  [[s, r.principal, sorted(r.locks), sorted(r.ephemerals)] for s, r in sorted(self._sessions.items())]]
        yield _pack(header)
        rows = [self._row(node) for _path, node in sorted(self._nodes.items())]
        for start in range(0, len(rows), 256):
            yield _pack(rows[start : start + 256])

    @staticmethod
    def _row(node: _Node) -> list[object]:
        return [node.path, node.directory, node.ephemeral_owner, node.instance, node.contents,
                node.content_generation, node.lock_generation, node.acl_generation, node.checksum,
                list(node.read_acl), list(node.write_acl), list(node.change_acl),
                sorted(node.children), node.sequence_next, int(node.lock_mode), sorted(node.holders),
                sorted(node.holder_delay_ms.items()), node.lock_delay_until_ms]

    def restore(self, chunks: Iterable[bytes]) -> None:
        iterator = iter(chunks)
        try:
            session_next, instance_next, clock_ms, event_index, epoch, sessions = msgpack.unpackb(next(iterator), raw=False)
            nodes: dict[str, _Node] = {}
            for chunk in iterator:
                for row in msgpack.unpackb(chunk, raw=False):
                    (path, directory, owner, instance, contents, cgen, lgen, agen, checksum, racl, wacl,
                     cacl, children, sequence_next, mode, holders, delays, delay_until) = row
                    nodes[path] = _Node(
                        path=path, directory=bool(directory), ephemeral_owner=int(owner), instance=int(instance),
                        contents=bytes(contents), content_generation=int(cgen), lock_generation=int(lgen),
                        acl_generation=int(agen), checksum=int(checksum), read_acl=tuple(racl),
                        write_acl=tuple(wacl), change_acl=tuple(cacl), children=set(children),
                        sequence_next=int(sequence_next), lock_mode=LockMode(mode), holders=set(holders),
                        holder_delay_ms={int(s): float(d) for s, d in delays},
                        lock_delay_until_ms=float(delay_until),
                    )
        except (StopIteration, ValueError, TypeError, msgpack.UnpackException) as error:
            raise RemoteProtocolError(f"bad lock namespace snapshot: {type(error).__name__}") from None
        self._sessions = {int(s): _Session(principal=p, locks=set(locks), ephemerals=set(eph))
                          for s, p, locks, eph in sessions}
        self._nodes = nodes
        self.session_next, self.instance_next = int(session_next), int(instance_next)
        self.clock_ms, self.event_index, self.epoch = float(clock_ms), int(event_index), int(epoch)
        self.events = []

    def digest(self) -> str:
        h = hashlib.sha256()
        for chunk in self.snapshot():
            h.update(chunk)
        return h.hexdigest()[:16]


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed
