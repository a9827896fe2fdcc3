"""Small cores the runtime tests host (they are the system under test's payload,
not stand-ins: the runtime runs any ``Core``, and these exercise every effect)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from synod.codec.kernel import ClientRequest
from synod.codec.registry import Message, message
from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Effects,
    Persist,
    Recovered,
    Send,
    SetTimer,
)
from synod.core.errors import invariant
from synod.core.ids import NodeId
from synod.runtime.host import principal_of


@message(90)
@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Message):
    """A test client's request: ``op`` with an argument."""

    op: str
    arg: str = ""
    delay_ms: float = 0.0


@message(91)
@dataclass(frozen=True, slots=True, kw_only=True)
class Note(Message):
    """Node to node."""

    text: str


@message(92)
@dataclass(frozen=True, slots=True, kw_only=True)
class Answer(Message):
    items: tuple[str, ...] = ()


class ProbeCore:
    """Answers ``Command``s so that tests can drive every effect from a client:

    * ``echo``: answer ``(arg,)`` at once;
    * ``durable``: persist ``arg`` and answer only after the fsync;
    * ``barrier``: a Persist with no records (answers after earlier Persists);
    * ``forward``: ``arg`` is ``"peer:text"``; send ``Note(text)`` to the peer;
    * ``notes``: the notes received so far, as ``"source:text"``;
    * ``timer`` / ``cancel``: arm timer ``arg`` after ``delay_ms`` / cancel it;
    * ``fired``: the timer keys fired so far, in order;
    * ``whoami``: the message source and its principal;
    * ``recovered``: the records the log held at start;
    * ``ignore``: never answer;
    * ``explode``: break an invariant (a bug: the node must stop).
    """

    def __init__(self, node: NodeId, rng: random.Random) -> None:
        self.node = node
        self.rng = rng
        self.notes: list[str] = []
        self.fired: list[str] = []
        self.recovered: tuple[bytes, ...] = ()

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        self.recovered = recovered.records
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        match message:
            case ClientRequest(request_id=request_id, body=Command() as command):
                return self._command(source, request_id, command)
            case Note(text=text):
                self.notes.append(f"{source}:{text}")
                return []
            case _:
                return []

    def _command(self, client: NodeId, request_id: int, command: Command) -> Effects:
        def answer(*items: str) -> ClientResult:
            return ClientResult(client=client, request_id=request_id, result=Answer(items=items))

        match command.op:
            case "echo":
                return [answer(command.arg)]
            case "durable":
                return [Persist(records=(command.arg.encode(),), then=(answer(command.arg),))]
            case "barrier":
                return [Persist(records=(), then=(answer(command.arg),))]
            case "forward":
                peer, _sep, text = command.arg.partition(":")
                return [Send(to=NodeId(peer), message=Note(text=text)), answer()]
            case "notes":
                return [answer(*self.notes)]
            case "timer":
                return [SetTimer(key=command.arg, delay_ms=command.delay_ms), answer()]
            case "cancel":
                return [CancelTimer(key=command.arg), answer()]
            case "fired":
                return [answer(*self.fired)]
            case "whoami":
                return [answer(client, principal_of(client))]
            case "recovered":
                return [answer(*(r.decode() for r in self.recovered))]
            case "ignore":
                return []
            case "explode":
                invariant(False, "explode requested")
                return []
            case _:
                return [answer("unknown op")]

    def on_timer(self, now_ms: float, key: str) -> Effects:
        self.fired.append(key)
        return []

    def check_invariants(self) -> None:
        pass


def probe_factory(node: NodeId, rng: random.Random) -> ProbeCore:
    return ProbeCore(node, rng)
