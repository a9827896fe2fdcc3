"""The lock table: strict 2PL with wound-wait, ballots on locks, range locks."""

from __future__ import annotations

from synod.core.faults import enable_mutant
from synod.core.ids import NodeId
from synod.paxos.messages import Ballot
from synod.txn.locks import LockTable, Mode, Request

B1 = Ballot(round=1, node=NodeId("n1"))
B2 = Ballot(round=2, node=NodeId("n1"))
OLD, YOUNG = 10, 20


def table() -> LockTable:
    return LockTable(waiters_max=4, txns_max=16, aborted_max=16)


def ask(locks: LockTable, token: int, txn: str, ts: int, key: str, mode: Mode, end: str | None = None):  # type: ignore[no-untyped-def]
    return locks.acquire(Request(token=token, txn=txn, key=key, mode=mode, end=end), ts, B1, 0.0)


def test_shared_locks_are_compatible() -> None:
    locks = table()
    assert ask(locks, 1, "a", OLD, "k", Mode.SHARED).granted == [1]
    assert ask(locks, 2, "b", YOUNG, "k", Mode.SHARED).granted == [2]
    locks.check_invariants()


def test_an_older_transaction_wounds_a_younger_holder() -> None:
    locks = table()
    ask(locks, 1, "young", YOUNG, "k", Mode.SHARED)
    outcome = ask(locks, 2, "old", OLD, "k", Mode.EXCLUSIVE)
    assert outcome.granted == [2] and outcome.wounded == {"young": "k"}
    assert locks.entry("young") is None and locks.aborted["young"] == "k"
    locks.check_invariants()


def test_a_younger_transaction_waits_for_an_older_holder_then_gets_the_lock() -> None:
    locks = table()
    ask(locks, 1, "old", OLD, "k", Mode.EXCLUSIVE)
    outcome = ask(locks, 2, "young", YOUNG, "k", Mode.SHARED)
    assert outcome.waiting and not outcome.granted and not outcome.wounded
    woken, _ = locks.release("old")
    assert woken.granted == [2]
    locks.check_invariants()


def test_a_prepared_transaction_is_never_wounded() -> None:
    locks = table()
    ask(locks, 1, "young", YOUNG, "k", Mode.EXCLUSIVE)
    locks.mark_prepared("young")
    outcome = ask(locks, 2, "old", OLD, "k", Mode.SHARED)
    assert outcome.waiting and outcome.wounded == {}
    assert locks.entry("young") is not None


def test_the_planted_bug_wounds_a_prepared_transaction() -> None:
    enable_mutant("txn.wound_prepared")
    locks = table()
    ask(locks, 1, "young", YOUNG, "k", Mode.EXCLUSIVE)
    locks.mark_prepared("young")
    assert ask(locks, 2, "old", OLD, "k", Mode.SHARED).wounded == {"young": "k"}


def test_the_first_timestamp_decides_across_retries() -> None:
    # A retry runs under a new transaction id but its first timestamp: it wins
    # against a transaction that started after its first attempt.
    locks = table()
    ask(locks, 1, "later", YOUNG, "k", Mode.EXCLUSIVE)
    assert ask(locks, 2, "retry-2", OLD, "k", Mode.EXCLUSIVE).wounded == {"later": "k"}


def test_locks_under_an_old_ballot_do_not_count_and_are_purged() -> None:
    locks = table()
    ask(locks, 1, "t", OLD, "k", Mode.SHARED)
    assert locks.holds("t", ("k",), (), B1) is None
    assert locks.holds("t", ("k",), (), B2) == "k"
    assert locks.purge(B2) == ["t"]
    assert locks.entry("t") is None and "k" not in locks.holders


def test_stale_ballot_mutant_keeps_old_locks() -> None:
    enable_mutant("txn.vote_with_stale_ballot_locks")
    locks = table()
    ask(locks, 1, "t", OLD, "k", Mode.SHARED)
    locks.purge(B2)
    assert locks.holds("t", ("k",), (), B2) is None


def test_a_range_lock_blocks_a_write_inside_the_range() -> None:
    locks = table()
    ask(locks, 1, "scanner", OLD, "a", Mode.SHARED, end="m")
    assert ask(locks, 2, "writer", YOUNG, "f", Mode.EXCLUSIVE).waiting
    assert ask(locks, 3, "other", YOUNG + 1, "z", Mode.EXCLUSIVE).granted == [3]
    assert locks.holds("scanner", (), (("a", "m"),), B1) is None


def test_a_range_lock_waits_for_a_write_inside_it() -> None:
    locks = table()
    ask(locks, 1, "writer", OLD, "f", Mode.EXCLUSIVE)
    assert ask(locks, 2, "scanner", YOUNG, "a", Mode.SHARED, end="m").waiting


