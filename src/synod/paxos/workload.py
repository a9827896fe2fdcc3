"""A simulated client of a Paxos KV group: random operations, retries, a history.

Theory of operation
-------------------
The client is a core (the simulator hosts it on a node of its own). It has one
operation in flight at a time. Every ``op_interval_ms`` it may start one: a put of
a fresh unique value, a compare-and-set, a delete, or a read (lease or quorum
mode), of one of ``keys`` keys. A write is a ``Command(client, seq, seen_below)``;
every attempt of one operation carries the same ``seq``, so a retry applies at
most once. ``seen_below`` is the operation's own ``seq``: the client never retries
anything older (an operation it gave up on is abandoned, and a late copy of it
must not be applied again).

It sends to the replica it believes leads; a ``not_leader`` answer with a hint
redirects it at once, one without a hint makes it try another replica after
``retry_ms``. An operation that has no answer after ``op_timeout_ms`` is recorded
as indeterminate (it may still take effect later); a write refused for a reason
that proves it was never applied (``too_large``, ``bad_request``) is a failure.
``ClientOp`` records times on the client's own clock; the scenario maps them to
true time before checking linearizability.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from synod.codec.kernel import ClientReply, ClientRequest, ErrorReply
from synod.codec.registry import Message
from synod.core.effects import Effects, Recovered, Send, SetTimer
from synod.core.errors import ConfigError, invariant
from synod.core.ids import NodeId
from synod.paxos import kv
from synod.paxos.messages import Command, CommandResult, Read, ReadMode, ReadResult

NEXT_TIMER = "next_op"
RETRY_TIMER = "retry"

#: Answers that prove a command was never applied.
DEFINITE_REFUSALS = frozenset({"too_large", "bad_request"})


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadConfig:
    """The client's workload."""

    #: Time between two chances to start an operation.
    op_interval_ms: float = 5.0
    #: Wait this long for an answer before asking (another) replica again.
    retry_ms: float = 60.0
    #: Give up on an operation (record it indeterminate) after this long.
    op_timeout_ms: float = 1500.0
    #: Local time after which no new operation starts.
    stop_ms: float = float("inf")
    #: Distinct keys ``k0 .. k<keys-1>``.
    keys: int = 5
    #: Share of operations that are reads, and of those, quorum reads.
    read_fraction: float = 0.35
    quorum_read_fraction: float = 0.3
    #: Most operations in the client's life.
    ops_max: int = 100_000

    def __post_init__(self) -> None:
        if self.op_interval_ms <= 0 or self.retry_ms <= 0 or self.op_timeout_ms <= 0:
            raise ConfigError("WorkloadConfig intervals must be positive")
        if self.keys < 1 or self.ops_max < 0:
            raise ConfigError("WorkloadConfig.keys must be >= 1 and ops_max >= 0")


@dataclass(slots=True, kw_only=True)
class ClientOp:
    """One operation as the checker sees it: ``("put", k, v)``, ``("get", k)``,
    ``("cas", k, expected, new)``, ``("delete", k)``; ``outcome`` is ``"ok"``,
    ``"fail"`` or ``"info"``. Times are the client's local milliseconds."""

    operation: tuple[str | None, ...]
    seq: int
    start_ms: float
    end_ms: float = -1.0
    outcome: str = "pending"
    result: object = None
    attempts: int = 0


