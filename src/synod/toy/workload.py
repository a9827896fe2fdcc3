"""A client core for the toy register: issues reads and writes, retries, keeps a history.

Theory of operation
-------------------
The client is a core like any other (the simulator hosts it on a node of its
own). Every ``op_interval_ms`` it may start one operation, if none is in flight
and it has not reached ``ops_max`` or ``stop_ms``: a write of a fresh unique
value (``"<client>-<n>"``) or a read, of one of ``keys`` keys, sent to a server
picked at random. If no answer comes within ``retry_ms`` it sends the same
request again (same ``request_id``), up to ``retries_max`` times, then records the
operation as timed out and moves on. Late or duplicate replies (the network
duplicates) are ignored by ``request_id``.

Each operation's lifecycle is ``pending -> ok | refused | timeout``, taken from
``TRANSITIONS``; the finished operations form the ``history`` that checks read.
A write whose outcome is ``ok`` was *acknowledged*: its node promised it is
durable, and ``Operation.entry`` is the version it was given.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace

from synod.codec import ClientReply, ClientRequest, ErrorReply, Message
from synod.core import CancelTimer, ConfigError, Effects, Recovered, Send, SetTimer, invariant
from synod.core.errors import LocalProtocolError
from synod.core.ids import NodeId
from synod.toy.messages import Entry, Read, ReadOk, Write, WriteOk

NEXT_TIMER = "next_op"
RETRY_TIMER = "retry"


class Outcome(enum.Enum):
    PENDING = "pending"
    OK = "ok"
    REFUSED = "refused"
    TIMEOUT = "timeout"


#: The legal moves of an operation's lifecycle.
TRANSITIONS: dict[Outcome, frozenset[Outcome]] = {
    Outcome.PENDING: frozenset({Outcome.OK, Outcome.REFUSED, Outcome.TIMEOUT}),
    Outcome.OK: frozenset(),
    Outcome.REFUSED: frozenset(),
    Outcome.TIMEOUT: frozenset(),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One client operation. Times are the client's local milliseconds."""

    request_id: int
    kind: str  # "write" or "read"
    key: str
    value: str  # the value written ("" for a read)
    node: NodeId  # the server asked
    start_ms: float
    end_ms: float = -1.0
    attempts: int = 1
    outcome: Outcome = Outcome.PENDING
    #: The entry written (a write) or read (a read, None if the key was absent).
    entry: Entry | None = None

    def finish(self, outcome: Outcome, end_ms: float, entry: Entry | None = None) -> Operation:
        if outcome not in TRANSITIONS[self.outcome]:
            raise LocalProtocolError(f"operation {self.request_id}: {self.outcome} -> {outcome}")
        return replace(self, outcome=outcome, end_ms=end_ms, entry=entry)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """The client's workload."""

    op_interval_ms: float = 8.0
    """Time between two chances to start an operation."""

    retry_ms: float = 40.0
    """How long to wait for an answer before sending the request again."""

    retries_max: int = 3
    """Resends of one request before it is recorded as timed out."""

    ops_max: int = 10_000
    """Most operations in one client's life: bounds the history."""

    stop_ms: float = float("inf")
    """Local time after which no new operation starts (lets a cluster go quiet)."""

    keys: int = 6
    """How many distinct keys (``k0``, ``k1``, ...) the workload touches."""

    read_fraction: float = 0.3
    """Share of operations that are reads."""

    value_bytes: int = 0
    """Pad each written value to at least this many bytes (bigger log records
    span more disk sectors, so a torn write can tear inside a record)."""

    def __post_init__(self) -> None:
        if not (self.op_interval_ms > 0 and self.retry_ms > 0):
            raise ConfigError("ClientConfig.op_interval_ms and retry_ms must be > 0")
        if self.retries_max < 0 or self.ops_max < 0 or self.keys < 1 or self.value_bytes < 0:
            raise ConfigError("ClientConfig.retries_max, ops_max, value_bytes >= 0 and keys >= 1")
        if not 0.0 <= self.read_fraction <= 1.0:
            raise ConfigError("ClientConfig.read_fraction must be in [0, 1]")