def test_waiters_are_bounded() -> None:
    locks = table()
    ask(locks, 1, "old", 1, "k", Mode.EXCLUSIVE)
    for i in range(4):
        assert ask(locks, 10 + i, f"y{i}", 100 + i, "k", Mode.EXCLUSIVE).waiting
    assert ask(locks, 20, "y9", 200, "k", Mode.EXCLUSIVE).refused == "overloaded"
    locks.check_invariants()


def test_idle_unprepared_transactions_are_found() -> None:
    locks = table()
    locks.acquire(Request(token=1, txn="idle", key="k", mode=Mode.SHARED), 1, B1, 0.0)
    locks.acquire(Request(token=2, txn="busy", key="j", mode=Mode.SHARED), 2, B1, 900.0)
    assert locks.idle(1000.0, 500.0) == ["idle"]


def test_a_request_waiting_for_an_older_unprepared_holder_is_reported_and_not_for_a_prepared_one() -> None:
    locks = table()
    ask(locks, 1, "old", OLD, "k", Mode.SHARED)
    ask(locks, 2, "older", 5, "j", Mode.EXCLUSIVE)
    locks.mark_prepared("older")
    assert ask(locks, 3, "young", YOUNG, "j", Mode.EXCLUSIVE).waiting
    assert locks.waits_for_active_older("young") is None      # a prepared holder: it only needs its decision
    assert ask(locks, 4, "young", YOUNG, "k", Mode.EXCLUSIVE).waiting
    assert locks.waits_for_active_older("young") == "k"       # an active reader may be waiting for "young"
    assert locks.waits_for_active_older("old") is None


def test_blind_writers_share_a_key_and_exclude_readers_and_writers() -> None:
    locks = table()
    assert ask(locks, 1, "w1", YOUNG, "k", Mode.BLIND).granted == [1]
    assert ask(locks, 2, "w2", YOUNG + 1, "k", Mode.BLIND).granted == [2]
    locks.mark_prepared("w1")
    locks.mark_prepared("w2")
    reader = ask(locks, 3, "r", OLD, "k", Mode.SHARED)
    writer = ask(locks, 4, "x", OLD + 1, "k", Mode.EXCLUSIVE)
    assert reader.waiting and writer.waiting and not reader.wounded   # prepared blind writers are not wounded
    locks.check_invariants()
    assert locks.release("w1")[0].granted == []
    assert locks.release("w2")[0].granted == [3]
    locks.check_invariants()


def test_a_blind_writer_does_not_overtake_a_queued_reader() -> None:
    locks = table()
    ask(locks, 1, "w1", OLD, "k", Mode.BLIND)
    locks.mark_prepared("w1")
    assert ask(locks, 2, "r", YOUNG, "k", Mode.SHARED).waiting
    later = ask(locks, 3, "w2", YOUNG + 1, "k", Mode.BLIND)
    assert later.waiting and not later.granted   # it would share with w1, but r asked first
    assert locks.release("w1")[0].granted == [2]
    assert locks.release("r")[0].granted == [3]
    locks.check_invariants()


def test_a_blind_writer_wounds_a_younger_reader_and_waits_for_an_older_one() -> None:
    locks = table()
    ask(locks, 1, "young", YOUNG, "k", Mode.SHARED)
    outcome = ask(locks, 2, "w", OLD, "k", Mode.BLIND)
    assert outcome.granted == [2] and outcome.wounded == {"young": "k"}
    ask(locks, 3, "older", OLD - 1, "j", Mode.SHARED, end="l")   # a range read over k
    assert ask(locks, 4, "w2", OLD + 1, "k2", Mode.BLIND).waiting
    locks.check_invariants()


def test_a_blind_writer_defers_only_to_older_waiters_so_no_wait_cycle_forms() -> None:
    # Two blind writers each hold one key and ask for the other's; a younger
    # reader waits on each key. Deferring to those readers would close a cycle
    # (writer -> reader -> other writer -> other reader -> writer) that
    # wound-wait never breaks; deferring only to older waiters cannot.
    locks = table()
    ask(locks, 1, "h", OLD, "b", Mode.BLIND)
    ask(locks, 2, "t", OLD + 1, "a", Mode.BLIND)
    assert ask(locks, 3, "q", YOUNG, "b", Mode.SHARED).waiting
    assert ask(locks, 4, "q2", YOUNG + 1, "a", Mode.SHARED).waiting
    assert ask(locks, 5, "h", OLD, "a", Mode.BLIND).granted == [5]
    assert ask(locks, 6, "t", OLD + 1, "b", Mode.BLIND).granted == [6]
    locks.check_invariants()