class KvClient:
    """A client core driving random KV operations against a Paxos group."""

    def __init__(self, node: NodeId, replicas: tuple[NodeId, ...], rng: random.Random,
                 config: WorkloadConfig | None = None) -> None:
        self.node = node
        self.replicas = replicas
        self.rng = rng
        self.config = config or WorkloadConfig()
        self.history: list[ClientOp] = []
        self._pending: ClientOp | None = None
        self._target = replicas[0]
        self._request_id = 0
        self._request_ids: set[int] = set()
        self._seq = 0

    # ------------------------------------------------------------ Core

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        self._target = self.rng.choice(self.replicas)
        return [SetTimer(key=NEXT_TIMER, delay_ms=self.rng.uniform(0.0, self.config.op_interval_ms))]

    def on_timer(self, now_ms: float, key: str) -> Effects:
        if key == NEXT_TIMER:
            return self._maybe_issue(now_ms)
        if key == RETRY_TIMER and self._pending is not None:
            self._target = self.rng.choice([r for r in self.replicas if r != self._target] or list(self.replicas))
            return self._attempt(now_ms)
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        pending = self._pending
        if not isinstance(message, ClientReply) or pending is None or message.request_id not in self._request_ids:
            return []
        body = message.body
        match body:
            case CommandResult(seq=seq, result=result) if seq == pending.seq and pending.operation[0] != "get":
                self._finish(now_ms, "ok", self._decode(pending, result))
            case ReadResult(result=result) if pending.operation[0] == "get":
                self._finish(now_ms, "ok", kv.decode_result(result))
            case ErrorReply(code=code) if code in DEFINITE_REFUSALS:
                self._finish(now_ms, "fail", None)
            case ErrorReply(code="not_leader", hint=hint) if hint in self.replicas:
                self._target = NodeId(hint)
                return self._attempt(now_ms)
            case ErrorReply():
                return []   # wait for the retry timer, then try another replica
            case _:
                return []
        return [SetTimer(key=NEXT_TIMER, delay_ms=self.config.op_interval_ms)]

    def check_invariants(self) -> None:
        invariant(len(self.history) <= self.config.ops_max, "history over ops_max")
        if self._pending is not None:
            invariant(self._pending.outcome == "pending", "in-flight operation already finished")

    # ------------------------------------------------------------ workload

    @property
    def in_flight(self) -> ClientOp | None:
        """The operation still waiting for an answer, if any."""
        return self._pending

    def _maybe_issue(self, now_ms: float) -> Effects:
        if self._pending is not None:
            if now_ms - self._pending.start_ms >= self.config.op_timeout_ms:
                self._finish(now_ms, "info", None)
            else:
                return [SetTimer(key=NEXT_TIMER, delay_ms=self.config.op_interval_ms)]
        if len(self.history) >= self.config.ops_max or now_ms >= self.config.stop_ms:
            return []
        key = f"k{self.rng.randrange(self.config.keys)}"
        self._seq += 1
        draw = self.rng.random()
        operation: tuple[str | None, ...]
        if draw < self.config.read_fraction:
            operation = ("get", key)
        elif draw < self.config.read_fraction + 0.15:
            expected = None if self.rng.random() < 0.3 else f"v{self.rng.randrange(1, 1 + self._seq)}"
            operation = ("cas", key, expected, f"{self.node}-{self._seq}")
        elif draw < self.config.read_fraction + 0.22:
            operation = ("delete", key)
        else:
            operation = ("put", key, f"{self.node}-{self._seq}")
        self._pending = ClientOp(operation=operation, seq=self._seq, start_ms=now_ms)
        self._request_ids.clear()
        return [*self._attempt(now_ms), SetTimer(key=NEXT_TIMER, delay_ms=self.config.op_interval_ms)]

    def _attempt(self, now_ms: float) -> Effects:
        pending = self._pending
        assert pending is not None
        pending.attempts += 1
        self._request_id += 1
        self._request_ids.add(self._request_id)
        body: Message
        name, key = pending.operation[0], pending.operation[1]
        assert key is not None
        if name == "get":
            mode = ReadMode.QUORUM if self.rng.random() < self.config.quorum_read_fraction else ReadMode.LEASE
            body = Read(op=kv.op_get(key), mode=mode)
        else:
            if name == "put":
                op = kv.op_put(key, str(pending.operation[2]))
            elif name == "cas":
                op = kv.op_cas(key, pending.operation[2], str(pending.operation[3]))
            else:
                op = kv.op_delete(key)
            body = Command(client=self.node, seq=pending.seq, seen_below=pending.seq, op=op)
        return [
            Send(to=self._target, message=ClientRequest(request_id=self._request_id, body=body)),
            SetTimer(key=RETRY_TIMER, delay_ms=self.config.retry_ms),
        ]

    @staticmethod
    def _decode(pending: ClientOp, result: bytes) -> object:
        decoded = kv.decode_result(result)
        if pending.operation[0] == "cas" and isinstance(decoded, tuple):
            return bool(decoded[0])
        return decoded

    def _finish(self, now_ms: float, outcome: str, result: object) -> None:
        pending = self._pending
        assert pending is not None
        pending.end_ms = now_ms
        pending.outcome = outcome
        pending.result = result
        self.history.append(pending)
        self._pending = None
        self._request_ids.clear()


@dataclass(frozen=True, slots=True, kw_only=True)
class KvClientFactory:
    """Builds a ``KvClient`` (a ``synod.core.CoreFactory``)."""

    replicas: tuple[NodeId, ...]
    config: WorkloadConfig

    def __call__(self, node: NodeId, rng: random.Random) -> KvClient:
        return KvClient(node, self.replicas, rng, self.config)
