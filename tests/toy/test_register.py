"""The toy register core and its client, transition by transition."""

from __future__ import annotations

import random

import pytest

from synod.codec import ClientReply, ClientRequest, ErrorReply, decode, encode
from synod.core import ClientResult, Persist, Recovered, Send, SetTimer
from synod.core.errors import ConfigError, InvariantViolation, LocalProtocolError
from synod.core.ids import NodeId
from synod.toy import (
    ClientConfig,
    Entry,
    Operation,
    Outcome,
    Read,
    ReadOk,
    RegisterClient,
    RegisterConfig,
    RegisterNode,
    Replicate,
    Write,
    WriteOk,
)

N1, N2, N3, C1 = NodeId("n1"), NodeId("n2"), NodeId("n3"), NodeId("c1")


def node(name: NodeId = N1, config: RegisterConfig | None = None) -> RegisterNode:
    peers = tuple(p for p in (N1, N2, N3) if p != name)
    core = RegisterNode(name, peers, random.Random(1), config)
    core.start(0.0, Recovered())
    return core


def entry(key: str, value: str, counter: int, origin: str = "n2") -> Entry:
    return Entry(key=key, value=value, counter=counter, origin=origin)


def test_a_write_is_persisted_before_it_is_acknowledged_and_replicated() -> None:
    core = node()
    effects = core.on_message(1.0, C1, ClientRequest(request_id=7, body=Write(key="k", value="v")))
    assert len(effects) == 1 and isinstance(effects[0], Persist)
    persist = effects[0]
    written = entry("k", "v", 1, "n1")
    assert persist.records == (encode(written),)
    assert persist.then[0] == ClientResult(client=C1, request_id=7, result=WriteOk(entry=written))
    assert set(persist.then[1:]) == {Send(to=N2, message=Replicate(entries=(written,))),
                                     Send(to=N3, message=Replicate(entries=(written,)))}
    assert core.state["k"] == written
    core.check_invariants()


def test_versions_grow_past_everything_seen() -> None:
    core = node()
    core.on_message(1.0, N2, Replicate(entries=(entry("k", "x", 41),)))
    effects = core.on_message(2.0, C1, ClientRequest(request_id=1, body=Write(key="j", value="v")))
    assert isinstance(effects[0], Persist)
    assert core.state["j"].counter == 42


def test_a_peer_keeps_and_persists_only_newer_entries() -> None:
    core = node()
    core.on_message(1.0, N2, Replicate(entries=(entry("k", "new", 5),)))
    effects = core.on_message(2.0, N3, Replicate(entries=(entry("k", "old", 3, "n3"), entry("m", "v", 1, "n3"))))
    assert effects == [Persist(records=(encode(entry("m", "v", 1, "n3")),))]
    assert core.state["k"].value == "new"
    assert core.on_message(3.0, N3, Replicate(entries=(entry("k", "new", 5),))) == []


def test_ties_are_broken_the_same_way_everywhere() -> None:
    a, b = entry("k", "a", 3, "n2"), entry("k", "b", 3, "n2")
    first, second = node(), node(N3)
    first.on_message(1.0, N2, Replicate(entries=(a,)))
    first.on_message(2.0, N2, Replicate(entries=(b,)))
    second.on_message(1.0, N2, Replicate(entries=(b,)))
    second.on_message(2.0, N2, Replicate(entries=(a,)))
    assert first.state == second.state == {"k": b}


def test_start_rebuilds_state_from_the_log() -> None:
    records = (encode(entry("k", "1", 1)), encode(entry("k", "3", 3)), encode(entry("k", "2", 2)), encode(entry("j", "x", 9, "n1")))
    core = RegisterNode(N1, (N2, N3), random.Random(1))
    effects = core.start(0.0, Recovered(records=records))
    assert core.state == {"k": entry("k", "3", 3), "j": entry("j", "x", 9, "n1")}
    assert core.counter == 9
    assert [type(e) for e in effects] == [SetTimer]
    assert core.statistics().records_recovered == 4


def test_a_log_record_that_is_not_an_entry_is_a_bug() -> None:
    core = RegisterNode(N1, (N2,), random.Random(1))
    with pytest.raises(InvariantViolation):
        core.start(0.0, Recovered(records=(encode(Read(key="k")),)))


def test_reads_answer_from_local_state() -> None:
    core = node()
    core.on_message(1.0, N2, Replicate(entries=(entry("k", "v", 1),)))
    assert core.on_message(2.0, C1, ClientRequest(request_id=3, body=Read(key="k"))) == [
        ClientResult(client=C1, request_id=3, result=ReadOk(key="k", entry=entry("k", "v", 1)))]
    assert core.on_message(2.0, C1, ClientRequest(request_id=4, body=Read(key="absent"))) == [
        ClientResult(client=C1, request_id=4, result=ReadOk(key="absent", entry=None))]


@pytest.mark.parametrize(("body", "code"), [
    (Write(key="", value="v"), "too_large"),
    (Write(key="k" * 65, value="v"), "too_large"),
    (Write(key="k", value="v" * 1025), "too_large"),
    (WriteOk(entry=entry("k", "v", 1)), "bad_request"),
])
def test_bad_requests_get_typed_errors_and_change_nothing(body: object, code: str) -> None:
    core = node()
    effects = core.on_message(1.0, C1, ClientRequest(request_id=1, body=body))  # type: ignore[arg-type]
    assert len(effects) == 1 and isinstance(effects[0], ClientResult)
    assert isinstance(effects[0].result, ErrorReply) and effects[0].result.code == code
    assert core.state == {}


