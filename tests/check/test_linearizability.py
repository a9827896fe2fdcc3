"""The linearizability checker: known-bad histories rejected, known-good and
generated-from-a-real-execution histories accepted, planted bugs caught."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.check import (
    DeterministicModel,
    History,
    HistoryError,
    HistoryRecorder,
    check_linearizability,
)
from synod.check.synthetic import KvWorkload, kv_history

from .helpers import brute_force_linearizable, history

# -- known-bad histories -------------------------------------------------------

BAD = {
    "stale read": history(
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("a", ("put", "x", 2), 2, 3, "ok"),
        ("b", ("get", "x"), 4, 5, "ok", 1),
    ),
    "lost write": history(
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("b", ("get", "x"), 2, 3, "ok", None),
    ),
    "read of a never-written value": history(
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("b", ("get", "x"), 0, 3, "ok", 7),
    ),
    "read from the future": history(
        ("b", ("get", "x"), 0, 1, "ok", 1),
        ("a", ("put", "x", 1), 2, 3, "ok"),
    ),
    "two concurrent cas on one expected value both succeed": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("b", ("cas", "x", 0, 1), 2, 6, "ok", True),
        ("c", ("cas", "x", 0, 2), 3, 5, "ok", True),
    ),
    "cas fails although the value matched": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("b", ("cas", "x", 0, 1), 2, 3, "ok", False),
        ("c", ("get", "x"), 4, 5, "ok", 0),
        ("c", ("get", "x"), 6, 7, "ok", 0),
        ("a", ("put", "x", 5), 8, 9, "ok"),
        ("b", ("cas", "x", 5, 6), 10, 11, "ok", False),
    ),
    "cas outcomes contradict the reads": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("b", ("cas", "x", 0, 1), 2, 10, "ok", True),
        ("c", ("cas", "x", 1, 2), 2, 10, "ok", True),
        ("d", ("get", "x"), 11, 12, "ok", 1),
    ),
    "non-monotonic reads during a slow write": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("a", ("put", "x", 1), 2, 20, "ok"),
        ("b", ("get", "x"), 3, 4, "ok", 1),
        ("c", ("get", "x"), 5, 6, "ok", 0),
    ),
    "read after delete sees the old value": history(
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("a", ("delete", "x"), 2, 3, "ok"),
        ("b", ("get", "x"), 4, 5, "ok", 1),
    ),
    "delete says the key was absent when it was present": history(
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("a", ("delete", "x"), 2, 3, "ok", False),
    ),
    "a failed write is observed": history(
        ("a", ("put", "x", 1), 0, 1, "fail"),
        ("b", ("get", "x"), 2, 3, "ok", 1),
    ),
    "an indeterminate write observed before it was invoked": history(
        ("b", ("get", "x"), 0, 1, "ok", 2),
        ("a", ("put", "x", 2), 5, None, "info"),
    ),
    "an indeterminate write cannot take effect twice": history(
        ("a", ("put", "x", 1), 0, None, "info"),
        ("b", ("get", "x"), 1, 2, "ok", 1),
        ("b", ("put", "x", 2), 3, 4, "ok"),
        ("b", ("get", "x"), 5, 6, "ok", 1),
    ),
    "a failed cas reports a value the key no longer held": history(
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("a", ("put", "x", 2), 2, 3, "ok"),
        ("b", ("cas", "x", 5, 6), 4, 5, "ok", (False, 1)),
    ),
    "one bad key among good ones": history(
        ("a", ("put", "y", 1), 0, 1, "ok"),
        ("b", ("get", "y"), 2, 3, "ok", 1),
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("a", ("put", "x", 2), 2, 3, "ok"),
        ("b", ("get", "x"), 4, 5, "ok", 1),
    ),
}


SEARCHES = ["depth-first", "just-in-time", "auto"]


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("name", sorted(BAD))
def test_known_bad_history_is_rejected(name: str, search: str) -> None:
    result = check_linearizability(BAD[name], search=search)
    assert not result.ok
    assert result.kinds == {"not-linearizable"}
    assert len(result.violations) == 1
    assert result.violations[0].details["partition"] == "x"
    assert brute_force_linearizable(list(BAD[name])) is False  # the oracle agrees


# -- known-good histories ------------------------------------------------------

GOOD = {
    "sequential": history(
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("b", ("get", "x"), 2, 3, "ok", 1),
        ("a", ("delete", "x"), 4, 5, "ok", True),
        ("b", ("get", "x"), 6, 7, "ok", None),
    ),
    "reads concurrent with a write see either value": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("a", ("put", "x", 1), 2, 20, "ok"),
        ("b", ("get", "x"), 3, 4, "ok", 0),
        ("c", ("get", "x"), 5, 6, "ok", 1),
        ("b", ("get", "x"), 7, 8, "ok", 1),
    ),
    "later-invoked read returns first (overlap)": history(
        ("a", ("put", "x", 1), 0, 10, "ok"),
        ("b", ("get", "x"), 1, 9, "ok", 1),
        ("c", ("get", "x"), 2, 3, "ok", None),
    ),
    "concurrent cas: exactly one wins": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("b", ("cas", "x", 0, 1), 2, 6, "ok", True),
        ("c", ("cas", "x", 0, 2), 3, 5, "ok", False),
        ("d", ("get", "x"), 7, 8, "ok", 1),
    ),
    "cas chain in concurrent order": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("c", ("cas", "x", 1, 2), 2, 10, "ok", True),
        ("b", ("cas", "x", 0, 1), 2, 10, "ok", True),
        ("d", ("get", "x"), 11, 12, "ok", 2),
    ),
    "a failed cas reports the value it found": history(
        ("a", ("put", "x", 1), 0, 10, "ok"),
        ("b", ("cas", "x", 5, 6), 2, 3, "ok", (False, None)),
        ("b", ("cas", "x", 5, 6), 4, 5, "ok", (False, 1)),
        ("b", ("cas", "x", 1, 6), 6, 7, "ok", (True, 6)),
    ),
    "cas on absent key": history(
        ("a", ("cas", "x", None, 1), 0, 1, "ok", True),
        ("b", ("cas", "x", None, 2), 2, 3, "ok", False),
        ("b", ("get", "x"), 4, 5, "ok", 1),
    ),
    "equal times count as concurrent": history(
        ("a", ("put", "x", 1), 0, 5, "ok"),
        ("b", ("get", "x"), 5, 6, "ok", None),
    ),
    "an indeterminate write observed long after its timeout": history(
        ("a", ("put", "x", 1), 0, 2, "info"),
        ("b", ("get", "x"), 10, 11, "ok", None),
        ("b", ("get", "x"), 100, 101, "ok", 1),
    ),
    "an indeterminate write never observed": history(
        ("a", ("put", "x", 1), 0, None, "info"),
        ("b", ("get", "x"), 10, 11, "ok", None),
    ),
    "an indeterminate cas that took effect": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("b", ("cas", "x", 0, 3), 2, None, "info"),
        ("c", ("get", "x"), 10, 11, "ok", 3),
    ),
    "an indeterminate read constrains nothing": history(
        ("a", ("put", "x", 0), 0, 1, "ok"),
        ("b", ("get", "x"), 2, None, "info"),
    ),
    "a failed write is not observed": history(
        ("a", ("put", "x", 1), 0, 1, "ok"),
        ("a", ("put", "x", 2), 2, 3, "fail"),
        ("b", ("get", "x"), 4, 5, "ok", 1),
    ),
    "many indeterminate writes, last one wins": history(
        *[("a", ("put", "x", v), v, None, "info") for v in range(1, 12)],
        ("b", ("get", "x"), 50, 51, "ok", 3),
        ("b", ("get", "x"), 52, 53, "ok", 11),
        ("b", ("get", "x"), 54, 55, "ok", 5),
    ),
    "independent keys": history(
        ("a", ("put", "x", 1), 0, 10, "ok"),
        ("b", ("put", "y", 1), 0, 10, "ok"),
        ("c", ("get", "x"), 1, 2, "ok", 1),
        ("c", ("get", "y"), 3, 4, "ok", None),
    ),
}


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("name", sorted(GOOD))
def test_known_good_history_is_accepted(name: str, search: str) -> None:
    result = check_linearizability(GOOD[name], search=search)
    assert result.ok, result.report()
    assert brute_force_linearizable(list(GOOD[name])) is True


def test_report_names_the_stuck_operation_and_what_came_before() -> None:
    result = check_linearizability(BAD["stale read"], search="depth-first")
    violation = result.violations[0]
    assert "get('x') -> ok 1" in violation.details["stuck_operation"]
    # 2 is a value no read returned: the checker treats all such values alike.
    assert violation.details["state_at_stuck"] == "<unobserved value>"
    assert any("put('x', 2)" in line for line in violation.details["last_linearized"])
    assert "'x'" in violation.message
    assert "not linearizable" in result.report()


def test_just_in_time_report_names_the_return_no_configuration_survives() -> None:
    result = check_linearizability(BAD["stale read"], search="just-in-time")
    violation = result.violations[0]
    assert "get('x') -> ok 1" in violation.details["stuck_operation"]
    assert violation.details["completed_before_stuck"] == 2
    assert violation.details["possible_states_before"] == ["'<unobserved value>'"]
    assert any("put('x', 2)" in line for line in violation.details["last_completed"])
    assert "get('x') -> ok 1" in violation.message


def test_unknown_search_is_refused() -> None:
    with pytest.raises(ValueError):
        check_linearizability(GOOD["sequential"], search="guess")


def test_running_out_of_steps_is_inconclusive_not_a_pass() -> None:
    result = check_linearizability(GOOD["many indeterminate writes, last one wins"], steps_max=3)
    assert not result.ok
    assert not result.violations
    assert result.inconclusive


def test_unknown_operation_is_refused() -> None:
    with pytest.raises(HistoryError):
        check_linearizability(history(("a", ("incr", "x"), 0, 1, "ok")))


def test_a_saved_failing_history_replays_to_the_same_verdict() -> None:
    text = BAD["two concurrent cas on one expected value both succeed"].to_jsonl()
    again = check_linearizability(History.from_jsonl(text))
    assert again.kinds == {"not-linearizable"}


# -- a plugged-in model ----------------------------------------------------------


def _queue_apply(state: tuple[Any, ...], operation: tuple[Any, ...]) -> tuple[Any, Any]:
    if operation[0] == "enqueue":
        return None, (*state, operation[1])
    if not state:
        return None, state
    return state[0], state[1:]


QUEUE = DeterministicModel(
    name="fifo-queue",
    initial=(),
    apply=_queue_apply,
    known_operations=frozenset({"enqueue", "dequeue"}),
)


def test_a_plugged_in_fifo_queue_model() -> None:
    good = history(
        ("a", ("enqueue", 1), 0, 5, "ok"),
        ("b", ("enqueue", 2), 0, 5, "ok"),
        ("c", ("dequeue",), 6, 7, "ok", 2),
        ("c", ("dequeue",), 8, 9, "ok", 1),
    )
    bad = history(
        ("a", ("enqueue", 1), 0, 1, "ok"),
        ("b", ("enqueue", 2), 2, 3, "ok"),
        ("c", ("dequeue",), 6, 7, "ok", 2),
    )
    assert check_linearizability(good, QUEUE).ok
    assert check_linearizability(bad, QUEUE).kinds == {"not-linearizable"}
    with pytest.raises(HistoryError):
        check_linearizability(history(("a", ("push", 1), 0, 1, "ok")), QUEUE)


# -- generated from a real sequential execution ---------------------------------


@st.composite
def executed_histories(draw: st.DrawFn) -> History:
    """Apply random operations to a real register store at random points inside
    random, overlapping intervals; some time out (applied or not), some fail."""
    count = draw(st.integers(1, 40))
    rng = random.Random(draw(st.integers(0, 2**32)))
    keys = ["x", "y", "z"][: draw(st.integers(1, 3))]
    recorder = HistoryRecorder()
    planned = []
    for value in range(1, count + 1):
        key = rng.choice(keys)
        kind = rng.choice(["get", "get", "put", "cas", "delete"])
        operation: tuple[Any, ...] = {
            "get": ("get", key),
            "put": ("put", key, value),
            "cas": ("cas", key, rng.choice([None, *range(max(1, value - 5), value)]), value),
            "delete": ("delete", key),
        }[kind]
        invoke = rng.randrange(0, 200)
        complete = invoke + rng.randrange(0, 30)
        outcome = rng.choices(["ok", "info", "fail"], [0.8, 0.1, 0.1])[0]
        applied = outcome == "ok" or (outcome == "info" and rng.random() < 0.5)
        point = rng.uniform(invoke, complete if outcome == "ok" else complete + 100)
        planned.append(
            [
                recorder.invoke(f"c{value % 7}", operation, invoke),
                operation,
                complete,
                outcome,
                applied,
                point,
                None,
            ]
        )
    state: dict[str, Any] = {}
    for item in sorted(planned, key=lambda item: item[5]):
        if not item[4]:
            continue
        operation = item[1]
        key = operation[1]
        if operation[0] == "get":
            item[6] = state.get(key)
        elif operation[0] == "put":
            state[key] = operation[2]
        elif operation[0] == "delete":
            item[6] = key in state
            state.pop(key, None)
        else:
            item[6] = state.get(key) == operation[2]
            if item[6]:
                state[key] = operation[3]
    for op_id, _, complete, outcome, _, _, result in planned:
        if outcome == "ok":
            recorder.ok(op_id, result, complete)
        elif outcome == "fail":
            recorder.fail(op_id, complete)
        else:
            recorder.info(op_id, complete)
    return recorder.history()


@settings(max_examples=300, deadline=None)
@given(executed_histories())
def test_a_history_from_a_real_execution_is_always_accepted(generated: History) -> None:
    for search in SEARCHES:
        result = check_linearizability(generated, search=search)
        assert result.ok, result.report()


@settings(max_examples=200, deadline=None)
@given(executed_histories(), st.data())
def test_a_read_of_a_never_written_value_is_always_rejected(
    generated: History, data: st.DataObject
) -> None:
    reads = [i for i, op in enumerate(generated) if op.is_ok and op.name == "get"]
    if not reads:
        return
    victim = data.draw(st.sampled_from(reads))
    operations = list(generated)
    operations[victim] = _with_result(operations[victim], -1)
    for search in SEARCHES:
        assert check_linearizability(History(operations), search=search).kinds == {
            "not-linearizable"
        }


@pytest.mark.parametrize("search", ["depth-first", "just-in-time"])
@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    ("get", "x"),
                    ("put", "x", 1),
                    ("put", "x", 2),
                    ("cas", "x", 1, 2),
                    ("cas", "x", None, 1),
                    ("delete", "x"),
                ]
            ),
            st.integers(0, 10),
            st.integers(0, 6),
            st.sampled_from(["ok", "ok", "ok", "info", "fail"]),
            st.sampled_from([None, 1, 2, True, False]),
        ),
        max_size=6,
    )
)
def test_agrees_with_brute_force_on_tiny_arbitrary_histories(
    rows: list[tuple[tuple[Any, ...], int, int, str, Any]], search: str
) -> None:
    # Arbitrary results: most of these histories are not linearizable, so this
    # checks both directions against the definition.
    built = history(
        *[
            (f"c{i}", operation, invoke, invoke + length, outcome, result)
            for i, (operation, invoke, length, outcome, result) in enumerate(rows)
        ]
    )
    assert check_linearizability(built, search=search).ok == brute_force_linearizable(list(built))


def _with_result(operation: Any, result: Any) -> Any:
    return replace(operation, result=result)


# -- planted bugs ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_correct_replicated_service_passes(seed: int) -> None:
    workload = KvWorkload(operations=2_000, clients=12, keys=10, info_probability=0.05)
    built = kv_history(workload, seed)
    result = check_linearizability(built)
    assert result.ok, result.report()
    if seed < 2:  # the breadth-first search alone agrees (it is slower on good runs)
        assert check_linearizability(built, search="just-in-time").ok


@pytest.mark.parametrize(
    "bug",
    [
        {"stale_read_probability": 0.02},
        {"lost_write_probability": 0.02},
        {"phantom_read_probability": 0.01},
    ],
    ids=lambda bug: next(iter(bug)),
)
@pytest.mark.parametrize("seed", range(4))
def test_a_planted_bug_is_caught(bug: dict[str, float], seed: int) -> None:
    workload = KvWorkload(operations=2_000, clients=12, keys=10, info_probability=0.05, **bug)
    built = kv_history(workload, seed)
    result = check_linearizability(built)
    assert result.kinds == {"not-linearizable"}, result.report()
    alone = check_linearizability(built, search="just-in-time")
    assert {v.details["partition"] for v in alone.violations} == {
        v.details["partition"] for v in result.violations
    }


@st.composite
def tiny_executions(draw: st.DrawFn) -> History:
    """Up to 7 operations on one key with few distinct values (so equal and
    unobserved writes occur), many indeterminate, executed for real, and then
    with some results replaced by arbitrary ones: near-misses of linearizable."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    rows = []
    points = []
    for i in range(draw(st.integers(1, 7))):
        value = rng.randint(1, 3)
        operation: tuple[Any, ...] = rng.choice(
            [
                ("get", "x"),
                ("put", "x", value),
                ("delete", "x"),
                ("cas", "x", rng.choice([None, 1, 2, 3]), value),
            ]
        )
        invoke = rng.randrange(0, 12)
        complete = invoke + rng.randrange(0, 6)
        outcome = rng.choices(["ok", "info", "fail"], [0.6, 0.3, 0.1])[0]
        applied = outcome == "ok" or (outcome == "info" and rng.random() < 0.5)
        points.append(
            (rng.uniform(invoke, complete + (20 if outcome == "info" else 0)), i, applied)
        )
        rows.append([f"c{i}", operation, invoke, complete, outcome, None])
    value_now = None
    for _, i, applied in sorted(points):
        if not applied:
            continue
        operation = rows[i][1]
        if operation[0] == "get":
            rows[i][5] = value_now
        elif operation[0] == "put":
            value_now = operation[2]
        elif operation[0] == "delete":
            rows[i][5] = value_now is not None
            value_now = None
        else:
            rows[i][5] = value_now == operation[2]
            if rows[i][5]:
                value_now = operation[3]
    for row in rows:
        if row[4] == "ok" and rng.random() < 0.2:
            row[5] = rng.choice([None, 1, 2, 3, True, False])
    return history(*[tuple(row) for row in rows])


@pytest.mark.parametrize("search", ["depth-first", "just-in-time"])
@settings(max_examples=1000, deadline=None)
@given(built=tiny_executions())
def test_agrees_with_brute_force_on_near_linearizable_histories(
    built: History, search: str
) -> None:
    expected = brute_force_linearizable(list(built))
    assert check_linearizability(built, search=search).ok == expected


def test_a_10k_operation_replicated_run_is_decided() -> None:
    # The size the Paxos issue asks for (timings live in bench/check.py).
    workload = KvWorkload(operations=10_000, clients=16, keys=10, info_probability=0.05)
    good = check_linearizability(kv_history(workload, 0))
    assert good.ok, good.report()
    assert good.statistics["partitions"] == 10
    stale = replace(workload, stale_read_probability=0.01)
    bad = check_linearizability(kv_history(stale, 1))
    assert bad.kinds == {"not-linearizable"}
    assert len(bad.violations) >= 2  # every key is checked, not just the first bad one
