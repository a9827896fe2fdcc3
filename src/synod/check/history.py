"""Client histories: what clients asked, when, and what they were told.

Theory of operation
-------------------
A history is the only evidence a checker gets. Each client, for each request,
records an *invocation* (client id, operation, time) and later exactly one
completion:

``ok``
    the operation took effect, with ``result``;
``fail``
    the operation definitely did NOT take effect (the server refused it before
    doing anything: a typed error such as "not leader" or "conflict, aborted");
``info``
    the outcome is INDETERMINATE (a timeout, a connection lost mid-request): it may
    or may not have taken effect, and if it did, at any time after its invocation.

An operation still pending when the history is taken is treated as ``info``.
Checkers ignore the completion time of ``info`` operations (it is kept only for
people reading the history): such an operation may take effect arbitrarily late.

Times are any totally ordered numbers (virtual milliseconds in the simulator; one
monotonic clock in a real-process test: every client of one history must read the
same clock, or real-time order means nothing). Operation ``a`` precedes ``b``
when ``a`` completed strictly before ``b`` was invoked; equal times count as
concurrent, which is the permissive choice.

Operations are tuples whose first item names them: ``("get", key)``,
``("put", key, value)``, ``("cas", key, expected, new)``, ``("delete", key)``;
a list-append transaction is ``("txn", (("append", k, v), ("r", k, None), ...))``
with the completed micro-operations (reads filled in) as its result. Values are
JSON scalars, bytes, and tuples of these; lists are frozen into tuples when
recorded, so a history reads back from JSON equal to what was recorded.

Serialization is JSON lines: a header line, then one object per operation. A
failing history saved this way can be replayed as a regression test.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeAlias

from synod.core.errors import LocalProtocolError, SynodError

ClientId: TypeAlias = str | int
Time: TypeAlias = int | float

FORMAT_NAME = "synod-history"
FORMAT_VERSION = 1


class HistoryError(SynodError):
    """A history (recorded, or read from JSON) is malformed: unknown operation id,
    a completion before its invocation, an unsupported value type, a bad line."""


class Outcome(enum.Enum):
    """How an operation ended (see the module comment)."""

    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One operation of a history, with its completion.

    ``complete_time`` is None for an ``info`` operation that was still pending when
    the history was taken. ``error`` is the reason a ``fail``/``info`` gave, if any.
    """

    op_id: int
    client: ClientId
    operation: tuple[Any, ...]
    invoke_time: Time
    outcome: Outcome
    complete_time: Time | None = None
    result: Any = None
    error: str | None = None

    @property
    def name(self) -> str:
        """The operation's name (its first item), e.g. ``"get"``."""
        return str(self.operation[0])

    @property
    def is_ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def is_info(self) -> bool:
        return self.outcome is Outcome.INFO

    @property
    def is_fail(self) -> bool:
        return self.outcome is Outcome.FAIL

    def effective_complete_time(self) -> float:
        """Completion time as checkers see it: +infinity for ``info``."""
        if self.outcome is Outcome.INFO or self.complete_time is None:
            return math.inf
        return float(self.complete_time)

    def describe(self) -> str:
        """One line for reports: ``#12 c3 put('k', 5) -> ok None [10, 14]``."""
        arguments = ", ".join(repr(item) for item in self.operation[1:])
        end = "…" if self.complete_time is None else f"{self.complete_time}"
        if self.outcome is Outcome.OK:
            outcome = f"ok {self.result!r}"
        else:
            outcome = self.outcome.value
        return (
            f"#{self.op_id} {self.client} {self.name}({arguments}) -> {outcome} "
            f"[{self.invoke_time}, {end}]"
        )

    def validate(self) -> None:
        """Raise ``HistoryError`` if this operation is not well formed."""
        if not self.operation or not isinstance(self.operation[0], str):
            raise HistoryError(f"operation #{self.op_id}: first item must name the operation")
        if self.outcome is not Outcome.INFO and self.complete_time is None:
            raise HistoryError(f"operation #{self.op_id}: {self.outcome.value} without a time")
        if self.complete_time is not None and self.complete_time < self.invoke_time:
            raise HistoryError(
                f"operation #{self.op_id}: completed at {self.complete_time} before its "
                f"invocation at {self.invoke_time}"
            )