def test_a_full_node_refuses_new_keys() -> None:
    core = node(config=RegisterConfig(keys_max=2))
    for key in ("a", "b"):
        core.on_message(1.0, C1, ClientRequest(request_id=1, body=Write(key=key, value="v")))
    refused = core.on_message(1.0, C1, ClientRequest(request_id=2, body=Write(key="c", value="v")))
    assert isinstance(refused[0], ClientResult) and refused[0].result == ErrorReply(code="full", detail="keys_max reached")
    assert isinstance(core.on_message(1.0, C1, ClientRequest(request_id=3, body=Write(key="a", value="w")))[0], Persist)
    assert core.on_message(1.0, N2, Replicate(entries=(entry("a", "x", 1), entry("b", "y", 1), entry("c", "z", 1)))) == []


def test_anti_entropy_pushes_everything_to_each_peer_in_turn() -> None:
    core = node()
    assert core.on_timer(1.0, "anti_entropy") == [SetTimer(key="anti_entropy", delay_ms=50.0)]  # nothing to push
    core.on_message(1.0, N2, Replicate(entries=(entry("b", "2", 2), entry("a", "1", 1))))
    targets = []
    for _ in range(4):
        effects = core.on_timer(2.0, "anti_entropy")
        send = effects[0]
        assert isinstance(send, Send) and send.message == Replicate(entries=(entry("a", "1", 1), entry("b", "2", 2)))
        targets.append(send.to)
    assert sorted(targets[:2]) == [N2, N3] and targets[2:] == targets[:2]


def test_messages_it_does_not_serve_are_ignored_and_counted() -> None:
    core = node()
    assert core.on_message(1.0, N2, ClientReply(request_id=1, body=Read(key="k"))) == []
    assert core.on_timer(1.0, "unknown") == []
    assert core.statistics().messages_ignored == 2


def test_entries_are_wire_safe() -> None:
    message = Replicate(entries=(entry("k", "v", 1), entry("é", "ü" * 10, 2**40)))
    assert decode(encode(message)) == message


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        RegisterConfig(anti_entropy_interval_ms=0.0)
    with pytest.raises(ConfigError):
        ClientConfig(read_fraction=1.5)
    with pytest.raises(ConfigError):
        RegisterClient(C1, (), random.Random(1))


# ------------------------------------------------------------------ the client


def client(**changes: object) -> RegisterClient:
    config = ClientConfig(**{"read_fraction": 0.0, **changes})  # type: ignore[arg-type]
    core = RegisterClient(C1, (N1,), random.Random(3), config)
    core.start(0.0, Recovered())
    return core


def issue(core: RegisterClient, now: float = 10.0) -> ClientRequest:
    effects = core.on_timer(now, "next_op")
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == 1 and isinstance(sends[0].message, ClientRequest)
    return sends[0].message


def test_the_client_records_an_acknowledged_write() -> None:
    core = client()
    request = issue(core)
    assert isinstance(request.body, Write)
    written = Entry(key=request.body.key, value=request.body.value, counter=1, origin="n1")
    core.on_message(12.0, N1, ClientReply(request_id=request.request_id, body=WriteOk(entry=written)))
    [op] = core.acknowledged_writes()
    assert op.entry == written and op.end_ms == 12.0 and op.outcome is Outcome.OK
    core.check_invariants()


def test_the_client_retries_then_times_out_and_ignores_late_replies() -> None:
    core = client(retries_max=2)
    request = issue(core)
    for attempt in range(2):
        effects = core.on_timer(50.0 + attempt, "retry")
        assert any(isinstance(e, Send) and e.message == request for e in effects)
    assert core.on_timer(60.0, "retry") == []
    [op] = core.history
    assert op.outcome is Outcome.TIMEOUT and op.attempts == 3
    late = ClientReply(request_id=request.request_id, body=WriteOk(entry=Entry(key="k0", value="x", counter=1, origin="n1")))
    assert core.on_message(70.0, N1, late) == []
    assert core.acknowledged_writes() == []


def test_the_client_counts_refusals_and_stops_at_its_bounds() -> None:
    core = client(ops_max=1)
    request = issue(core)
    core.on_message(11.0, N1, ClientReply(request_id=request.request_id, body=ErrorReply(code="full")))
    assert core.history[0].outcome is Outcome.REFUSED
    assert [e for e in core.on_timer(20.0, "next_op") if isinstance(e, Send)] == []
    stopped = client(stop_ms=5.0)
    assert [e for e in stopped.on_timer(10.0, "next_op") if isinstance(e, Send)] == []


def test_an_operation_lifecycle_refuses_illegal_moves() -> None:
    op = Operation(request_id=1, kind="read", key="k", value="", node=N1, start_ms=0.0)
    done = op.finish(Outcome.OK, 1.0)
    with pytest.raises(LocalProtocolError):
        done.finish(Outcome.TIMEOUT, 2.0)


def test_values_can_be_padded() -> None:
    request = issue(client(value_bytes=50))
    assert isinstance(request.body, Write) and len(request.body.value) == 50
