"""History recording and its JSON-lines form."""

from __future__ import annotations

import io
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synod.check import History, HistoryError, HistoryRecorder, Operation, Outcome
from synod.core.errors import LocalProtocolError


def test_recorder_records_each_outcome() -> None:
    recorder = HistoryRecorder()
    put = recorder.invoke("c1", ("put", "k", 1), 0)
    get = recorder.invoke("c2", ["get", "k"], 1)
    cas = recorder.invoke("c3", ("cas", "k", 1, 2), 2)
    pending = recorder.invoke("c4", ("delete", "k"), 3)
    recorder.ok(put, None, 5)
    recorder.fail(get, 6, "not leader")
    recorder.info(cas, 7, "timeout")
    history = recorder.history()
    assert [op.outcome for op in history] == [Outcome.OK, Outcome.FAIL, Outcome.INFO, Outcome.INFO]
    assert history[1].operation == ("get", "k")  # lists are frozen into tuples
    assert history[1].error == "not leader"
    assert history[3].op_id == pending and history[3].complete_time is None
    assert history[3].effective_complete_time() == math.inf
    assert history[2].effective_complete_time() == math.inf  # info: time ignored
    assert history.counts() == {"ok": 1, "fail": 1, "info": 2}
    assert recorder.pending_count == 1


def test_results_are_frozen_so_they_compare_after_a_round_trip() -> None:
    recorder = HistoryRecorder()
    op = recorder.invoke("c", ("txn", [["r", "x", None]]), 0)
    recorder.ok(op, [["r", "x", [1, 2]]], 1)
    history = recorder.history()
    assert history[0].result == (("r", "x", (1, 2)),)
    assert History.from_jsonl(history.to_jsonl()) == history


@pytest.mark.parametrize(
    "misuse",
    [
        lambda r, op: r.ok(op + 1, None, 5),  # unknown id
        lambda r, op: r.ok(op, None, -1),  # before its invocation
    ],
)
def test_recorder_refuses_misuse(misuse: object) -> None:
    recorder = HistoryRecorder()
    op = recorder.invoke("c", ("get", "k"), 0)
    with pytest.raises(LocalProtocolError):
        misuse(recorder, op)  # type: ignore[operator]
    recorder.ok(op, None, 1)  # still pending after the refused completion
    with pytest.raises(LocalProtocolError):
        recorder.fail(op, 2)  # completed twice


def test_recorder_refuses_operations_that_do_not_name_themselves() -> None:
    recorder = HistoryRecorder()
    with pytest.raises(LocalProtocolError):
        recorder.invoke("c", (), 0)
    with pytest.raises(LocalProtocolError):
        recorder.invoke("c", (1, 2), 0)


def test_recorder_refuses_values_json_cannot_carry() -> None:
    recorder = HistoryRecorder()
    with pytest.raises(HistoryError):
        recorder.invoke("c", ("put", "k", {"a": 1}), 0)
    op = recorder.invoke("c", ("get", "k"), 0)
    with pytest.raises(HistoryError):
        recorder.ok(op, float("nan"), 1)


def test_recorder_is_bounded() -> None:
    recorder = HistoryRecorder(operations_max=2)
    recorder.invoke("c", ("get", "k"), 0)
    recorder.invoke("c", ("get", "k"), 0)
    with pytest.raises(HistoryError):
        recorder.invoke("c", ("get", "k"), 0)


def test_history_validates_operations() -> None:
    good = Operation(
        op_id=1,
        client="c",
        operation=("get", "k"),
        invoke_time=0,
        outcome=Outcome.OK,
        complete_time=1,
    )
    with pytest.raises(HistoryError):
        History([good, good])
    backwards = Operation(
        op_id=2,
        client="c",
        operation=("get", "k"),
        invoke_time=5,
        outcome=Outcome.OK,
        complete_time=1,
    )
    with pytest.raises(HistoryError):
        History([backwards])
    no_time = Operation(
        op_id=3, client="c", operation=("get", "k"), invoke_time=5, outcome=Outcome.OK
    )
    with pytest.raises(HistoryError):
        History([no_time])


def test_jsonl_carries_bytes_and_streams() -> None:
    recorder = HistoryRecorder()
    op = recorder.invoke(7, ("put", "/ls/cell/file", b"\x00\xffcontents"), 0.5)
    recorder.ok(op, None, 1.25)
    history = recorder.history()
    stream = io.StringIO()
    history.write_jsonl(stream)
    stream.seek(0)
    again = History.read_jsonl(stream)
    assert again == history
    assert again[0].operation[2] == b"\x00\xffcontents"
    assert again[0].client == 7


@pytest.mark.parametrize(
    "text",
    [
        "",
        '{"format": "other", "version": 1}\n',
        '{"format": "synod-history", "version": 99}\n',
        '{"format": "synod-history", "version": 1}\nnot json\n',
        '{"format": "synod-history", "version": 1}\n[1, 2]\n',
        '{"format": "synod-history", "version": 1}\n{"id": 1}\n',
        '{"format": "synod-history", "version": 1}\n'
        '{"id": 1, "client": "c", "op": ["get", "k"], "invoke": "x", "outcome": "ok", "complete": 2}\n',
        '{"format": "synod-history", "version": 1}\n'
        '{"id": 1, "client": "c", "op": ["get", "k"], "invoke": 3, "outcome": "ok", "complete": 2}\n',
        '{"format": "synod-history", "version": 1}\n'
        '{"id": 1, "client": "c", "op": ["get", "k"], "invoke": 1, "outcome": "maybe", "complete": 2}\n',
        '{"format": "synod-history", "version": 1}\n'
        '{"id": 1, "client": "c", "op": ["put", "k", {"x": 1}], "invoke": 1, "outcome": "ok", "complete": 2}\n',
        '{"format": "synod-history", "version": 1}\n'
        '{"id": true, "client": "c", "op": ["get", "k"], "invoke": 1, "outcome": "ok", "complete": 2}\n',
    ],
)
def test_bad_jsonl_raises_history_error(text: str) -> None:
    with pytest.raises(HistoryError):
        History.from_jsonl(text)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=3),
    max_leaves=6,
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2", 3]),
            st.lists(values, max_size=3),
            st.integers(0, 1000),
            st.integers(0, 100),
            st.sampled_from(["ok", "fail", "info", "pending"]),
            values,
        ),
        max_size=20,
    )
)
def test_any_recorded_history_survives_a_json_round_trip(
    rows: list[tuple[object, list[object], int, int, str, object]],
) -> None:
    recorder = HistoryRecorder()
    for client, arguments, invoke, duration, outcome, result in rows:
        op = recorder.invoke(client, ("op", *arguments), invoke)  # type: ignore[arg-type]
        if outcome == "ok":
            recorder.ok(op, result, invoke + duration)
        elif outcome == "fail":
            recorder.fail(op, invoke + duration, "no")
        elif outcome == "info":
            recorder.info(op, invoke + duration)
    history = recorder.history()
    assert History.from_jsonl(history.to_jsonl()) == history
