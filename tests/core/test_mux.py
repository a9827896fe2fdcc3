"""The multiplexer keeps child cores apart on messages, timers and the WAL."""

from __future__ import annotations

from dataclasses import dataclass, field

from synod.codec import ClientRequest, ErrorReply, Routed, decode, encode
from synod.codec.registry import Message
from synod.core import (
    CancelTimer,
    ClientResult,
    Effects,
    NodeId,
    Persist,
    Recovered,
    Send,
    SetTimer,
)
from synod.core.mux import Mux


@dataclass
class Recorder:
    name: str
    seen: list[object] = field(default_factory=list)
    recovered: tuple[bytes, ...] = ()

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        self.recovered = recovered.records
        return [SetTimer(key="tick", delay_ms=10.0)]

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        self.seen.append(message)
        reply = ErrorReply(code=self.name)
        effects: Effects = [Send(to=source, message=reply), CancelTimer(key="tick")]
        if isinstance(message, ClientRequest):
            effects.append(Persist(records=(self.name.encode(),),
                                   then=(ClientResult(client=source, request_id=message.request_id,
                                                      result=reply),)))
        return effects

    def on_timer(self, now_ms: float, key: str) -> Effects:
        self.seen.append(("timer", key))
        return []

    def check_invariants(self) -> None:
        pass


def test_records_timers_and_messages_are_routed_by_group() -> None:
    a, b = Recorder("a"), Recorder("b")
    mux = Mux({"a": a, "b": b})
    effects = mux.start(0.0, Recovered(records=(b"a\x00one", b"b\x00two", b"a\x00three", b"zz\x00x")))
    assert a.recovered == (b"one", b"three") and b.recovered == (b"two",)
    assert mux.dropped["record for unknown group"] == 1
    assert SetTimer(key="a/tick", delay_ms=10.0) in effects

    out = mux.on_message(1.0, NodeId("n2"), Routed(group="b", body=ErrorReply(code="hi")))
    assert b.seen == [ErrorReply(code="hi")] and a.seen == []
    assert out[0] == Send(to=NodeId("n2"), message=Routed(group="b", body=ErrorReply(code="b")))
    assert out[1] == CancelTimer(key="b/tick")
    assert decode(encode(out[0].message)) == out[0].message  # type: ignore[union-attr]

    request = ClientRequest(request_id=9, body=Routed(group="a", body=ErrorReply(code="req")))
    out = mux.on_message(2.0, NodeId("client"), request)
    persist = out[-1]
    assert isinstance(persist, Persist)
    assert persist.records == (b"a\x00a",)
    assert persist.then == (ClientResult(client=NodeId("client"), request_id=9, result=ErrorReply(code="a")),)

    mux.on_timer(3.0, "a/tick")
    assert a.seen[-1] == ("timer", "tick")


def test_unknown_groups_are_dropped_and_counted() -> None:
    mux = Mux({"a": Recorder("a")})
    assert mux.on_message(0.0, NodeId("x"), Routed(group="nope", body=ErrorReply(code="")) ) == []
    assert mux.on_message(0.0, NodeId("x"), ErrorReply(code="")) == []
    assert mux.on_timer(0.0, "nope/t") == [] and mux.on_timer(0.0, "garbage") == []
    assert sum(mux.dropped.values()) == 4
