"""The state-machine interface, the KV machine and the exactly-once table."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core.faults import enable_mutant
from synod.paxos import kv
from synod.paxos.kv import KeyValue
from synod.paxos.statemachine import (
    MUTANT_SNAPSHOT_DROPS_CLIENT_TABLE,
    ClientTable,
    Outcome,
    ReplicatedState,
)


def _state() -> ReplicatedState:
    return ReplicatedState(KeyValue(), ClientTable(client_window_max=8, clients_max=4, client_retention_slots=100))


def test_kv_operations() -> None:
    machine = KeyValue()
    assert kv.decode_result(machine.apply(kv.op_put("a", "1"))) is None
    assert kv.decode_result(machine.apply(kv.op_get("a"))) == "1"
    assert kv.decode_result(machine.apply(kv.op_cas("a", "0", "2"))) == (False, "1")
    assert kv.decode_result(machine.apply(kv.op_cas("a", "1", "2"))) == (True, "2")
    assert kv.decode_result(machine.apply(kv.op_cas("b", None, "x"))) == (True, "x")
    assert kv.decode_result(machine.apply(kv.op_delete("a"))) is True
    assert kv.decode_result(machine.apply(kv.op_delete("a"))) is False
    assert kv.decode_result(machine.query(kv.op_get("b"))) == "x"


def test_a_bad_kv_op_is_an_error_result_not_a_crash() -> None:
    machine = KeyValue()
    for op in (b"", b"\xc1", kv._pack(["put", 1]), kv._pack(["nope"]), kv._pack(7)):
        result = kv.decode_result(machine.apply(op))
        assert isinstance(result, dict) and "error" in result
    assert machine.data == {}


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=700))
def test_kv_snapshot_round_trips_in_chunks(data: dict[str, str]) -> None:
    machine = KeyValue()
    machine.data = dict(data)
    chunks = list(machine.snapshot())
    assert len(chunks) == (len(data) + kv.SNAPSHOT_KEYS_PER_CHUNK - 1) // kv.SNAPSHOT_KEYS_PER_CHUNK
    other = KeyValue()
    other.restore(iter(chunks))
    assert other.data == data and other.digest() == machine.digest()


def test_apply_is_exactly_once_per_client_and_seq() -> None:
    state = _state()
    op = kv.op_cas("k", None, "v")
    first = state.apply("c", 1, 1, op, slot=1)
    again = state.apply("c", 1, 1, op, slot=2)
    assert first[0] == Outcome.FRESH and again[0] == Outcome.DUPLICATE and again[1] == first[1]


def test_the_exactly_once_table_survives_a_snapshot() -> None:
    state = _state()
    state.apply("c", 1, 1, kv.op_put("k", "a"), slot=1)
    state.apply("d", 1, 1, kv.op_put("k", "b"), slot=2)
    restored = _state()
    restored.restore(state.snapshot_chunks())
    assert restored.digest() == state.digest()
    outcome, _result, _slot = restored.apply("c", 1, 1, kv.op_put("k", "a"), slot=3)
    assert outcome == Outcome.DUPLICATE
    assert restored.machine.data["k"] == "b"


def test_the_snapshot_drops_client_table_mutant_loses_exactly_once() -> None:
    enable_mutant(MUTANT_SNAPSHOT_DROPS_CLIENT_TABLE)
    state = _state()
    state.apply("c", 1, 1, kv.op_put("k", "a"), slot=1)
    state.apply("d", 1, 1, kv.op_put("k", "b"), slot=2)
    restored = _state()
    restored.restore(state.snapshot_chunks())
    outcome, _result, _slot = restored.apply("c", 1, 1, kv.op_put("k", "a"), slot=3)
    assert outcome == Outcome.FRESH and restored.machine.data["k"] == "a"


def test_results_are_trimmed_by_the_lowest_unseen_seq() -> None:
    table = ClientTable(client_window_max=8, clients_max=4, client_retention_slots=100)
    for seq in (1, 2, 3):
        table.record("c", seq, 1, b"r", slot=seq)
    table.record("c", 4, 3, b"r", slot=4)
    assert table.lookup("c", 1)[0] == Outcome.FORGOTTEN
    assert table.lookup("c", 3)[0] == Outcome.DUPLICATE
    assert table.lookup("c", 5)[0] == Outcome.FRESH


def test_the_result_window_is_bounded_and_never_reapplies() -> None:
    table = ClientTable(client_window_max=4, clients_max=4, client_retention_slots=100)
    for seq in range(1, 11):
        table.record("c", seq, 1, b"r", slot=seq)
    assert table.lookup("c", 1)[0] == Outcome.FORGOTTEN
    assert table.lookup("c", 10)[0] == Outcome.DUPLICATE


def test_clients_are_evicted_by_log_position_not_time() -> None:
    table = ClientTable(client_window_max=4, clients_max=3, client_retention_slots=10)
    table.record("old", 1, 1, b"r", slot=1)
    table.record("new", 1, 1, b"r", slot=50)
    assert table.evict(55) == 1
    assert len(table) == 1
    for index, name in enumerate(("a", "b", "c", "d")):
        table.record(name, 1, 1, b"r", slot=60 + index)
    assert len(table) == 3 and table.lookup("new", 1)[0] == Outcome.FRESH
