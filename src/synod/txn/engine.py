"""The storage engine under a shard's applied state: SQLite from the standard library.

Theory of operation
-------------------
A shard replica keeps its applied state -- the keys, the shard revision, the
prepare records of transactions in doubt, the outcomes of finished ones, the
coordinator's transaction records, the recent changes for watches -- in an
embedded engine, so data can exceed memory. ``SqliteEngine`` is that engine: a
B-tree on disk (or ``":memory:"`` in the simulator, one database per replica),
in the standard library, so it adds no dependency, and its transactions are
atomic and durable on their own. Applied operations share ONE SQLite
transaction until ``OPS_PER_TRANSACTION_MAX`` of them are in it (or a
snapshot is taken), and the counters in ``meta`` (the ``applied`` index among
them) are kept in memory and written by the commit that ends it: the applied index is stored atomically with the data it
describes, at the cost of one statement per commit instead of one per counter
per operation.

An operation has no savepoint of its own (two statements per operation
saved). The machine refuses an operation before it writes anything, so a
refusal only has to put the counters back; an operation that fails after
writing (a bug, or a full disk) rolls back the whole open transaction and
leaves the engine broken: every later call raises ``EngineBroken`` and the
node stops (the runtime stops a node whose core raises), to rebuild its state
from its Paxos log at restart.

A snapshot for catch-up is read from the engine table by table, as a stream of
bounded chunks (``snapshot_rows_per_chunk`` rows each), and ``restore`` replaces
every table inside one transaction.

The engine does no protocol logic; ``ShardMachine`` decides what to write. The
``Engine`` protocol is what the machine needs, so another engine (LMDB) could be
put behind it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import msgpack

from synod.core.errors import RemoteProtocolError


class EngineBroken(RuntimeError):
    """An operation failed after writing: its writes went with every other
    operation since the last ``flush``, so this engine no longer matches the
    log it was applied from. The node must stop and rebuild."""

#: Rows per snapshot chunk (a large shard streams in pieces).
SNAPSHOT_ROWS_PER_CHUNK = 256

#: Applied operations one SQLite transaction holds at most before it is
#: committed even without a ``flush`` (bounds the uncommitted pages).
OPS_PER_TRANSACTION_MAX = 256

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, revision INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS prepared (txn TEXT PRIMARY KEY, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outcomes (seq INTEGER PRIMARY KEY, txn TEXT UNIQUE NOT NULL,"
    " committed INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS records (txn TEXT PRIMARY KEY, state TEXT NOT NULL, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS changes (revision INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL,"
    " value TEXT, PRIMARY KEY (revision, seq))",
    "CREATE TABLE IF NOT EXISTS epoch (id INTEGER PRIMARY KEY, round INTEGER NOT NULL, node TEXT NOT NULL)",
)
#: Tables in snapshot order, with their columns.
_TABLES = (
    ("kv", ("key", "value", "revision")),
    ("meta", ("name", "value")),
    ("prepared", ("txn", "record")),
    ("outcomes", ("seq", "txn", "committed")),
    ("records", ("txn", "state", "record")),
    ("changes", ("revision", "seq", "key", "value")),
    ("epoch", ("id", "round", "node")),
)


class Engine(Protocol):
    """What ``ShardMachine`` needs from a storage engine."""

    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def flush(self) -> None: ...
    def execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
    def execute_many(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None: ...
    def changed_rows(self) -> int: ...
    def meta(self, name: str) -> int: ...
    def set_meta(self, name: str, value: int) -> None: ...
    def snapshot(self) -> Iterator[bytes]: ...
    def restore(self, chunks: Iterable[bytes]) -> None: ...
    def digest(self) -> str: ...
    def close(self) -> None: ...


class SqliteEngine:
    """SQLite behind ``Engine``: ``path`` is a file, or ``":memory:"``."""

    def __init__(self, path: str = ":memory:", *, synchronous: str = "OFF") -> None:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. Applied
        # operations share ONE SQLite transaction, committed after
        # ``OPS_PER_TRANSACTION_MAX`` operations or by ``flush`` (before a
        # snapshot or a digest): what reaches the file is always a whole number
        # of operations with their applied counter, and the commit (most of an
        # operation's cost when each had its own) is paid once per many. This
        # connection is the only reader; it sees its own open transaction.
        #
        # synchronous=OFF by default: a node recreates its database at start and
        # the Paxos replica rebuilds the applied state from its own fsynced
        # write-ahead log and snapshot, so an fsync here would buy nothing (a
        # commit stays atomic: WAL mode never exposes half a transaction). Pass
        # "NORMAL" or "FULL" once a node reopens its database instead.
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # ``meta``'s counters, in memory: read once from SQLite, changed here,
        # and written (the ``_dirty`` ones) by the commit in ``flush``.
        self._meta: dict[str, int] = {}
        self._dirty: set[str] = set()
        # What ``rollback`` puts back: the counters and the SQLite change count
        # when the operation began.
        self._meta_at_begin: dict[str, int] = {}
        self._dirty_at_begin: set[str] = set()
        self._changes_at_begin = 0
        self._in_op = False
        self._ops_open = 0
        self._broken = False
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def _check(self) -> None:
        if self._broken:
            raise EngineBroken("an operation failed after writing; the engine rolled back and must be rebuilt")

    def begin(self) -> None:
        """Start one operation (no SQL: it joins the open transaction)."""
        assert not self._in_op, "operations do not nest"
        self._check()
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        self._meta_at_begin = dict(self._meta)
        self._dirty_at_begin = set(self._dirty)
        self._changes_at_begin = self._db.total_changes
        self._in_op = True

    def commit(self) -> None:
        """End the operation; its effects reach the file at the next ``flush``."""
        assert self._in_op, "commit without begin"
        self._in_op = False
        self._ops_open += 1
        if self._ops_open >= OPS_PER_TRANSACTION_MAX:
            self.flush()

    def rollback(self) -> None:
        """Undo the operation in progress. One that wrote nothing (a refusal)
        only gets its counters back; one that wrote takes the whole open
        transaction with it and breaks the engine (see the module notes)."""
        if not self._in_op:
            return
        self._in_op = False
        if self._db.total_changes == self._changes_at_begin:
            self._meta = self._meta_at_begin
            self._dirty = self._dirty_at_begin
            return
        self._broken = True
        self._meta = {}
        self._dirty = set()
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def flush(self) -> None:
        """Commit every operation ended since the last flush, with the counters."""
        assert not self._in_op, "flush inside an operation"
        self._check()
        if self._dirty:
            if not self._db.in_transaction:
                self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                                 [(name, self._meta[name]) for name in sorted(self._dirty)])
            self._dirty = set()
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        self._ops_open = 0

    def execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, parameters).fetchall()

    def execute_many(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        self._db.executemany(sql, rows)

    def changed_rows(self) -> int:
        """Rows written through this connection so far (a growing count)."""
        return self._db.total_changes

    def meta(self, name: str) -> int:
        cached = self._meta.get(name)
        if cached is not None:
            return cached
        rows = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchall()
        value = int(rows[0][0]) if rows else 0
        self._meta[name] = value
        return value

    def set_meta(self, name: str, value: int) -> None:
        """Set a counter; it reaches SQLite with the next ``flush``."""
        self._meta[name] = value
        self._dirty.add(name)

    def snapshot(self) -> Iterator[bytes]:
        self.flush()
        for table, columns in _TABLES:
            cursor = self._db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1, 2")
            while True:
                rows = cursor.fetchmany(SNAPSHOT_ROWS_PER_CHUNK)
                if not rows:
                    break
                packed: bytes = msgpack.packb([table, [list(row) for row in rows]], use_bin_type=True)
                yield packed

    def restore(self, chunks: Iterable[bytes]) -> None:
        known = dict(_TABLES)
        self.flush()
        self._meta.clear()
        self._db.execute("BEGIN")
        try:
            for table, _ in _TABLES:
                self._db.execute(f"DELETE FROM {table}")
            for chunk in chunks:
                try:
                    table, rows = msgpack.unpackb(chunk, raw=False)
                except Exception as error:  # hostile bytes: msgpack raises many kinds
                    raise RemoteProtocolError(f"bad shard snapshot chunk: {type(error).__name__}") from None
                columns = known.get(table) if isinstance(table, str) else None
                if columns is None or not isinstance(rows, list):
                    raise RemoteProtocolError(f"bad shard snapshot chunk for table {table!r}")
                marks = ", ".join("?" for _ in columns)
                try:
                    self._db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                         [tuple(row) for row in rows])
                except (sqlite3.Error, TypeError, ValueError) as error:
                    raise RemoteProtocolError(f"bad shard snapshot rows: {error}") from None
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._meta.clear()
            self._dirty.clear()

    def digest(self) -> str:
        """A hash of every table but ``meta``'s ``applied`` counter (replicas that
        restored a snapshot count fewer applied operations than ones that replayed)."""
        self.flush()
        h = hashlib.sha256()
        for table, columns in _TABLES:
            for row in self._db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1, 2"):
                if table == "meta" and row[0] == "applied":
                    continue
                h.update(msgpack.packb([table, list(row)], use_bin_type=True))
        return h.hexdigest()[:16]

    def close(self) -> None:
        if not self._in_op and not self._broken:
            self.flush()
        self._db.close()