class History(Sequence[Operation]):
    """An immutable, validated sequence of operations ordered by ``op_id``."""

    __slots__ = ("_operations",)

    def __init__(self, operations: Iterable[Operation]) -> None:
        ordered = tuple(sorted(operations, key=lambda operation: operation.op_id))
        seen: set[int] = set()
        for operation in ordered:
            operation.validate()
            if operation.op_id in seen:
                raise HistoryError(f"operation id {operation.op_id} appears twice")
            seen.add(operation.op_id)
        self._operations = ordered

    def __len__(self) -> int:
        return len(self._operations)

    def __getitem__(self, index: Any) -> Any:
        return self._operations[index]

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._operations)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self._operations == other._operations

    def __hash__(self) -> int:
        return hash(self._operations)

    def __repr__(self) -> str:
        return f"History({len(self._operations)} operations)"

    @property
    def operations(self) -> tuple[Operation, ...]:
        return self._operations

    def counts(self) -> dict[str, int]:
        """How many operations ended ok, fail and info."""
        counts = {outcome.value: 0 for outcome in Outcome}
        for operation in self._operations:
            counts[operation.outcome.value] += 1
        return counts

    def to_jsonl(self) -> str:
        """The history as JSON lines (a header, then one line per operation)."""
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        lines = [json.dumps(header)]
        lines.extend(json.dumps(_operation_to_json(op), allow_nan=False) for op in self)
        return "\n".join(lines) + "\n"

    @staticmethod
    def from_jsonl(text: str) -> History:
        """Parse what ``to_jsonl`` wrote; raise ``HistoryError`` on anything else."""
        return History.read_jsonl(text.splitlines())

    def write_jsonl(self, stream: IO[str]) -> None:
        """Write ``to_jsonl()`` to an open text stream (the caller owns the file)."""
        stream.write(self.to_jsonl())

    @staticmethod
    def read_jsonl(lines: Iterable[str]) -> History:
        """Parse JSON lines from any iterable of lines (an open file, a list)."""
        operations: list[Operation] = []
        header_seen = False
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise HistoryError(f"line {number}: not JSON: {error}") from None
            if not isinstance(value, dict):
                raise HistoryError(f"line {number}: expected an object")
            if not header_seen:
                if value.get("format") != FORMAT_NAME:
                    raise HistoryError(f"line {number}: not a {FORMAT_NAME} header")
                if value.get("version") != FORMAT_VERSION:
                    raise HistoryError(f"line {number}: unsupported version {value.get('version')}")
                header_seen = True
                continue
            operations.append(_operation_from_json(value, number))
        if not header_seen:
            raise HistoryError("empty history file: no header line")
        return History(operations)


class HistoryRecorder:
    """What clients call to record a history.

    ``invoke`` before sending a request, then exactly one of ``ok``, ``fail`` or
    ``info`` when it ends. ``history()`` returns what has been recorded so far, with
    pending operations as ``info``. Misuse (completing an unknown or already
    completed operation, time going backwards within an operation) raises
    ``LocalProtocolError``: it is a bug in the test harness, not in the system.

    ``operations_max`` bounds memory; recording beyond it raises ``HistoryError``.
    """

    def __init__(self, *, operations_max: int = 10_000_000) -> None:
        if operations_max <= 0:
            raise ValueError("operations_max must be positive")
        self._operations_max = operations_max
        self._next_id = 0
        self._pending: dict[int, tuple[ClientId, tuple[Any, ...], Time]] = {}
        self._done: list[Operation] = []

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def __len__(self) -> int:
        return len(self._pending) + len(self._done)

    def invoke(self, client: ClientId, operation: Sequence[Any], time: Time) -> int:
        """Record that ``client`` invoked ``operation`` at ``time``; returns its id."""
        if len(self) >= self._operations_max:
            raise HistoryError(f"history is full ({self._operations_max} operations)")
        frozen = freeze(operation)
        if not isinstance(frozen, tuple) or not frozen or not isinstance(frozen[0], str):
            raise LocalProtocolError(f"operation must be a tuple naming itself: {operation!r}")
        op_id = self._next_id
        self._next_id += 1
        self._pending[op_id] = (client, frozen, time)
        return op_id

    def ok(self, op_id: int, result: Any, time: Time) -> None:
        """The operation took effect and returned ``result``."""
        self._complete(op_id, Outcome.OK, time, freeze(result), None)

    def fail(self, op_id: int, time: Time, error: str | None = None) -> None:
        """The operation definitely did not take effect."""
        self._complete(op_id, Outcome.FAIL, time, None, error)

    def info(self, op_id: int, time: Time | None = None, error: str | None = None) -> None:
        """The outcome is unknown (timeout): it may take effect at any later time."""
        self._complete(op_id, Outcome.INFO, time, None, error)

    def history(self) -> History:
        """Everything recorded so far; pending operations appear as ``info``."""
        pending = [
            Operation(
                op_id=op_id,
                client=client,
                operation=operation,
                invoke_time=invoke_time,
                outcome=Outcome.INFO,
                error="pending",
            )
            for op_id, (client, operation, invoke_time) in self._pending.items()
        ]
        return History([*self._done, *pending])

    def _complete(
        self, op_id: int, outcome: Outcome, time: Time | None, result: Any, error: str | None
    ) -> None:
        entry = self._pending.pop(op_id, None)
        if entry is None:
            raise LocalProtocolError(f"operation {op_id} is not pending")
        client, operation, invoke_time = entry
        if time is not None and time < invoke_time:
            self._pending[op_id] = entry
            raise LocalProtocolError(
                f"operation {op_id} completed at {time}, before its invocation at {invoke_time}"
            )
        self._done.append(
            Operation(
                op_id=op_id,
                client=client,
                operation=operation,
                invoke_time=invoke_time,
                outcome=outcome,
                complete_time=time,
                result=result,
                error=error,
            )
        )


