"""Sequential specifications for the linearizability checker.

A *model* says what one object does when operations are applied to it one at a
time. The checker (``synod.check.linearizability``) searches for an order of the
history's operations, consistent with real time, that the model accepts.

The interface (``Model``) is small so that every block can plug in its own object:

``partition(operation)``
    the independent object an operation touches. Linearizability is
    *compositional* (Herlihy & Wing): a history is linearizable iff its restriction
    to each object is, so the checker splits the history by this key and checks
    each part alone. A model whose operations span objects returns one constant.
``init()``
    the state of one partition before any operation. States must be hashable
    (the checker memoizes (linearized set, state) pairs).
``step(state, operation, result, known)``
    apply ``operation`` to ``state``: return ``(True, next_state)`` if the model
    allows the operation to return ``result`` there, else ``(False, state)``.
    ``known`` is False for an indeterminate (timed out) operation, whose result was
    never seen: the model then accepts whatever the operation would have returned.
``is_read_only(operation)``
    True if the operation never changes state; indeterminate read-only operations
    constrain nothing and are dropped before the search.
``validate(operation)``
    raise ``HistoryError`` for an operation this model does not know.
``canonical(operations, results)``
    the operations of one partition (with the results of the definite ones, None
    for the others) rewritten so that operations no history could tell apart are
    equal. The search feeds these to ``step`` and tries only one of several equal
    indeterminate operations at a time, which keeps timed-out writes from
    multiplying the search. Returning the operations unchanged is always correct.

The key-value model's canonical form replaces every value that no read returned
and no compare-and-set expected by one token, ``UNOBSERVED``: a register holding
such a value answers every operation exactly as it would holding any other such
value (a get cannot return it, a cas cannot expect it, a delete sees "present"),
so the replacement changes no verdict, and all timed-out writes of never-seen
values become interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from synod.check.history import HistoryError


class Model(Protocol):
    """A sequential specification (see the module comment)."""

    @property
    def name(self) -> str: ...

    def partition(self, operation: tuple[Any, ...]) -> Hashable: ...

    def init(self) -> Hashable: ...

    def step(
        self, state: Any, operation: tuple[Any, ...], result: Any, known: bool
    ) -> tuple[bool, Any]: ...

    def is_read_only(self, operation: tuple[Any, ...]) -> bool: ...

    def validate(self, operation: tuple[Any, ...]) -> None: ...

    def canonical(
        self, operations: Sequence[tuple[Any, ...]], results: Sequence[Any]
    ) -> list[tuple[Any, ...]]: ...


class _Unobserved:
    """The token standing for any value no operation of the history observed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unobserved value>"


UNOBSERVED = _Unobserved()

_KV_ARITY = {"get": 2, "put": 3, "delete": 2, "cas": 4}


class KeyValueModel:
    """A key-value store of independent registers (the Paxos KV state machine).

    Partitioned by key; a partition's state is the key's value, None when absent
    (so None is not a storable value). Results, as the checker compares them:

    * ``("get", k)`` returns the value, or None when absent;
    * ``("put", k, v)``: its result is not checked (an acknowledgement);
    * ``("delete", k)``: a bool result means "the key existed" and is checked;
      any other result (None, "ok") is not checked;
    * ``("cas", k, expected, new)`` returns True and sets ``new`` iff the value was
      ``expected`` (None expects absence), else returns False and changes nothing.
      A result may also be the pair ``(swapped, value)``, where a failed cas
      reports the value it found: then that value is checked too, like a read.
    """

    name = "kv"

    def partition(self, operation: tuple[Any, ...]) -> Hashable:
        key: Hashable = operation[1]
        return key

    def init(self) -> Hashable:
        return None

    def validate(self, operation: tuple[Any, ...]) -> None:
        arity = _KV_ARITY.get(operation[0])
        if arity is None or len(operation) != arity:
            raise HistoryError(f"kv model: unknown operation {operation!r}")
        if operation[0] == "put" and operation[2] is None:
            raise HistoryError("kv model: None is not a storable value (it means absent)")

    def is_read_only(self, operation: tuple[Any, ...]) -> bool:
        return bool(operation[0] == "get")

    def canonical(
        self, operations: Sequence[tuple[Any, ...]], results: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        observed: set[Any] = set()
        for operation, result in zip(operations, results, strict=True):
            if operation[0] == "get":
                observed.add(_hashable(result))
            elif operation[0] == "cas":
                observed.add(_hashable(operation[2]))
                if isinstance(result, tuple) and len(result) == 2:
                    observed.add(_hashable(result[1]))
        rewritten = []
        for operation in operations:
            if operation[0] == "put" and _hashable(operation[2]) not in observed:
                operation = (*operation[:2], UNOBSERVED)
            elif operation[0] == "cas" and _hashable(operation[3]) not in observed:
                operation = (*operation[:3], UNOBSERVED)
            rewritten.append(operation)
        return rewritten

    def step(
        self, state: Any, operation: tuple[Any, ...], result: Any, known: bool
    ) -> tuple[bool, Any]:
        name = operation[0]
        if name == "get":
            return (not known or result == state), state
        if name == "put":
            return True, operation[2]
        if name == "cas":
            swapped = state == operation[2]
            if known:
                if isinstance(result, tuple) and len(result) == 2:
                    if result[0] != swapped or (not swapped and result[1] != state):
                        return False, state
                elif result != swapped:
                    return False, state
            return True, (operation[3] if swapped else state)
        if name == "delete":
            if known and isinstance(result, bool) and result != (state is not None):
                return False, state
            return True, None
        raise HistoryError(f"kv model: unknown operation {operation!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeterministicModel:
    """A ``Model`` built from a deterministic function, for other blocks' objects.

    ``apply(state, operation) -> (result, next_state)`` is the sequential
    specification; ``matches(expected, observed)`` compares results (default
    equality). ``partition`` defaults to one partition for everything.
    """

    name: str
    initial: Hashable
    apply: Callable[[Any, tuple[Any, ...]], tuple[Any, Any]]
    matches: Callable[[Any, Any], bool] = lambda expected, observed: bool(expected == observed)
    partition_of: Callable[[tuple[Any, ...]], Hashable] = lambda operation: None
    read_only: Callable[[tuple[Any, ...]], bool] = lambda operation: False
    known_operations: frozenset[str] | None = None

    def partition(self, operation: tuple[Any, ...]) -> Hashable:
        return self.partition_of(operation)

    def init(self) -> Hashable:
        return self.initial

    def validate(self, operation: tuple[Any, ...]) -> None:
        if self.known_operations is not None and operation[0] not in self.known_operations:
            raise HistoryError(f"{self.name} model: unknown operation {operation!r}")

    def is_read_only(self, operation: tuple[Any, ...]) -> bool:
        return self.read_only(operation)

    def canonical(
        self, operations: Sequence[tuple[Any, ...]], results: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        return list(operations)

    def step(
        self, state: Any, operation: tuple[Any, ...], result: Any, known: bool
    ) -> tuple[bool, Any]:
        expected, next_state = self.apply(state, operation)
        if known and not self.matches(expected, result):
            return False, state
        return True, next_state


def _hashable(value: Any) -> Any:
    """Values are hashable once frozen; an unhashable one (never produced by the
    recorder) is compared by its repr, which only makes it count as observed."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
