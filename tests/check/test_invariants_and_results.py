"""Invariant helpers and the result types scenarios return."""

from __future__ import annotations

import pytest

from synod.check import (
    CheckFailed,
    CheckResult,
    Violation,
    check_acknowledged_present,
    check_at_most_one_holder,
    check_conserved,
    check_converged,
    check_prefix,
    check_single_value_per_slot,
)


def test_single_value_per_slot() -> None:
    agreeing = {"n1": {1: "a", 2: "b"}, "n2": {1: "a"}, "n3": {2: "b", 3: "c"}}
    assert check_single_value_per_slot(agreeing) == []
    split = {"n1": {1: "a", 2: "b"}, "n2": {1: "a", 2: "x"}}
    (violation,) = check_single_value_per_slot(split)
    assert "slot 2" in violation and "'b'" in violation and "'x'" in violation


def test_prefix() -> None:
    appended = [b"1", b"2", b"3", b"4"]
    assert check_prefix([b"1", b"2"], appended, durable=2) == []
    assert check_prefix(appended, appended, durable=4) == []
    assert check_prefix([], [], durable=0) == []
    lost = check_prefix([b"1"], appended, durable=2)
    assert lost and "acknowledged durable" in lost[0]
    corrupt = check_prefix([b"1", b"X"], appended, durable=1)
    assert corrupt and "record 1" in corrupt[0]
    invented = check_prefix([*appended, b"5"], appended, durable=4)
    assert invented and "only 4 were appended" in invented[0]
    assert check_prefix([], appended, durable=9)


def test_converged() -> None:
    assert check_converged({"n1": "abc", "n2": "abc", "n3": "abc"}) == []
    assert check_converged({}) == []
    (violation,) = check_converged({"n1": "abc", "n2": "abd", "n3": "abc"})
    assert "2 distinct digests" in violation and "'n2'" in violation


def test_acknowledged_present() -> None:
    assert check_acknowledged_present([1, 2], [1, 2, 3]) == []
    (violation,) = check_acknowledged_present(range(20), [0])
    assert "19 acknowledged writes are missing" in violation and "and 9 more" in violation


def test_conserved_and_at_most_one_holder() -> None:
    assert check_conserved([("t1", 100), ("t2", 100)], 100) == []
    assert len(check_conserved([("t1", 100), ("t2", 99)], 100)) == 1
    assert check_at_most_one_holder({"/lock": ["c1", "c1"], "ballot 3": ["n1"]}) == []
    (violation,) = check_at_most_one_holder({"/lock": ["c1", "c2"]})
    assert "'c1'" in violation and "'c2'" in violation


def test_check_result_merge_report_and_raise() -> None:
    passed = CheckResult.passed("linearizability", {"steps": 10})
    assert passed.ok and passed.report() == "linearizability: ok"
    passed.raise_if_failed()
    failed = CheckResult.from_violations(
        "invariant:converged", ["replicas did not converge"], kind="diverged"
    )
    inconclusive = CheckResult(checker="linearizability", inconclusive=("budget",))
    merged = CheckResult.merge([passed, failed, inconclusive], checker="paxos-seed-7")
    assert not merged.ok
    assert merged.kinds == {"diverged"}
    assert merged.statistics == {"linearizability.steps": 10}
    assert merged.inconclusive == ("[linearizability] budget",)
    with pytest.raises(CheckFailed) as raised:
        merged.raise_if_failed()
    assert "replicas did not converge" in str(raised.value)
    assert "budget" in str(raised.value)


def test_violation_is_frozen_and_prints_its_class() -> None:
    violation = Violation(
        checker="serializability", kind="G1c", message="cycle", details={"cycle": ["T1 -wr-> T2"]}
    )
    assert str(violation) == "[serializability] G1c: cycle"
    with pytest.raises(AttributeError):
        violation.kind = "G0"  # type: ignore[misc]
    report = CheckResult(checker="s", violations=(violation,)).report()
    assert "T1 -wr-> T2" in report
