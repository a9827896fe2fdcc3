"""The shard state machine: what every replica of a shard applies, in log order.

Theory of operation
-------------------
A shard is a Paxos group; its replicated state is a ``ShardMachine`` over a
storage engine (``synod.txn.engine``). The machine applies ``ShardOp``s chosen in
the group's log, deterministically, each in one engine transaction together with
the applied counter:

* ``PrepareOp``: the participant's prepare record (locks and writes). It is what
  lets a prepared transaction outlive its leader: a new leader re-takes the
  locks of every prepare record it finds, and asks the coordinator's group for
  the outcome.
* ``DecideOp``: the decision reached the participant: apply the prepared writes
  (commit) or drop them (abort); remember the outcome.
* ``FastCommitOp``: a transaction confined to this shard commits in one round.
* ``OpBatch``: operations a leader proposed while its Paxos window was shut, in
  one log command; each is applied exactly as it would be alone.
* ``EpochOp``: a new leader's first operation. A prepare record or a fast-path
  commit is valid only if its locks were taken, and its reads served, under the
  ballot of the last epoch applied: a deposed leader's proposal can still be
  chosen later (a newer leader re-proposes what it finds accepted in a slot
  nobody overwrote), and is then refused here, identically on every replica;
  and a read a deposed leader answered from its stale state may be paired with
  locks the client also got from the real leader (a re-sent read), so the read's
  own ballot must match too.
* ``RecordBeginOp`` / ``RecordDecideOp`` / ``RecordForgetOp``: the coordinator's
  transaction record, pending -> committed | aborted -> forgotten. The first
  decision chosen wins; a later opposite one is answered with the first. An
  abort for a transaction with no record leaves an aborted tombstone (presumed
  abort, made durable), which is never forgotten.

Every committing op bumps the shard ``revision`` and logs its changes (bounded by
``watch_history_max``) for watches. The kv, changes and outcomes rows of an
operation are gathered and written at its end, one statement per table
(``_Rows``); outcomes, prepare records and transaction records are read from
in-memory mirrors of their tables, written through. Bad input is refused as a
whole (``OpResult`` with status ``refused``), identically on every replica:
nothing is partially applied. The machine never reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from synod.codec.registry import Message, decode, encode
from synod.core.errors import RemoteProtocolError
from synod.core.faults import declare_mutant, mutant
from synod.core.ids import NodeId
from synod.paxos.messages import BALLOT_ZERO, Ballot
from synod.txn.config import TxnConfig
from synod.txn.engine import Engine, SqliteEngine
from synod.txn.errors import KeyTooLargeError, TxnError, TxnTooLargeError
from synod.txn.messages import (
    Change,
    DecideOp,
    EpochOp,
    FastCommitOp,
    OpBatch,
    OpResult,
    OpResults,
    Part,
    PrepareOp,
    RecordBeginOp,
    RecordDecideOp,
    RecordForgetOp,
    TxnGet,
    TxnValue,
    Write,
)

MUTANT_COMMIT_WITHOUT_PREPARE = declare_mutant(
    "txn.commit_without_prepare",
    "a participant votes yes without logging a prepare record (so nothing holds its locks "
    "prepared, here or at a new leader) and applies a commit for a transaction it has no "
    "prepare record for, with the writes the decision carries",
)

MUTANT_ACCEPT_STALE_READ = declare_mutant(
    "txn.accept_stale_read",
    "a shard leader and the state machine ignore the ballots a commit's reads were served "
    "under, so a value read from a deposed leader's stale state can be committed",
)

PENDING, COMMITTED, ABORTED = "pending", "committed", "aborted"

#: Decoded operations of this replica's own proposals kept at most (see
#: ``ShardMachine.proposed``).
PROPOSED_CACHE_MAX = 4096

#: Records one ``RecordForgetOp`` drops at most.
FORGET_BATCH_MAX = 256

#: Old watch changes and outcomes are deleted once up to this many more than
#: their bound have piled up (1/16 of the bound at most), in one statement,
#: instead of one DELETE per operation. At least the bound is kept, and the
#: rule is deterministic, so every replica keeps the same rows.
TRIM_STEP_MAX = 64


def _trim_step(bound: int) -> int:
    return max(1, min(TRIM_STEP_MAX, bound // 16))


class _Rows:
    """The kv, changes and outcomes rows an operation writes, gathered and written
    at its end: a batch of commits costs one statement per table, not one per
    row. Nothing reads these tables while an operation is applied (outcomes are
    looked up in memory), so deferring the rows changes no result."""

    __slots__ = ("changes", "changes_below", "deletes", "keys", "outcomes", "outcomes_upto", "puts")

    def __init__(self) -> None:
        self.puts: list[tuple[str, str, int]] = []
        self.deletes: list[tuple[str]] = []
        self.changes: list[tuple[int, int, str, str | None]] = []
        self.outcomes: list[tuple[int, str, int]] = []
        #: Keys in ``puts`` and ``deletes`` (a key written again flushes them first).
        self.keys: set[str] = set()
        #: Trims decided: changes below this revision (0: none), outcomes up to
        #: this seq (None: none).
        self.changes_below = 0
        self.outcomes_upto: int | None = None

    def size(self) -> int:
        return len(self.puts) + len(self.deletes) + len(self.changes) + len(self.outcomes)


def check_key(key: str, config: TxnConfig) -> None:
    """``KeyTooLargeError`` unless ``key`` is a non-empty key within the limit."""
    if not key or len(key.encode("utf-8", "surrogatepass")) > config.key_bytes_max:
        raise KeyTooLargeError(f"key of {len(key.encode('utf-8', 'surrogatepass'))} bytes: must be 1.."
                               f"{config.key_bytes_max}", key=key[:64])


def check_part(part: Part, config: TxnConfig) -> None:
    """Typed errors for a part over any limit; returns quietly if it is fine."""
    keys = len(part.read_keys) + 2 * len(part.read_ranges) + len(part.writes)
    if keys > config.txn_keys_max:
        raise TxnTooLargeError(f"{keys} keys over the limit of {config.txn_keys_max}")
    size = 0
    for key in part.read_keys:
        check_key(key, config)
    for start, end in part.read_ranges:
        check_key(start, config)
        if end:
            check_key(end, config)
    for write in part.writes:
        check_key(write.key, config)
        value_bytes = len(write.value.encode("utf-8", "surrogatepass")) if write.value is not None else 0
        if value_bytes > config.value_bytes_max:
            raise KeyTooLargeError(f"value of {value_bytes} bytes over {config.value_bytes_max}", key=write.key)
        size += len(write.key) + value_bytes
    if size > config.txn_bytes_max:
        raise TxnTooLargeError(f"{size} bytes of writes over the limit of {config.txn_bytes_max}")


def stale_read(has_reads: bool, read_ballots: tuple[Ballot, ...], ballot: Ballot) -> str | None:
    """Why reads served under ``read_ballots`` may not commit under ``ballot``, if
    they may not: a read from another leader (a deposed one answers from its
    stale state, which may miss its successor's writes), or reads with no
    ballot at all (a client that does not say where it read cannot be checked)."""
    if mutant(MUTANT_ACCEPT_STALE_READ):
        return None
    if has_reads and not read_ballots:
        return "stale_read: reads carry no read ballot"
    for read_ballot in read_ballots:
        if read_ballot != ballot:
            return f"stale_read: a read served under {read_ballot}, not {ballot}"
    return None


class ShardMachine:
    """The replicated state of one shard (a ``synod.paxos.StateMachine``)."""

    def __init__(self, engine: Engine | None = None, config: TxnConfig | None = None) -> None:
        self.engine: Engine = engine if engine is not None else SqliteEngine(":memory:")
        self.config = config or TxnConfig()
        # The last epoch, read on every event by the server: cached, and dropped
        # whenever the engine's contents may differ from it (rollback, restore).
        self._epoch: Ballot | None = None
        #: Operations this replica proposed itself, by their encoding: applying
        #: one skips decoding (and validating) bytes it encoded from this very
        #: object. Bounded; an entry whose proposal never applies is dropped.
        self._proposed: dict[bytes, Message] = {}
        #: The ``outcomes`` table in memory (``_outcome_mirror``): txn ->
        #: committed, and (seq, txn) in seq order for the trim. None: not read yet.
        self._outcomes: dict[str, bool] | None = None
        self._outcome_seqs: deque[tuple[int, str]] = deque()
        #: ``prepared`` and ``records`` in memory (``_prepared_mirror``,
        #: ``_records_mirror``). None: not read yet.
        self._prepared: dict[str, PrepareOp] | None = None
        self._records: dict[str, tuple[str, RecordBeginOp]] | None = None
        #: Rows of the operation being applied, written at its end (``_write_rows``).
        self._rows = _Rows()

    def proposed(self, encoded: bytes, op: Message) -> None:
        """``encoded`` is ``encode(op)``, about to be proposed by this replica."""
        if len(self._proposed) >= PROPOSED_CACHE_MAX:
            self._proposed.clear()
        self._proposed[encoded] = op

    # ------------------------------------------------------------ StateMachine

    def apply(self, op: bytes) -> bytes:
        decoded = self._proposed.pop(op, None)
        if decoded is None:
            try:
                decoded = decode(op)
            except RemoteProtocolError as error:
                return encode(OpResult(status="refused", detail=str(error)))
        self.engine.begin()
        try:
            result = self._apply(decoded)
            if isinstance(result, OpResult) and result.status == "refused":
                # Nothing of a refused op stays: roll back, then count it applied.
                self._discard_rows()
                self.engine.rollback()
                self._epoch = None
                self.engine.begin()
            else:
                self._write_rows()
            self.engine.set_meta("applied", self.engine.meta("applied") + 1)
            self.engine.commit()
        except BaseException:
            self._discard_rows()
            self.engine.rollback()
            self._epoch = None
            self._forget_mirrors()
            raise
        return encode(result)

    def _discard_rows(self) -> None:
        if self._rows.outcomes or self._rows.outcomes_upto is not None:
            self._outcomes = None   # the mirror has them: read it again
        self._rows = _Rows()

    def query(self, op: bytes) -> bytes:
        try:
            decoded = decode(op)
        except RemoteProtocolError as error:
            return encode(OpResult(status="refused", detail=str(error)))
        if isinstance(decoded, TxnGet):
            value, revision = self.get(decoded.key)
            return encode(TxnValue(value=value, revision=revision))
        return encode(OpResult(status="refused", detail="not a query"))

    def flush(self) -> None:
        """Commit the operations applied so far to the engine (see ``SqliteEngine``)."""
        self.engine.flush()

    def snapshot(self) -> Iterator[bytes]:
        return self.engine.snapshot()

    def restore(self, chunks: Iterable[bytes]) -> None:
        self._epoch = None
        self._forget_mirrors()
        try:
            self.engine.restore(chunks)
        finally:
            self._epoch = None
            self._forget_mirrors()

    def digest(self) -> str:
        return self.engine.digest()

    # ------------------------------------------------------------ reads

    @property
    def revision(self) -> int:
        return self.engine.meta("revision")

    @property
    def epoch(self) -> Ballot:
        """The ballot of the last leader whose ``EpochOp`` was applied."""
        if self._epoch is None:
            rows = self.engine.execute("SELECT round, node FROM epoch WHERE id = 0")
            self._epoch = Ballot(round=int(rows[0][0]), node=NodeId(str(rows[0][1]))) if rows else BALLOT_ZERO
        return self._epoch

    @property
    def applied(self) -> int:
        """Operations applied, stored in the same engine transaction as their effects."""
        return self.engine.meta("applied")

    def get(self, key: str) -> tuple[str | None, int]:
        """(value or None, the revision that last wrote it or 0)."""
        rows = self.engine.execute("SELECT value, revision FROM kv WHERE key = ?", (key,))
        return (str(rows[0][0]), int(rows[0][1])) if rows else (None, 0)

    def scan(self, start: str, end: str, limit: int) -> tuple[list[tuple[str, str]], bool]:
        """Up to ``limit`` rows with ``start <= key < end`` (end "" = unbounded), and
        whether more follow."""
        if end:
            rows = self.engine.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
                                       (start, end, limit + 1))
        else:
            rows = self.engine.execute("SELECT key, value FROM kv WHERE key >= ? ORDER BY key LIMIT ?",
                                       (start, limit + 1))
        pairs = [(str(k), str(v)) for k, v in rows]
        return pairs[:limit], len(pairs) > limit

    def changes(self, start: str, end: str, from_revision: int, limit: int) -> tuple[list[Change], bool]:
        """Changes to keys in ``[start, end)`` at revisions >= ``from_revision``;
        the bool is False when that revision was already compacted away."""
        if from_revision < self.engine.meta("compacted_below"):
            return [], False
        sql = "SELECT revision, key, value FROM changes WHERE revision >= ? AND key >= ?"
        params: tuple[object, ...] = (from_revision, start)
        if end:
            sql += " AND key < ?"
            params += (end,)
        rows = self.engine.execute(sql + " ORDER BY revision, seq LIMIT ?", (*params, limit))
        return [Change(revision=int(r), key=str(k), value=None if v is None else str(v)) for r, k, v in rows], True

    def prepared(self) -> list[PrepareOp]:
        """Every prepare record awaiting a decision."""
        mirror = self._prepared_mirror()
        return [mirror[txn] for txn in sorted(mirror)]

    def is_prepared(self, txn: str) -> bool:
        """Whether ``txn`` has a prepare record here."""
        return txn in self._prepared_mirror()

    def prepare_record(self, txn: str) -> PrepareOp | None:
        return self._prepared_mirror().get(txn)

    def outcome(self, txn: str) -> bool | None:
        """True committed, False aborted, None unknown here (or forgotten)."""
        return self._outcome_mirror().get(txn)

    def records(self) -> list[tuple[str, RecordBeginOp]]:
        """The coordinator's transaction records: (state, record)."""
        mirror = self._records_mirror()
        return [mirror[txn] for txn in sorted(mirror)]

    def record_state(self, txn: str) -> str | None:
        found = self._records_mirror().get(txn)
        return found[0] if found is not None else None

    # The tables asked on every commit and every applied operation, in memory: a
    # dict answers in a fraction of a SELECT's time, and prepare and transaction
    # records are decoded once. Each is read from the engine on first use and
    # after a restore (or a failed operation), then written through.

    def _outcome_mirror(self) -> dict[str, bool]:
        """``outcomes`` (kept equal to the table by ``_remember``)."""
        if self._outcomes is None:
            rows = self.engine.execute("SELECT seq, txn, committed FROM outcomes ORDER BY seq")
            self._outcomes = {str(txn): bool(committed) for _, txn, committed in rows}
            self._outcome_seqs = deque((int(seq), str(txn)) for seq, txn, _ in rows)
        return self._outcomes

    def _prepared_mirror(self) -> dict[str, PrepareOp]:
        """``prepared``: the transactions in doubt here."""
        if self._prepared is None:
            self._prepared = {}
            for txn, blob in self.engine.execute("SELECT txn, record FROM prepared"):
                record = decode(bytes(blob))
                assert isinstance(record, PrepareOp)
                self._prepared[str(txn)] = record
        return self._prepared

    def _records_mirror(self) -> dict[str, tuple[str, RecordBeginOp]]:
        """``records``: the records not yet forgotten, and the presumed-abort tombstones."""
        if self._records is None:
            self._records = {}
            for txn, state, blob in self.engine.execute("SELECT txn, state, record FROM records"):
                record = decode(bytes(blob))
                assert isinstance(record, RecordBeginOp)
                self._records[str(txn)] = (str(state), record)
        return self._records

    def _forget_mirrors(self) -> None:
        self._outcomes = None
        self._prepared = None
        self._records = None

    def items(self) -> dict[str, str]:
        """Every key and value (tests and checkers; not for large shards)."""
        return {str(k): str(v) for k, v in self.engine.execute("SELECT key, value FROM kv ORDER BY key")}

    # ------------------------------------------------------------ applying

    def _apply(self, op: object) -> OpResult | OpResults:
        match op:
            case PrepareOp():
                return self._apply_prepare(op)
            case DecideOp():
                return self._apply_decide(op)
            case EpochOp():
                if op.ballot <= self.epoch:
                    return OpResult(status="duplicate", detail="older epoch")
                self.engine.execute("INSERT OR REPLACE INTO epoch (id, round, node) VALUES (0, ?, ?)",
                                    (op.ballot.round, op.ballot.node))
                self._epoch = op.ballot
                return OpResult(status="ok")
            case FastCommitOp():
                return self._apply_fast(op)
            case OpBatch():
                return OpResults(items=tuple(self._apply_item(item) for item in op.ops))
            case RecordBeginOp():
                if self.record_state(op.txn) is not None or self.outcome(op.txn) is not None:
                    return OpResult(status="duplicate", detail=self.record_state(op.txn) or "forgotten")
                self.engine.execute("INSERT INTO records (txn, state, record) VALUES (?, ?, ?)",
                                    (op.txn, PENDING, encode(op)))
                self._records_mirror()[op.txn] = (PENDING, op)
                return OpResult(status="ok")
            case RecordDecideOp():
                state = self.record_state(op.txn)
                known = self.outcome(op.txn) if state is None else None
                if known is not None:
                    # The record was forgotten after every participant
                    # acknowledged, and this group -- a participant too -- still
                    # knows the outcome: that is the decision, not a presumption
                    # (sim seed 2062: a deposed participant leader's late query
                    # made an abort tombstone for a committed transaction, and
                    # the client's re-sent commit was told "aborted").
                    return OpResult(status="duplicate", detail=COMMITTED if known else ABORTED)
                if state is None and not op.commit:
                    # Presumed abort made durable: a tombstone, so that a commit
                    # of this transaction re-sent later is refused, not begun anew.
                    tombstone = RecordBeginOp(txn=op.txn, ts=0, parts=())
                    self.engine.execute("INSERT INTO records (txn, state, record) VALUES (?, ?, ?)",
                                        (op.txn, ABORTED, encode(tombstone)))
                    self._records_mirror()[op.txn] = (ABORTED, tombstone)
                    self._decide_own_part(op.txn, commit=False)
                    return OpResult(status="ok", detail=ABORTED)
                if state is None:
                    return OpResult(status="refused", detail="unknown transaction record")
                if state != PENDING:
                    return OpResult(status="duplicate", detail=state)
                decided = COMMITTED if op.commit else ABORTED
                self.engine.execute("UPDATE records SET state = ? WHERE txn = ?", (decided, op.txn))
                records = self._records_mirror()
                records[op.txn] = (decided, records[op.txn][1])
                revision = self._decide_own_part(op.txn, commit=op.commit)
                return OpResult(status="ok", detail=decided, revision=revision)
            case RecordForgetOp():
                forgotten = 0
                records = self._records_mirror()
                for txn in op.txns[:FORGET_BATCH_MAX]:
                    found = records.get(txn)
                    if found is None or found[0] == PENDING:
                        continue   # gone already, or still deciding: never dropped
                    if not found[1].parts:
                        continue   # a presumed-abort tombstone is kept
                    self.engine.execute("DELETE FROM records WHERE txn = ?", (txn,))
                    del records[txn]
                    forgotten += 1
                return OpResult(status="ok", detail=str(forgotten))
            case _:
                return OpResult(status="refused", detail=f"not a shard op: {type(op).__name__}")

    def _apply_item(self, op: object) -> OpResult:
        """One operation of an ``OpBatch``. It has no rollback of its own, so a
        refusal must come before any write: checked, and a breach stops the node."""
        changed, gathered = self.engine.changed_rows(), self._rows.size()
        result = self._apply(op)
        assert isinstance(result, OpResult)   # a batch holds no batch (the codec checks)
        if result.status == "refused" and (self.engine.changed_rows() != changed or self._rows.size() != gathered):
            raise RuntimeError(f"{type(op).__name__} refused after writing: {result.detail}")
        return result

    def _apply_fast(self, op: FastCommitOp) -> OpResult:
        if self.outcome(op.txn) is not None:
            return OpResult(status="duplicate", detail="decided")
        if op.lock_ballot != self.epoch:
            return OpResult(status="refused", detail=f"stale_ballot: locks of {op.lock_ballot}, epoch {self.epoch}")
        stale = stale_read(False, op.read_ballots, self.epoch)
        if stale is not None:
            return OpResult(status="refused", detail=stale)
        refused = self._refuse_writes(op.writes)
        if refused is not None:
            return refused
        revision = self._write(op.writes)
        self._remember(op.txn, committed=True)
        return OpResult(status="ok", revision=revision)

    def _apply_prepare(self, op: PrepareOp) -> OpResult:
        decided = self.outcome(op.txn)
        if decided is not None:
            return OpResult(status="duplicate", detail=COMMITTED if decided else ABORTED)
        if self.is_prepared(op.txn):
            return OpResult(status="duplicate", detail="prepared")
        if op.lock_ballot != self.epoch:
            # Locks taken under another leader's ballot: that leader is gone and
            # its locks with it; someone else may have written since.
            return OpResult(status="refused", detail=f"stale_ballot: locks of {op.lock_ballot}, epoch {self.epoch}")
        stale = stale_read(bool(op.part.read_keys or op.part.read_ranges), op.part.read_ballots, self.epoch)
        if stale is not None:
            return OpResult(status="refused", detail=stale)
        try:
            check_part(op.part, self.config)
        except TxnError as error:
            return OpResult(status="refused", detail=f"{error.code}: {error.detail}")
        self.engine.execute("INSERT INTO prepared (txn, record) VALUES (?, ?)", (op.txn, encode(op)))
        self._prepared_mirror()[op.txn] = op
        return OpResult(status="ok", detail="prepared")

    def _apply_decide(self, op: DecideOp) -> OpResult:
        decided = self.outcome(op.txn)
        if decided is not None:
            return OpResult(status="duplicate", detail=COMMITTED if decided else ABORTED)
        record = self.prepare_record(op.txn) if op.commit else None
        if op.commit and record is None:
            if not mutant(MUTANT_COMMIT_WITHOUT_PREPARE):
                # A yes vote comes only from a chosen prepare record, so a commit
                # without one is a protocol breach by the caller: refuse it whole.
                return OpResult(status="refused", detail="commit without a prepare record")
            revision = self._write(op.writes)
            self._remember(op.txn, committed=True)
            return OpResult(status="ok", detail=COMMITTED, revision=revision)
        revision = self._decide_prepared(op.txn, commit=op.commit, record=record)
        return OpResult(status="ok", detail=COMMITTED if op.commit else ABORTED, revision=revision)

    def _decide_own_part(self, txn: str, *, commit: bool) -> int:
        """The coordinator's group is a participant too: if its own part is
        prepared here when the decision is applied, the decision applies to it in
        the same operation (one log command less per cross-shard transaction
        than a separate ``DecideOp``; a later one is answered as a duplicate).
        Returns the revision after it."""
        if self.outcome(txn) is not None or not self.is_prepared(txn):
            return self.revision
        return self._decide_prepared(txn, commit=commit, record=self.prepare_record(txn) if commit else None)

    def _decide_prepared(self, txn: str, *, commit: bool, record: PrepareOp | None) -> int:
        """Apply the decision to ``txn``'s prepare record here (``record``, read by
        the caller when committing) and remember it."""
        self.engine.execute("DELETE FROM prepared WHERE txn = ?", (txn,))
        self._prepared_mirror().pop(txn, None)
        revision = self._write(record.part.writes) if record is not None else self.revision
        self._remember(txn, committed=commit)
        return revision

    def _refuse_writes(self, writes: tuple[Write, ...]) -> OpResult | None:
        try:
            check_part(Part(group="", writes=writes), self.config)
        except TxnError as error:
            return OpResult(status="refused", detail=f"{error.code}: {error.detail}")
        return None

    def _write(self, writes: tuple[Write, ...]) -> int:
        """Give ``writes`` the next revision; their rows wait in ``_rows``."""
        if not writes:
            return self.engine.meta("revision")
        revision = self.engine.meta("revision") + 1
        self.engine.set_meta("revision", revision)
        rows = self._rows
        for seq, write in enumerate(writes):
            if write.key in rows.keys:
                self._write_kv()   # the same key again: keep the writes in order
            rows.keys.add(write.key)
            if write.value is None:
                rows.deletes.append((write.key,))
            else:
                rows.puts.append((write.key, write.value, revision))
            rows.changes.append((revision, seq, write.key, write.value))
        horizon = revision - self.config.watch_history_max
        if horizon >= self.engine.meta("compacted_below") + _trim_step(self.config.watch_history_max):
            self.engine.set_meta("compacted_below", horizon)
            rows.changes_below = horizon
        return revision

    def _remember(self, txn: str, *, committed: bool) -> None:
        outcomes = self._outcome_mirror()
        seq = self.engine.meta("outcome_seq") + 1
        self.engine.set_meta("outcome_seq", seq)
        self._rows.outcomes.append((seq, txn, int(committed)))
        outcomes[txn] = committed
        self._outcome_seqs.append((seq, txn))
        if seq % _trim_step(self.config.outcomes_max) == 0:
            horizon = seq - self.config.outcomes_max
            self._rows.outcomes_upto = horizon
            while self._outcome_seqs and self._outcome_seqs[0][0] <= horizon:
                del outcomes[self._outcome_seqs.popleft()[1]]

    def _write_kv(self) -> None:
        rows = self._rows
        if rows.puts:
            self.engine.execute_many("INSERT OR REPLACE INTO kv (key, value, revision) VALUES (?, ?, ?)", rows.puts)
            rows.puts = []
        if rows.deletes:
            self.engine.execute_many("DELETE FROM kv WHERE key = ?", rows.deletes)
            rows.deletes = []
        rows.keys.clear()

    def _write_rows(self) -> None:
        """Write the rows the operation gathered, one statement per table, with
        the trims ``_write`` and ``_remember`` decided (each already in effect in
        memory: the counters, the outcome mirror), so the result is the same as
        writing each commit's rows at once."""
        rows = self._rows
        self._write_kv()
        # A trim first, then the rows it leaves: the same as inserting every
        # row and trimming after, without inserting what is then deleted (or an
        # outcome forgotten and decided again in the same batch, twice).
        if rows.changes_below:
            self.engine.execute("DELETE FROM changes WHERE revision < ?", (rows.changes_below,))
            rows.changes = [row for row in rows.changes if row[0] >= rows.changes_below]
            rows.changes_below = 0
        if rows.changes:
            self.engine.execute_many("INSERT INTO changes (revision, seq, key, value) VALUES (?, ?, ?, ?)",
                                     rows.changes)
            rows.changes = []
        if rows.outcomes_upto is not None:
            self.engine.execute("DELETE FROM outcomes WHERE seq <= ?", (rows.outcomes_upto,))
            rows.outcomes = [row for row in rows.outcomes if row[0] > rows.outcomes_upto]
            rows.outcomes_upto = None
        if rows.outcomes:
            self.engine.execute_many("INSERT INTO outcomes (seq, txn, committed) VALUES (?, ?, ?)", rows.outcomes)
            rows.outcomes = []
