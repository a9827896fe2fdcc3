"""Checkers: history recording, linearizability, serializability, invariants.

Every block's simulation and real-process tests prove correctness with these.
Pure Python, no I/O: the caller reads and writes files.

Recording a history (``synod.check.history``)::

    recorder = HistoryRecorder()
    op = recorder.invoke("client-1", ("put", "k", 5), now_ms)   # before sending
    recorder.ok(op, None, now_ms)            # took effect, with its result
    recorder.fail(op, now_ms, "not leader")  # definitely did not take effect
    recorder.info(op, now_ms, "timeout")     # unknown: may take effect any time later
    history = recorder.history()             # pending operations count as info
    text = history.to_jsonl(); History.from_jsonl(text) == history

Operations are tuples naming themselves: ``("get", k)``, ``("put", k, v)``,
``("cas", k, expected, new)``, ``("delete", k)``; list-append transactions are
``("txn", (("append", k, v), ("r", k, None), ...))`` with the micro-ops, reads
filled in, as the ok result. Times are any comparable numbers from ONE clock.

Linearizability (``synod.check.linearizability``)::

    result = check_linearizability(history)                 # KeyValueModel
    result = check_linearizability(history, my_model, steps_max=10_000_000)

Wing & Gong's depth-first search with Lowe's memoization, per partition (key),
handing over to Lowe's breadth-first just-in-time search when a partition runs
long (``search="depth-first"`` or ``"just-in-time"`` forces one). A model is
anything with ``name``, ``partition(op)``, ``init()``, ``step(state, op, result,
known) -> (allowed, next_state)``, ``is_read_only(op)`` and ``validate(op)``
(``synod.check.models.Model``); ``DeterministicModel`` builds one from an
``apply(state, op) -> (result, next_state)`` function.

Serializability (``synod.check.serializability``)::

    result = check_serializability(history)                  # serializable?
    result = check_serializability(history, realtime=True)   # strict serializable?

Elle's list-append inference; violation kinds ``G0``, ``G1a``, ``G1b``, ``G1c``,
``G2`` (``details["subclass"]`` ``G-single`` or ``G2-item``), ``lost-update``,
``incompatible-order``, ``duplicate-elements``, ``garbage-read``, ``internal``,
and with ``realtime=True`` also ``G0-realtime``/``G1c-realtime``/``G2-realtime``.

Invariants (``synod.check.invariants``), each returning a list of violation
strings: ``check_single_value_per_slot(chosen_by_replica)``,
``check_prefix(recovered, appended, durable)``, ``check_converged(digests)``,
``check_acknowledged_present(acked, present)``, ``check_conserved(totals,
expected)``, ``check_at_most_one_holder(holders)``.

Results (``synod.check.result``): every checker returns a ``CheckResult``
(``ok``, ``violations``, ``inconclusive``, ``statistics``, ``kinds``,
``report()``, ``raise_if_failed()``, ``CheckResult.merge(results)``,
``CheckResult.from_violations(name, strings)``); each finding is a frozen
``Violation(checker, kind, message, details)``.

Synthetic histories with known answers, and planted bugs, for testing checkers
and for benchmarks: ``synod.check.synthetic`` (``kv_history(KvWorkload(...),
seed)``, ``list_append_history(ListAppendWorkload(...), seed)``).
"""

from synod.check.history import (
    ClientId,
    History,
    HistoryError,
    HistoryRecorder,
    Operation,
    Outcome,
)
from synod.check.invariants import (
    check_acknowledged_present,
    check_at_most_one_holder,
    check_conserved,
    check_converged,
    check_prefix,
    check_single_value_per_slot,
)
from synod.check.linearizability import check_linearizability
from synod.check.models import DeterministicModel, KeyValueModel, Model
from synod.check.result import CheckFailed, CheckResult, Violation
from synod.check.serializability import check_serializability

__all__ = [
    "CheckFailed",
    "CheckResult",
    "ClientId",
    "DeterministicModel",
    "History",
    "HistoryError",
    "HistoryRecorder",
    "KeyValueModel",
    "Model",
    "Operation",
    "Outcome",
    "Violation",
    "check_acknowledged_present",
    "check_at_most_one_holder",
    "check_conserved",
    "check_converged",
    "check_linearizability",
    "check_prefix",
    "check_serializability",
    "check_single_value_per_slot",
]
