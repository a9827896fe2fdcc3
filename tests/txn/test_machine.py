"""The shard state machine: prepare records, decisions, fast path, transaction
records, watches, bad input, and the SQLite engine (snapshots, atomic applied index)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.codec.registry import decode, encode
from synod.core.faults import enable_mutant
from synod.core.ids import NodeId
from synod.paxos.messages import Ballot
from synod.txn.config import TxnConfig
from synod.txn.engine import SqliteEngine
from synod.txn.machine import ShardMachine
from synod.txn.messages import (
    DecideOp,
    EpochOp,
    FastCommitOp,
    OpResult,
    Part,
    PrepareOp,
    RecordBeginOp,
    RecordDecideOp,
    RecordForgetOp,
    Write,
)

BALLOT = Ballot(round=1, node=NodeId("n1"))


def apply(machine: ShardMachine, op: object) -> OpResult:
    result = decode(machine.apply(encode(op)))  # type: ignore[arg-type]
    assert isinstance(result, OpResult)
    return result


def fresh(config: TxnConfig | None = None, engine: SqliteEngine | None = None) -> ShardMachine:
    """A machine whose current epoch is BALLOT (as after its leader's EpochOp)."""
    machine = ShardMachine(engine, config)
    assert apply(machine, EpochOp(ballot=BALLOT)).status == "ok"
    return machine


def prepare(txn: str, *writes: Write, reads: tuple[str, ...] = ()) -> PrepareOp:
    return PrepareOp(txn=txn, ts=1, coordinator="s1", part=Part(group="s1", read_keys=reads, writes=writes,
                                                                read_ballots=(BALLOT,) if reads else ()),
                     lock_ballot=BALLOT)


def test_prepare_then_commit_applies_the_prepared_writes_once() -> None:
    machine = fresh()
    assert apply(machine, prepare("t1", Write(key="a", value="1"), Write(key="b", value=None))).status == "ok"
    assert machine.get("a") == (None, 0)
    assert [r.txn for r in machine.prepared()] == ["t1"]
    result = apply(machine, DecideOp(txn="t1", commit=True))
    assert (result.status, result.revision) == ("ok", 1)
    assert machine.get("a") == ("1", 1)
    assert machine.prepared() == []
    assert machine.outcome("t1") is True
    assert apply(machine, DecideOp(txn="t1", commit=True)).status == "duplicate"
    assert apply(machine, prepare("t1", Write(key="a", value="2"))).detail == "committed"
    assert machine.get("a") == ("1", 1)
    assert machine.revision == 1


def test_prepare_then_abort_applies_nothing() -> None:
    machine = fresh()
    apply(machine, prepare("t1", Write(key="a", value="1")))
    assert apply(machine, DecideOp(txn="t1", commit=False)).detail == "aborted"
    assert machine.items() == {}
    assert machine.outcome("t1") is False


def test_commit_without_prepare_record_is_refused_and_changes_nothing() -> None:
    machine = fresh()
    result = apply(machine, DecideOp(txn="t9", commit=True, writes=(Write(key="a", value="x"),)))
    assert result.status == "refused"
    assert machine.items() == {} and machine.outcome("t9") is None


def test_commit_without_prepare_mutant_applies_the_writes() -> None:
    enable_mutant("txn.commit_without_prepare")
    machine = fresh()
    assert apply(machine, DecideOp(txn="t9", commit=True, writes=(Write(key="a", value="x"),))).status == "ok"
    assert machine.get("a")[0] == "x"


def test_a_commit_whose_reads_were_served_under_another_ballot_is_refused_whole() -> None:
    # A deposed leader answers reads from its stale state under its own ballot;
    # the log refuses a commit carrying such a read, identically everywhere.
    machine = fresh()
    deposed = Ballot(round=0, node=NodeId("n2"))
    stale = PrepareOp(txn="t1", ts=1, coordinator="s1", lock_ballot=BALLOT, part=Part(
        group="s1", read_keys=("a",), writes=(Write(key="a", value="1"),), read_ballots=(deposed, BALLOT)))
    result = apply(machine, stale)
    assert result.status == "refused" and result.detail.startswith("stale_read")
    fast = FastCommitOp(txn="t2", ts=1, writes=(Write(key="a", value="2"),), lock_ballot=BALLOT,
                        read_ballots=(deposed,))
    assert apply(machine, fast).detail.startswith("stale_read")
    assert machine.items() == {} and machine.prepared() == [] and machine.outcome("t2") is None
    assert apply(machine, prepare("t3", Write(key="a", value="3"), reads=("a",))).status == "ok"


def test_a_prepare_with_reads_but_no_read_ballot_is_refused() -> None:
    machine = fresh()
    op = PrepareOp(txn="t1", ts=1, coordinator="s1", lock_ballot=BALLOT,
                   part=Part(group="s1", read_keys=("a",), writes=(Write(key="a", value="1"),)))
    assert apply(machine, op).detail == "stale_read: reads carry no read ballot"


def test_accept_stale_read_mutant_lets_a_stale_read_commit() -> None:
    enable_mutant("txn.accept_stale_read")
    machine = fresh()
    fast = FastCommitOp(txn="t1", ts=1, writes=(Write(key="a", value="1"),), lock_ballot=BALLOT,
                        read_ballots=(Ballot(round=0, node=NodeId("n2")),))
    assert apply(machine, fast).status == "ok"


def test_fast_commit_over_the_key_limit_is_refused_whole() -> None:
    config = TxnConfig(key_bytes_max=8)
    machine = fresh(config)
    writes = (Write(key="ok", value="1"), Write(key="k" * 9, value="2"))
    result = apply(machine, FastCommitOp(txn="t1", ts=1, writes=writes, lock_ballot=BALLOT))
    assert result.status == "refused" and "key_too_large" in result.detail
    assert machine.items() == {} and machine.revision == 0 and machine.outcome("t1") is None
    assert machine.applied == 2   # the epoch and the refused commit


def test_prepare_over_the_size_limit_is_refused_whole() -> None:
    machine = fresh(TxnConfig(txn_keys_max=2))
    result = apply(machine, prepare("t1", Write(key="a", value="1"), Write(key="b", value="1"), reads=("c",)))
    assert result.status == "refused" and "txn_too_large" in result.detail
    assert machine.prepared() == []


def test_garbage_op_is_refused_deterministically() -> None:
    machine = fresh()
    assert decode(machine.apply(b"\xff\x00nonsense")) == decode(fresh().apply(b"\xff\x00nonsense"))
    assert machine.items() == {}


def test_transaction_record_lifecycle_first_decision_wins() -> None:
    machine = fresh()
    begin = RecordBeginOp(txn="t1", ts=1, parts=(Part(group="s1"), Part(group="s2")))
    assert apply(machine, begin).status == "ok"
    assert apply(machine, RecordBeginOp(txn="t1", ts=2, parts=())).status == "duplicate"
    assert machine.record_state("t1") == "pending"
    assert apply(machine, RecordForgetOp(txns=("t1",))).detail == "0"   # a pending record stays
    assert machine.record_state("t1") == "pending"
    assert apply(machine, RecordDecideOp(txn="t1", commit=True)).detail == "committed"
    late = apply(machine, RecordDecideOp(txn="t1", commit=False))
    assert (late.status, late.detail) == ("duplicate", "committed")
    assert apply(machine, RecordForgetOp(txns=("t1", "unknown"))).detail == "1"
    assert machine.record_state("t1") is None
    assert apply(machine, RecordDecideOp(txn="t2", commit=True)).status == "refused"


def test_watch_history_and_compaction() -> None:
    machine = fresh(TxnConfig(watch_history_max=2))
    for i in range(4):
        apply(machine, FastCommitOp(txn=f"t{i}", ts=i, writes=(Write(key=f"k{i}", value=str(i)),),
                                    lock_ballot=BALLOT))
    changes, kept = machine.changes("", "", 3, 10)
    assert kept and [(c.revision, c.key) for c in changes] == [(3, "k2"), (4, "k3")]
    assert machine.changes("", "", 1, 10) == ([], False)
    changes, _ = machine.changes("k3", "k4", 2, 10)
    assert [c.key for c in changes] == ["k3"]


def test_snapshot_restores_the_same_state_in_another_engine() -> None:
    machine = fresh()
    apply(machine, prepare("t1", Write(key="a", value="1")))
    for i in range(600):
        apply(machine, FastCommitOp(txn=f"f{i}", ts=i, writes=(Write(key=f"k{i:04}", value="v"),),
                                    lock_ballot=BALLOT))
    apply(machine, RecordBeginOp(txn="t2", ts=1, parts=()))
    chunks = list(machine.snapshot())
    assert len(chunks) > 3
    other = fresh()
    other.restore(chunks)
    assert other.digest() == machine.digest()
    assert [r.txn for r in other.prepared()] == ["t1"]
    assert other.scan("k0100", "k0103", 10) == ([("k0100", "v"), ("k0101", "v"), ("k0102", "v")], False)


def test_file_engine_stores_the_applied_index_with_the_data(tmp_path: Path) -> None:
    path = str(tmp_path / "shard.db")
    machine = fresh(engine=SqliteEngine(path))
    apply(machine, FastCommitOp(txn="t1", ts=1, writes=(Write(key="a", value="1"),), lock_ballot=BALLOT))
    machine.engine.close()
    reopened = ShardMachine(SqliteEngine(path))
    assert reopened.applied == 2 and reopened.get("a") == ("1", 1)


def test_a_failing_apply_rolls_back_everything() -> None:
    machine = fresh()

    def boom(writes: tuple[Write, ...]) -> int:
        raise RuntimeError("disk on fire")

    machine._write = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        machine.apply(encode(FastCommitOp(txn="t1", ts=1, writes=(Write(key="a", value="1"),), lock_ballot=BALLOT)))
    assert machine.applied == 1 and machine.outcome("t1") is None  # only the epoch


def test_prepare_and_fast_commit_under_another_ballot_are_refused() -> None:
    machine = fresh()
    newer = Ballot(round=2, node=NodeId("n2"))
    assert apply(machine, EpochOp(ballot=newer)).status == "ok"
    assert apply(machine, EpochOp(ballot=BALLOT)).status == "duplicate"
    refused = apply(machine, prepare("t1", Write(key="a", value="1")))
    assert refused.status == "refused" and "stale_ballot" in refused.detail
    late = apply(machine, FastCommitOp(txn="t2", ts=1, writes=(Write(key="a", value="2"),), lock_ballot=BALLOT))
    assert late.status == "refused"
    assert machine.items() == {} and machine.prepared() == [] and machine.epoch == newer


def test_presumed_abort_leaves_a_tombstone_that_a_late_begin_cannot_reopen() -> None:
    machine = fresh()
    tomb = apply(machine, RecordDecideOp(txn="t3", commit=False))
    assert (tomb.status, tomb.detail) == ("ok", "aborted")
    late = apply(machine, RecordBeginOp(txn="t3", ts=1, parts=(Part(group="s1"), Part(group="s2"))))
    assert late.status == "duplicate" and machine.record_state("t3") == "aborted"
    assert apply(machine, RecordDecideOp(txn="t3", commit=True)).detail == "aborted"
    assert apply(machine, RecordForgetOp(txns=("t3",))).detail == "0"
    assert machine.record_state("t3") == "aborted"


def test_the_decision_record_applies_the_coordinators_own_prepared_part() -> None:
    machine = fresh()
    assert apply(machine, RecordBeginOp(txn="t1", ts=1, parts=(Part(group="s1"), Part(group="s2")))).status == "ok"
    assert apply(machine, prepare("t1", Write(key="a", value="1"))).status == "ok"
    decided = apply(machine, RecordDecideOp(txn="t1", commit=True))
    assert (decided.status, decided.detail, decided.revision) == ("ok", "committed", 1)
    assert machine.get("a") == ("1", 1) and machine.prepared() == [] and machine.outcome("t1") is True
    assert apply(machine, DecideOp(txn="t1", commit=True)).status == "duplicate"
    assert machine.revision == 1


def test_an_abort_record_drops_the_coordinators_own_prepared_part() -> None:
    machine = fresh()
    apply(machine, prepare("t1", Write(key="a", value="1")))     # its record never got chosen
    assert apply(machine, RecordDecideOp(txn="t1", commit=False)).detail == "aborted"   # presumed abort
    assert machine.items() == {} and machine.prepared() == [] and machine.outcome("t1") is False


def test_a_late_abort_for_a_forgotten_record_does_not_contradict_the_known_outcome() -> None:
    # Regression (sim seed 2062): after the record was forgotten, a deposed
    # participant leader's query led to a presumed abort of a COMMITTED
    # transaction; the coordinator's group knows the outcome of its own part.
    machine = fresh()
    apply(machine, RecordBeginOp(txn="t1", ts=1, parts=(Part(group="s1"), Part(group="s2"))))
    apply(machine, prepare("t1", Write(key="a", value="1")))
    apply(machine, RecordDecideOp(txn="t1", commit=True))
    apply(machine, RecordForgetOp(txns=("t1",)))
    assert machine.record_state("t1") is None
    late = apply(machine, RecordDecideOp(txn="t1", commit=False))
    assert (late.status, late.detail) == ("duplicate", "committed")
    assert machine.record_state("t1") is None and machine.outcome("t1") is True and machine.get("a")[0] == "1"


def test_an_engine_operation_that_wrote_cannot_be_undone_alone_so_the_engine_breaks(tmp_path: Path) -> None:
    from synod.txn.engine import EngineBroken

    engine = SqliteEngine(str(tmp_path / "s.db"))
    engine.begin()
    engine.set_meta("revision", 5)
    engine.commit()
    engine.flush()
    # A refusal writes nothing: only the counters go back.
    engine.begin()
    engine.set_meta("revision", 6)
    engine.rollback()
    assert engine.meta("revision") == 5
    engine.begin()
    engine.execute("INSERT INTO kv (key, value, revision) VALUES ('a', '1', 6)")
    engine.commit()
    # A failure after writing takes the whole open transaction with it.
    engine.begin()
    engine.execute("INSERT INTO kv (key, value, revision) VALUES ('b', '2', 7)")
    engine.rollback()
    with pytest.raises(EngineBroken):
        engine.begin()
    with pytest.raises(EngineBroken):
        engine.flush()
    engine.close()
    reopened = SqliteEngine(str(tmp_path / "s.db"))
    assert reopened.execute("SELECT key FROM kv") == [] and reopened.meta("revision") == 5
