"""Small cores for the simulator's own tests: each records what it saw, and a
test scripts what it does through plain functions."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from synod.codec.registry import Message, message
from synod.core import Effects, Recovered
from synod.core.ids import NodeId


@message(290)
@dataclass(frozen=True, slots=True, kw_only=True)
class Note(Message):
    """A test message carrying a number."""

    number: int


@dataclass(frozen=True, slots=True)
class Seen:
    now_ms: float
    kind: str  # "start", "message", "timer"
    detail: object


class ScriptCore:
    """A core whose handlers are supplied by the test; it logs every input."""

    def __init__(
        self,
        node: NodeId,
        rng: random.Random,
        *,
        on_start: Callable[[ScriptCore, float, Recovered], Effects] | None = None,
        on_message: Callable[[ScriptCore, float, NodeId, Message], Effects] | None = None,
        on_timer: Callable[[ScriptCore, float, str], Effects] | None = None,
        invariant: Callable[[ScriptCore], None] | None = None,
    ) -> None:
        self.node = node
        self.rng = rng
        self.seen: list[Seen] = []
        self.recovered: tuple[bytes, ...] = ()
        self.invariant_checks = 0
        self._on_start = on_start
        self._on_message = on_message
        self._on_timer = on_timer
        self._invariant = invariant

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        self.recovered = recovered.records
        self.seen.append(Seen(now_ms, "start", recovered.records))
        return self._on_start(self, now_ms, recovered) if self._on_start else []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        self.seen.append(Seen(now_ms, "message", (source, message)))
        return self._on_message(self, now_ms, source, message) if self._on_message else []

    def on_timer(self, now_ms: float, key: str) -> Effects:
        self.seen.append(Seen(now_ms, "timer", key))
        return self._on_timer(self, now_ms, key) if self._on_timer else []

    def check_invariants(self) -> None:
        self.invariant_checks += 1
        if self._invariant is not None:
            self._invariant(self)

    def messages(self) -> list[tuple[NodeId, Message]]:
        return [s.detail for s in self.seen if s.kind == "message"]  # type: ignore[misc]


def script(**handlers: object) -> Callable[[NodeId, random.Random], ScriptCore]:
    """A CoreFactory building ``ScriptCore(node, rng, **handlers)``."""

    def factory(node: NodeId, rng: random.Random) -> ScriptCore:
        return ScriptCore(node, rng, **handlers)  # type: ignore[arg-type]

    return factory