def freeze(value: Any) -> Any:
    """Lists become tuples, recursively; anything JSON cannot carry is refused."""
    if value is None or isinstance(value, bool | int | str | bytes):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HistoryError(f"non-finite float {value!r} cannot be recorded")
        return value
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    raise HistoryError(f"cannot record a value of type {type(value).__name__}: {value!r}")


def _to_json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return [_to_json_value(item) for item in value]
    return value


def _from_json_value(value: Any, number: int) -> Any:
    if isinstance(value, list):
        return tuple(_from_json_value(item, number) for item in value)
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise HistoryError(f"line {number}: unexpected object value {value!r}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise HistoryError(f"line {number}: bad base64 value") from None
    return value


def _operation_to_json(operation: Operation) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": operation.op_id,
        "client": operation.client,
        "op": _to_json_value(operation.operation),
        "invoke": operation.invoke_time,
        "outcome": operation.outcome.value,
        "complete": operation.complete_time,
    }
    if operation.outcome is Outcome.OK:
        record["result"] = _to_json_value(operation.result)
    if operation.error is not None:
        record["error"] = operation.error
    return record


def _operation_from_json(record: dict[str, Any], number: int) -> Operation:
    try:
        op_id = record["id"]
        client = record["client"]
        operation = _from_json_value(record["op"], number)
        invoke_time = record["invoke"]
        outcome = Outcome(record["outcome"])
        complete_time = record.get("complete")
        result = _from_json_value(record.get("result"), number)
        error = record.get("error")
    except (KeyError, ValueError) as error_:
        raise HistoryError(f"line {number}: bad operation record: {error_}") from None
    if not isinstance(op_id, int) or isinstance(op_id, bool):
        raise HistoryError(f"line {number}: id must be an integer")
    if not isinstance(client, str | int) or isinstance(client, bool):
        raise HistoryError(f"line {number}: client must be a string or an integer")
    if not isinstance(operation, tuple):
        raise HistoryError(f"line {number}: op must be a list")
    for name, time in (("invoke", invoke_time), ("complete", complete_time)):
        if time is None and name == "complete":
            continue
        if not isinstance(time, int | float) or isinstance(time, bool):
            raise HistoryError(f"line {number}: {name} time must be a number")
    if error is not None and not isinstance(error, str):
        raise HistoryError(f"line {number}: error must be a string")
    built = Operation(
        op_id=op_id,
        client=client,
        operation=operation,
        invoke_time=invoke_time,
        outcome=outcome,
        complete_time=complete_time,
        result=result,
        error=error,
    )
    try:
        built.validate()
    except HistoryError as error_:
        raise HistoryError(f"line {number}: {error_}") from None
    return built
