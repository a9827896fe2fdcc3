"""Building small histories by hand, and a brute-force linearizability oracle."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from synod.check import History, KeyValueModel, Operation, Outcome

Row = tuple[Any, ...]


def history(*rows: Row) -> History:
    """Rows ``(client, operation, invoke, complete, outcome[, result])`` where
    outcome is "ok", "fail" or "info" (complete may be None for info)."""
    operations = []
    for op_id, row in enumerate(rows):
        client, operation, invoke, complete, outcome, *rest = row
        operations.append(
            Operation(
                op_id=op_id,
                client=client,
                operation=tuple(operation),
                invoke_time=invoke,
                complete_time=complete,
                outcome=Outcome(outcome),
                result=rest[0] if rest else None,
            )
        )
    return History(operations)


def brute_force_linearizable(operations: Sequence[Operation]) -> bool:
    """Try every order of every admissible subset (ok ops mandatory, info ops
    optional, fail ops absent): the definition, for tiny histories."""
    model = KeyValueModel()
    mandatory = [op for op in operations if op.outcome is Outcome.OK]
    optional = [op for op in operations if op.outcome is Outcome.INFO]
    for count in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, count):
            ops = mandatory + list(chosen)
            for order in itertools.permutations(ops):
                if _respects_real_time(order) and _legal(model, order):
                    return True
    return False


def _respects_real_time(order: Sequence[Operation]) -> bool:
    for i, earlier in enumerate(order):
        for later in order[i + 1 :]:
            # `later` may not have completed before `earlier` was invoked.
            if later.effective_complete_time() < earlier.invoke_time:
                return False
    return True


def _legal(model: KeyValueModel, order: Sequence[Operation]) -> bool:
    states: dict[Any, Any] = {}
    for op in order:
        key = model.partition(op.operation)
        state = states.get(key, model.init())
        allowed, states[key] = model.step(state, op.operation, op.result, op.is_ok)
        if not allowed:
            return False
    return True


INF = math.inf


def brute_force_serializable(operations: Sequence[Operation], *, realtime: bool = False) -> bool:
    """Is there a serial order of the committed transactions (ok ones, plus any
    subset of the indeterminate ones) in which every ok read sees what it saw?
    The definition, for tiny list-append histories."""
    mandatory = [op for op in operations if op.outcome is Outcome.OK]
    optional = [op for op in operations if op.outcome is Outcome.INFO]
    for count in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, count):
            for order in itertools.permutations(mandatory + list(chosen)):
                if realtime and not _respects_real_time(order):
                    continue
                if _serial_run_matches(order):
                    return True
    return False


def _serial_run_matches(order: Sequence[Operation]) -> bool:
    state: dict[Any, tuple[Any, ...]] = {}
    for op in order:
        micro_ops = op.result if op.outcome is Outcome.OK else op.operation[1]
        for micro in micro_ops:
            if micro[0] == "append":
                state[micro[1]] = (*state.get(micro[1], ()), micro[2])
            elif op.outcome is Outcome.OK and tuple(micro[2]) != state.get(micro[1], ()):
                return False
    return True
