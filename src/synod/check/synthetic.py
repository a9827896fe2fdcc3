"""Synthetic histories with known answers, for testing and benchmarking checkers.

Theory of operation
-------------------
A checker is only worth something if it accepts every correct history and
rejects broken ones. These generators produce both kinds from a *simulated*
service in virtual time, driven by a seeded ``random.Random``:

* concurrent clients each run a closed loop: think, invoke an operation, wait for
  its (random) latency, record the completion;
* each operation that takes effect does so at one *linearization point* drawn
  uniformly inside its interval; applying all of them to one sequential object in
  that order gives every result. Such a history is linearizable (and, for
  transactions, strictly serializable) by construction;
* some operations time out (recorded ``info``): each of them takes effect, or
  not, with even odds, and when it does its point may fall long after the
  client gave up; some fail cleanly (recorded ``fail``) and take no effect;
* *planted bugs* then break the service in a named way, with a probability per
  operation: a read served by a lagging replica, an acknowledged write that is
  lost, a read of a value nobody wrote; for transactions a lost update, reads of
  aborted or intermediate state, and reads from a stale snapshot.

``kv_history`` mimics a 3-replica key-value service (the leader applies a write
when a quorum has it; a lagging follower serves the stale reads of the planted
bug); ``list_append_history`` mimics a transactional list-append store.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from synod.check.history import History, HistoryRecorder


@dataclass(frozen=True, slots=True, kw_only=True)
class KvWorkload:
    """Shape of a synthetic key-value run. Times are virtual milliseconds."""

    #: Operations to record in total (every outcome counts).
    operations: int = 1_000
    #: Concurrent clients, each with one operation in flight at a time.
    clients: int = 8
    #: Keys the operations spread over (uniformly).
    keys: int = 10
    #: Fractions of get / put / cas; delete takes the rest.
    get_fraction: float = 0.5
    put_fraction: float = 0.3
    cas_fraction: float = 0.15
    #: Probability that an operation times out (``info``) / fails cleanly.
    info_probability: float = 0.03
    fail_probability: float = 0.02
    #: Operation latency is uniform in [latency_ms_min, latency_ms_max].
    latency_ms_min: float = 0.5
    latency_ms_max: float = 4.0
    #: Think time between a client's operations, uniform in [0, think_ms_max].
    think_ms_max: float = 1.0
    #: An indeterminate operation that does take effect does so up to this long
    #: after its invocation (it may outlive the client's timeout).
    info_effect_ms_max: float = 20.0
    #: Planted bugs: per-operation probabilities.
    stale_read_probability: float = 0.0
    lost_write_probability: float = 0.0
    phantom_read_probability: float = 0.0
    #: How far behind the leader the follower of the stale-read bug is.
    follower_lag_ms: float = 25.0

    def __post_init__(self) -> None:
        if self.operations < 0 or self.clients <= 0 or self.keys <= 0:
            raise ValueError("operations must be >= 0, clients and keys > 0")
        if self.get_fraction + self.put_fraction + self.cas_fraction > 1.0:
            raise ValueError("operation fractions add up to more than 1")
        if not 0 <= self.latency_ms_min <= self.latency_ms_max:
            raise ValueError("need 0 <= latency_ms_min <= latency_ms_max")
        for name in (
            "info_probability",
            "fail_probability",
            "stale_read_probability",
            "lost_write_probability",
            "phantom_read_probability",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability")


@dataclass(slots=True)
class _Pending:
    op_id: int
    operation: tuple[Any, ...]
    outcome: str  # "ok", "fail", "info"
    complete_ms: float
    effect_ms: float | None  # None: never takes effect
    result: Any = None


def kv_history(workload: KvWorkload, seed: int) -> History:
    """A key-value history shaped by ``workload`` (see the module comment).

    Without planted bugs it is linearizable. Put values are unique integers.
    """
    rng = random.Random(f"kv-history/{seed}")
    recorder = HistoryRecorder()
    keys = [f"k{index}" for index in range(workload.keys)]
    values = iter(range(1, 1 << 62))
    last_put: dict[str, int] = {}
    # Client loop: every client's next invocation time, in a heap.
    next_invoke: list[tuple[float, int]] = [
        (rng.uniform(0, workload.think_ms_max), client) for client in range(workload.clients)
    ]
    heapq.heapify(next_invoke)
    pending: list[_Pending] = []
    for _ in range(workload.operations):
        invoke_ms, client = heapq.heappop(next_invoke)
        operation = _kv_operation(workload, rng, keys, values, last_put)
        latency_ms = rng.uniform(workload.latency_ms_min, workload.latency_ms_max)
        complete_ms = invoke_ms + latency_ms
        draw = rng.random()
        if draw < workload.info_probability:
            outcome = "info"
            effect_ms: float | None = None
            if rng.random() < 0.5:
                effect_ms = invoke_ms + rng.uniform(0, workload.info_effect_ms_max)
        elif draw < workload.info_probability + workload.fail_probability:
            outcome, effect_ms = "fail", None
        else:
            outcome, effect_ms = "ok", rng.uniform(invoke_ms, complete_ms)
        op_id = recorder.invoke(f"c{client}", operation, invoke_ms)
        pending.append(_Pending(op_id, operation, outcome, complete_ms, effect_ms))
        heapq.heappush(next_invoke, (complete_ms + rng.uniform(0, workload.think_ms_max), client))

    _apply_kv(workload, rng, pending)
    for item in sorted(pending, key=lambda p: p.complete_ms):
        if item.outcome == "ok":
            recorder.ok(item.op_id, item.result, item.complete_ms)
        elif item.outcome == "fail":
            recorder.fail(item.op_id, item.complete_ms, "refused")
        else:
            recorder.info(item.op_id, item.complete_ms, "timeout")
    return recorder.history()


def _kv_operation(
    workload: KvWorkload,
    rng: random.Random,
    keys: list[str],
    values: Iterator[int],
    last_put: dict[str, int],
) -> tuple[Any, ...]:
    key = rng.choice(keys)
    draw = rng.random()
    if draw < workload.get_fraction:
        return ("get", key)
    draw -= workload.get_fraction
    if draw < workload.put_fraction:
        last_put[key] = next(values)
        return ("put", key, last_put[key])
    draw -= workload.put_fraction
    if draw < workload.cas_fraction:
        # Expect the latest value written often enough that some cas succeed.
        expected = last_put.get(key) if rng.random() < 0.7 else None
        new = next(values)
        last_put[key] = new
        return ("cas", key, expected, new)
    return ("delete", key)


def _apply_kv(workload: KvWorkload, rng: random.Random, pending: list[_Pending]) -> None:
    """Apply the operations that take effect in linearization-point order, with
    the planted bugs, and fill in their results."""
    state: dict[Any, Any] = {}
    # Per key, the values it held and from when: for the lagging follower.
    versions: dict[Any, list[tuple[float, Any]]] = {}
    effective = [item for item in pending if item.effect_ms is not None]
    effective.sort(key=lambda item: item.effect_ms or 0.0)
    for item in effective:
        name, key = item.operation[0], item.operation[1]
        at_ms = item.effect_ms or 0.0
        current = state.get(key)
        if name == "get":
            result = current
            if rng.random() < workload.stale_read_probability:
                result = _value_at(versions.get(key, []), at_ms - workload.follower_lag_ms)
            if rng.random() < workload.phantom_read_probability:
                result = -1 - rng.randrange(1_000_000)
            item.result = result
            continue
        if name in ("put", "delete") and rng.random() < workload.lost_write_probability:
            item.result = None  # acknowledged, never applied
            continue
        if name == "put":
            new = item.operation[2]
            item.result = None
        elif name == "delete":
            new = None
            item.result = current is not None
        else:
            expected = item.operation[2]
            swapped = current == expected
            new = item.operation[3] if swapped else current
            item.result = swapped
        if new != current:
            state[key] = new
            versions.setdefault(key, []).append((at_ms, new))


def _value_at(versions: list[tuple[float, Any]], at_ms: float) -> Any:
    value = None
    for when_ms, held in versions:
        if when_ms > at_ms:
            break
        value = held
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ListAppendWorkload:
    """Shape of a synthetic list-append transaction run (Elle's workload)."""

    transactions: int = 500
    clients: int = 8
    #: Keys in use at once; a key that reached ``appends_per_key_max`` is retired
    #: and replaced by a fresh one (keeps observed lists short, as Elle does).
    keys_active: int = 5
    appends_per_key_max: int = 32
    #: Micro-operations per transaction, uniform in [1, micro_ops_max].
    micro_ops_max: int = 4
    #: Probability that a micro-operation is a read (else an append).
    read_fraction: float = 0.5
    info_probability: float = 0.03
    fail_probability: float = 0.03
    latency_ms_min: float = 0.5
    latency_ms_max: float = 4.0
    think_ms_max: float = 1.0
    #: Planted bugs: per-transaction probabilities.
    lost_update_probability: float = 0.0
    aborted_read_probability: float = 0.0
    intermediate_read_probability: float = 0.0
    stale_snapshot_probability: float = 0.0

    def __post_init__(self) -> None:
        if self.transactions < 0 or self.clients <= 0 or self.keys_active <= 0:
            raise ValueError("transactions must be >= 0, clients and keys_active > 0")
        if self.micro_ops_max <= 0 or self.appends_per_key_max <= 0:
            raise ValueError("micro_ops_max and appends_per_key_max must be positive")
        for name in (
            "read_fraction",
            "info_probability",
            "fail_probability",
            "lost_update_probability",
            "aborted_read_probability",
            "intermediate_read_probability",
            "stale_snapshot_probability",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability")


def list_append_history(workload: ListAppendWorkload, seed: int) -> History:
    """A list-append transaction history shaped by ``workload``.

    Operations are ``("txn", micro_ops)`` with micro-ops ``("append", k, v)`` and
    ``("r", k, None)``; an ok result is the micro-ops with each read's observed
    list filled in. Without planted bugs the history is strictly serializable.
    """
    rng = random.Random(f"list-append-history/{seed}")
    recorder = HistoryRecorder()
    keys = _KeyPool(workload, rng)
    values = iter(range(1, 1 << 62))
    next_invoke: list[tuple[float, int]] = [
        (rng.uniform(0, workload.think_ms_max), client) for client in range(workload.clients)
    ]
    heapq.heapify(next_invoke)
    pending: list[_Pending] = []
    for _ in range(workload.transactions):
        invoke_ms, client = heapq.heappop(next_invoke)
        micro_ops: list[tuple[Any, ...]] = []
        for _ in range(rng.randint(1, workload.micro_ops_max)):
            key = keys.pick()
            if rng.random() < workload.read_fraction:
                micro_ops.append(("r", key, None))
            else:
                micro_ops.append(("append", key, next(values)))
                keys.appended(key)
        operation = ("txn", tuple(micro_ops))
        complete_ms = invoke_ms + rng.uniform(workload.latency_ms_min, workload.latency_ms_max)
        draw = rng.random()
        if draw < workload.info_probability:
            outcome = "info"
            effect_ms: float | None = None
            if rng.random() < 0.5:
                effect_ms = rng.uniform(invoke_ms, complete_ms + 10 * workload.latency_ms_max)
        elif draw < workload.info_probability + workload.fail_probability:
            outcome, effect_ms = "fail", None
        else:
            outcome, effect_ms = "ok", rng.uniform(invoke_ms, complete_ms)
        op_id = recorder.invoke(f"c{client}", operation, invoke_ms)
        item = _Pending(op_id, operation, outcome, complete_ms, effect_ms)
        item.result = invoke_ms  # remembered for the stale-snapshot bug
        pending.append(item)
        heapq.heappush(next_invoke, (complete_ms + rng.uniform(0, workload.think_ms_max), client))

    _apply_list_append(workload, rng, pending)
    for item in sorted(pending, key=lambda p: p.complete_ms):
        if item.outcome == "ok":
            recorder.ok(item.op_id, item.result, item.complete_ms)
        elif item.outcome == "fail":
            recorder.fail(item.op_id, item.complete_ms, "aborted")
        else:
            recorder.info(item.op_id, item.complete_ms, "timeout")
    return recorder.history()


class _KeyPool:
    def __init__(self, workload: ListAppendWorkload, rng: random.Random) -> None:
        self._workload = workload
        self._rng = rng
        self._next_key = workload.keys_active
        self._active = list(range(workload.keys_active))
        self._appends = dict.fromkeys(self._active, 0)

    def pick(self) -> int:
        return self._rng.choice(self._active)

    def appended(self, key: int) -> None:
        self._appends[key] += 1
        if self._appends[key] >= self._workload.appends_per_key_max:
            self._active[self._active.index(key)] = self._next_key
            self._appends[self._next_key] = 0
            self._next_key += 1


def _apply_list_append(
    workload: ListAppendWorkload, rng: random.Random, pending: list[_Pending]
) -> None:
    """Run the transactions that take effect serially, in linearization-point
    order, with the planted bugs; fill in the results of ok transactions."""
    state: dict[Any, tuple[Any, ...]] = {}
    history_of: dict[Any, list[tuple[float, tuple[Any, ...]]]] = {}
    aborted = [item for item in pending if item.outcome == "fail"]
    effective = sorted(
        (item for item in pending if item.effect_ms is not None),
        key=lambda item: item.effect_ms or 0.0,
    )
    for item in effective:
        at_ms = item.effect_ms or 0.0
        invoke_ms = float(item.result)
        micro_ops = item.operation[1]
        stale = rng.random() < workload.stale_snapshot_probability
        lose = rng.random() < workload.lost_update_probability
        completed: list[tuple[Any, ...]] = []
        own: dict[Any, tuple[Any, ...]] = {}
        for micro in micro_ops:
            name, key = micro[0], micro[1]
            if stale or lose:
                # Both bugs read from the snapshot taken at invocation.
                base = _list_at(history_of.get(key, []), invoke_ms)
            else:
                base = state.get(key, ())
            if name == "r":
                observed = (*base, *own.get(key, ()))
                if rng.random() < workload.aborted_read_probability:
                    dirty = _aborted_append(aborted, key, rng)
                    if dirty is not None:
                        observed = (*observed, dirty)
                completed.append(("r", key, observed))
            else:
                own[key] = (*own.get(key, ()), micro[2])
                completed.append(micro)
        for key, appended in own.items():
            if lose:
                # Write back snapshot + own appends: whatever others appended
                # since the snapshot is overwritten (a lost update).
                base = _list_at(history_of.get(key, []), invoke_ms)
            else:
                base = state.get(key, ())
            state[key] = (*base, *appended)
            history_of.setdefault(key, []).append((at_ms, state[key]))
        item.result = tuple(completed)
    # Intermediate reads: a reader observes the state between two appends of a
    # transaction that appended twice to one key.
    if workload.intermediate_read_probability > 0:
        _plant_intermediate_reads(workload, rng, pending)


def _aborted_append(aborted: list[_Pending], key: Any, rng: random.Random) -> Any:
    """A value some aborted transaction appended to ``key``, or None."""
    values = [
        micro[2]
        for item in aborted
        for micro in item.operation[1]
        if micro[0] == "append" and micro[1] == key
    ]
    return rng.choice(values) if values else None


def _list_at(versions: list[tuple[float, tuple[Any, ...]]], at_ms: float) -> tuple[Any, ...]:
    value: tuple[Any, ...] = ()
    for when_ms, held in versions:
        if when_ms > at_ms:
            break
        value = held
    return value


def _plant_intermediate_reads(
    workload: ListAppendWorkload, rng: random.Random, pending: list[_Pending]
) -> None:
    ok = [item for item in pending if item.outcome == "ok"]
    for item in ok:
        if rng.random() >= workload.intermediate_read_probability:
            continue
        for index, micro in enumerate(item.result):
            if micro[0] != "r" or not micro[2]:
                continue
            # The last value read: if its writer appended more to the key, cut
            # the observation between the writer's appends.
            key, observed = micro[1], micro[2]
            writer = _writer_appends(ok, key, observed[-1])
            if writer is not None and len(writer) >= 2 and observed[-1] == writer[-1]:
                cut = (*observed[: len(observed) - len(writer)], writer[0])
                result = list(item.result)
                result[index] = ("r", key, cut)
                item.result = tuple(result)
                break


def _writer_appends(ok: list[_Pending], key: Any, value: Any) -> list[Any] | None:
    for item in ok:
        appends = [m[2] for m in item.operation[1] if m[0] == "append" and m[1] == key]
        if value in appends:
            return appends
    return None