class RegisterClient:
    """A client core of the toy register, recording a history of operations."""

    def __init__(
        self,
        node: NodeId,
        servers: tuple[NodeId, ...],
        rng: random.Random,
        config: ClientConfig | None = None,
    ) -> None:
        if not servers:
            raise ConfigError("a RegisterClient needs at least one server")
        self.node = node
        self.servers = servers
        self.config = config if config is not None else ClientConfig()
        self._rng = rng
        self.history: list[Operation] = []
        self._pending: Operation | None = None
        self._next_request_id = 1

    # ------------------------------------------------------------ Core interface

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return [SetTimer(key=NEXT_TIMER, delay_ms=self._rng.uniform(0.0, self.config.op_interval_ms))]

    def on_timer(self, now_ms: float, key: str) -> Effects:
        if key == NEXT_TIMER:
            return self._maybe_issue(now_ms)
        if key == RETRY_TIMER:
            return self._retry(now_ms)
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        pending = self._pending
        if not isinstance(message, ClientReply) or pending is None:
            return []
        if message.request_id != pending.request_id or source != pending.node:
            return []  # late, duplicated, or from a previous attempt's server
        match message.body:
            case WriteOk(entry=entry) if pending.kind == "write":
                invariant(entry.key == pending.key and entry.value == pending.value, "WriteOk for another write")
                done = pending.finish(Outcome.OK, now_ms, entry)
            case ReadOk(key=key, entry=entry) if pending.kind == "read":
                invariant(key == pending.key, "ReadOk for another key")
                done = pending.finish(Outcome.OK, now_ms, entry)
            case ErrorReply():
                done = pending.finish(Outcome.REFUSED, now_ms)
            case _:
                return []  # an answer that fits nothing we asked: ignore it
        self._complete(done)
        return [CancelTimer(key=RETRY_TIMER)]

    def check_invariants(self) -> None:
        invariant(len(self.history) <= self.config.ops_max, "history over ops_max")
        if self._pending is not None:
            invariant(self._pending.outcome is Outcome.PENDING, "in-flight operation already finished")
            invariant(self._pending.attempts <= self.config.retries_max + 1, "too many attempts")

    # ------------------------------------------------------------ workload

    @property
    def issued(self) -> int:
        return len(self.history) + (1 if self._pending is not None else 0)

    def acknowledged_writes(self) -> list[Operation]:
        """Writes whose node answered ``WriteOk`` (each with its ``entry``)."""
        return [op for op in self.history if op.kind == "write" and op.outcome is Outcome.OK]

    def _maybe_issue(self, now_ms: float) -> Effects:
        effects: Effects = [SetTimer(key=NEXT_TIMER, delay_ms=self.config.op_interval_ms)]
        if self._pending is not None or self.issued >= self.config.ops_max or now_ms >= self.config.stop_ms:
            return effects
        request_id = self._next_request_id
        self._next_request_id += 1
        node = self._rng.choice(self.servers)
        key = f"k{self._rng.randrange(self.config.keys)}"
        if self._rng.random() < self.config.read_fraction:
            kind, value = "read", ""
        else:
            kind, value = "write", f"{self.node}-{request_id}".ljust(self.config.value_bytes, ".")
        self._pending = Operation(request_id=request_id, kind=kind, key=key, value=value, node=node, start_ms=now_ms)
        effects += self._send_pending()
        return effects

    def _send_pending(self) -> Effects:
        pending = self._pending
        assert pending is not None
        body: Message = Write(key=pending.key, value=pending.value) if pending.kind == "write" else Read(key=pending.key)
        return [
            Send(to=pending.node, message=ClientRequest(request_id=pending.request_id, body=body)),
            SetTimer(key=RETRY_TIMER, delay_ms=self.config.retry_ms),
        ]

    def _retry(self, now_ms: float) -> Effects:
        pending = self._pending
        if pending is None:
            return []
        if pending.attempts > self.config.retries_max:
            self._complete(pending.finish(Outcome.TIMEOUT, now_ms))
            return []
        self._pending = replace(pending, attempts=pending.attempts + 1)
        return self._send_pending()

    def _complete(self, operation: Operation) -> None:
        invariant(operation.outcome is not Outcome.PENDING, "completing a pending operation")
        self.history.append(operation)
        self._pending = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientFactory:
    """Builds a ``RegisterClient`` talking to ``servers``."""

    servers: tuple[NodeId, ...]
    config: ClientConfig

    def __call__(self, node: NodeId, rng: random.Random) -> RegisterClient:
        return RegisterClient(node, self.servers, rng, self.config)
