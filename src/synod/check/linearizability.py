"""Linearizability checking: Wing & Gong's search with Lowe's improvements.

Theory of operation
-------------------
A history is *linearizable* (Herlihy & Wing, 1990) if every operation can be
given a point in time between its invocation and its completion such that, taken
in the order of those points, the operations are a legal sequential execution of
the model. This module decides that by search, following:

* Wing & Gong (1993): walk a doubly-linked list of call and return events sorted
  by time. The operations that may be linearized next are exactly those whose
  call comes before the first return still in the list (a *minimal* operation:
  nothing still pending finished before it started). Linearizing one ("lifting")
  unlinks its call and return; reaching a return means nothing before it could be
  linearized in the current state, so the search backtracks.
* Lowe (2017), "Testing for linearizability": memoize every (set of linearized
  operations, model state) pair reached; reaching one again cannot lead anywhere
  new, so that branch is cut. Sets are Python ints used as bitsets.

Indeterminate (timed-out) operations are what makes real histories hard: each
may be linearized at any point after its invocation, or never. Four rules keep
them from multiplying the search (rules 2 and 4 serve both searches); each only removes configurations from which
another, still explored, can do everything they can:

1. *Just in time* (Lowe's term): they are tried only when the search is stuck
   at a return, never eagerly, since only then can one be needed.
2. *Dominance* in the memo: the same definite set and state reached with fewer
   indeterminate operations used can do everything the other can, so for each
   (definite set, state) the memo keeps the indeterminate sets seen and cuts a
   configuration if one of them is a subset of its own.
3. *Scheduling* at a stuck point: every indeterminate candidate is applied once
   and entered in the memo before any is explored, so a chain of them that ends
   where a single one does is cut (rule 2) whichever comes first; and those
   after which a definite candidate fits are explored first.
4. *Interchangeable operations*: equal indeterminate operations have the same
   effect and an unknown result; of those available, only the one invoked last
   is tried (a solution using an earlier one can swap the two). The model's
   ``canonical`` form makes more of them equal: for the key-value model, every
   value nobody read or compared becomes one token (see ``synod.check.models``).

* Lowe's just-in-time linearization, breadth first (``_JitSearch``): read the
  history in time order keeping every configuration (state, pending operations
  already linearized) it allows; at each return, the configurations that cannot
  linearize that operation, after any chain of pending ones, die. A bad history
  is rejected at its first impossible return, without exhausting the past,
  which is where the depth-first search is slow. ``check_partition`` runs the
  depth-first search on a budget (it is the fastest on good histories) and
  hands over to this one when the budget runs out.
* P-compositionality (Horn & Kroening, 2015; Lowe): linearizability is local, so
  the history is split by ``Model.partition`` (the key, for a key-value store) and
  each part checked alone; a 10,000-operation history over many keys becomes many
  small searches.

Outcomes as the search sees them:

* ``ok``: must be linearized between invocation and completion, with its result;
* ``fail``: did not happen: dropped;
* ``info`` (indeterminate): may be linearized anywhere after its invocation, or
  not at all; its completion is +infinity and its result unknown. A read-only
  indeterminate operation constrains nothing and is dropped. The search succeeds
  as soon as every ``ok`` operation is linearized.

The search is bounded by ``steps_max`` model steps per partition; running out
makes the result *inconclusive* (never a pass).

When a partition is not linearizable, the report gives the deepest point the
search reached: how many operations it could linearize, the model state there,
the operation whose completion could not be passed, the operations that were
candidates at that point, and the last operations linearized before it.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, TypeAlias

from synod.check.history import History, Operation
from synod.check.models import KeyValueModel, Model
from synod.check.result import CheckResult, Violation

CHECKER = "linearizability"

#: Default bound on model steps per partition (about a few seconds of Python).
STEPS_MAX_DEFAULT = 5_000_000

#: One step of the search path: (is it indeterminate, its event or operation
#: index, the state before it, the schedule it came from, its position there).
_Frame: TypeAlias = tuple[bool, int, Any, "list[tuple[int, Any, int]] | None", int]

#: Marks a configuration cut by the memo (a sentinel list, compared by identity).
_DOMINATED: list[int] = []

#: The ways ``check_linearizability`` can search (see ``check_partition``).
SEARCHES = frozenset({"auto", "depth-first", "just-in-time"})

#: Budget of the depth-first search before the just-in-time one takes over (see
#: ``check_partition``): a good history needs a few to a few hundred steps per
#: operation, more the more indeterminate operations there are (each stuck
#: point tries those pending), so the budget per operation grows with them.
DEPTH_FIRST_STEPS_PER_OPERATION = 100
DEPTH_FIRST_STEPS_PER_PENDING = 10
DEPTH_FIRST_STEPS_MIN = 50_000

#: How many operations a report lists before the stuck point.
EXPLANATION_TAIL = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionVerdict:
    """The outcome of the search on one partition."""

    partition: Hashable
    linearizable: bool | None  # None: the step budget ran out
    operations: int
    steps: int
    explanation: dict[str, Any] | None = None


def check_linearizability(
    history: History | Iterable[Operation],
    model: Model | None = None,
    *,
    steps_max: int = STEPS_MAX_DEFAULT,
    search: str = "auto",
) -> CheckResult:
    """Check ``history`` against ``model`` (default: ``KeyValueModel``).

    Returns a ``CheckResult`` with one ``Violation`` (kind ``"not-linearizable"``)
    per partition that is not linearizable, and an inconclusive reason per
    partition whose search ran out of ``steps_max``. ``search`` picks the
    algorithm (``"auto"``: depth-first, then just-in-time if that runs long).

    A violation's details always name the ``partition``, the ``stuck_operation``
    and the ``concurrent_candidates``, and carry a one-line ``summary``; the
    depth-first search adds ``state_at_stuck`` and ``last_linearized`` (its
    deepest path), the just-in-time search ``possible_states_before`` and
    ``last_completed``.
    """
    if steps_max <= 0:
        raise ValueError("steps_max must be positive")
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {sorted(SEARCHES)}")
    chosen: Model = model if model is not None else KeyValueModel()
    partitions: dict[Hashable, list[Operation]] = defaultdict(list)
    dropped = 0
    for operation in history:
        chosen.validate(operation.operation)
        if operation.is_fail or (operation.is_info and chosen.is_read_only(operation.operation)):
            dropped += 1
            continue
        partitions[chosen.partition(operation.operation)].append(operation)

    violations: list[Violation] = []
    inconclusive: list[str] = []
    steps_total = 0
    for key, operations in partitions.items():
        verdict = check_partition(key, operations, chosen, steps_max=steps_max, search=search)
        steps_total += verdict.steps
        if verdict.linearizable is None:
            inconclusive.append(
                f"partition {key!r}: search gave up after {verdict.steps} steps "
                f"({verdict.operations} operations); raise steps_max"
            )
        elif not verdict.linearizable:
            violations.append(_violation(chosen, verdict))
    return CheckResult(
        checker=CHECKER,
        violations=tuple(violations),
        inconclusive=tuple(inconclusive),
        statistics={
            "partitions": len(partitions),
            "operations_checked": sum(len(ops) for ops in partitions.values()),
            "operations_dropped": dropped,
            "steps": steps_total,
        },
    )


def check_partition(
    partition: Hashable,
    operations: list[Operation],
    model: Model,
    *,
    steps_max: int = STEPS_MAX_DEFAULT,
    search: str = "auto",
) -> PartitionVerdict:
    """Decide one partition (``ok`` and ``info`` operations only: the caller
    drops ``fail`` ones).

    The depth-first search is the fastest on good histories (it finds their
    linearization almost without backtracking), so it runs first, on a budget
    proportional to the partition's size; the breadth-first just-in-time search
    rejects a bad history at the violation, where the first would exhaust every
    alternative, so it takes over with what is left of ``steps_max``.
    ``search`` may force one of them alone: ``"depth-first"`` or
    ``"just-in-time"``.
    """
    if search == "depth-first":
        return _Search(partition, operations, model, steps_max).run()
    if search == "just-in-time":
        return _JitSearch(partition, operations, model, steps_max).run()
    indeterminate = sum(1 for op in operations if op.is_info)
    per_operation = DEPTH_FIRST_STEPS_PER_OPERATION + DEPTH_FIRST_STEPS_PER_PENDING * indeterminate
    depth_first_max = min(
        steps_max // 2, max(DEPTH_FIRST_STEPS_MIN, per_operation * len(operations))
    )
    verdict = _Search(partition, operations, model, max(1, depth_first_max)).run()
    if verdict.linearizable is not None:
        return verdict
    fallback = _JitSearch(partition, operations, model, steps_max - verdict.steps).run()
    return replace(fallback, steps=verdict.steps + fallback.steps)


class _Search:
    """One Wing & Gong / Lowe search. Events live in flat arrays for speed.

    Definite (``ok``) operations have a call and a return event in the main list;
    indeterminate ones only a call, in a second list sorted by invocation, tried
    just in time (see the module comment). Operation ``i`` owns bit ``1 << i``.
    """

    def __init__(
        self, partition: Hashable, operations: list[Operation], model: Model, steps_max: int
    ) -> None:
        self.partition = partition
        self.model = model
        self.steps_max = steps_max
        self.steps = 0
        self.definite = [op for op in operations if op.is_ok]
        self.indefinite = sorted(
            (op for op in operations if op.is_info), key=lambda op: op.invoke_time
        )
        self.operations = self.definite + self.indefinite
        canonical = model.canonical(
            [op.operation for op in self.operations],
            [op.result if op.is_ok else None for op in self.operations],
        )
        self.definite_calls = canonical[: len(self.definite)]
        self.indefinite_calls = canonical[len(self.definite) :]
        # Main list: entries 0..2n-1 are the events of the n definite operations;
        # 2n is the head sentinel and 2n+1 the tail sentinel.
        events: list[tuple[float, int, int]] = []
        for index, op in enumerate(self.definite):
            events.append((float(op.invoke_time), 0, index))
            events.append((op.effective_complete_time(), 1, index))
        events.sort()
        size = len(events)
        self.head = size
        self.tail = size + 1
        self.event_time = [time for time, _, _ in events] + [-math.inf, math.inf]
        self.event_is_call = [kind == 0 for _, kind, _ in events] + [False, False]
        self.event_op = [index for _, _, index in events] + [-1, -1]
        self.match = [0] * size
        call_of: dict[int, int] = {}
        for position, (_, kind, index) in enumerate(events):
            if kind == 0:
                call_of[index] = position
            else:
                self.match[call_of[index]] = position
                self.match[position] = call_of[index]
        order = [self.head, *range(size), self.tail]
        self.next = [0] * (size + 2)
        self.prev = [0] * (size + 2)
        for left, right in pairwise(order):
            self.next[left] = right
            self.prev[right] = left
        # Indeterminate operations, by invocation time, with a flag for those
        # linearized on the current path.
        k = len(self.indefinite)
        self.info_time = [float(op.invoke_time) for op in self.indefinite]
        self.info_used = [False] * k
        # Equal indeterminate operations are interchangeable: of those available
        # at a stuck point only the one invoked last is tried (any solution
        # using an earlier one can swap it for the later one). ``next_same[i]``
        # chains each to the next equal one in invocation order.
        self.next_same = [-1] * k
        last_of: dict[Any, int] = {}
        for index in range(k - 1, -1, -1):
            marker = _marker(self.indefinite_calls[index])
            self.next_same[index] = last_of.get(marker, -1)
            last_of[marker] = index
        # Deepest point reached, for the explanation.
        self.best_depth = -1
        self.best: dict[str, Any] | None = None

    def run(self) -> PartitionVerdict:
        model = self.model
        step = model.step
        definite = self.definite
        definite_calls = self.definite_calls
        nxt, prv = self.next, self.prev
        event_is_call, event_op, event_time, match = (
            self.event_is_call,
            self.event_op,
            self.event_time,
            self.match,
        )
        head, tail = self.head, self.tail
        info_used = self.info_used

        state: Any = model.init()
        linearized = 0  # bitset of definite operations linearized
        info_bits = 0  # bitset of indeterminate operations linearized
        depth = 0  # definite operations linearized
        # Lowe's memo, with dominance for indeterminate operations: a
        # configuration (definite set, state) reached with indeterminate set I
        # can do everything one reached with a superset of I can, since
        # indeterminate operations are optional and never constrain what may go
        # next. So each (definite set, state) keeps the indeterminate sets seen,
        # and a configuration is cut if one of them is a subset of its own.
        cache: dict[tuple[int, Any], list[int]] = {(0, state): [0]}
        # Frames: (is_info, entry, state before, schedule, position in it).
        stack: list[_Frame] = []
        self.steps = 0
        entry = nxt[head]
        schedule: list[tuple[int, Any, int]] | None = None
        position = 0

        while True:
            if nxt[head] == tail:
                return self._verdict(True)
            if self.steps >= self.steps_max:
                return self._verdict(None)
            if schedule is None:
                if event_is_call[entry]:
                    index = event_op[entry]
                    self.steps += 1
                    allowed, next_state = step(
                        state, definite_calls[index], definite[index].result, True
                    )
                    if allowed:
                        bits = linearized | (1 << index)
                        key = (bits, next_state)
                        seen = cache.get(key)
                        if seen is None:
                            cache[key] = [info_bits]
                        elif any(old & ~info_bits == 0 for old in seen):
                            seen = _DOMINATED
                        else:
                            seen.append(info_bits)
                        if seen is not _DOMINATED:
                            stack.append((False, entry, state, None, 0))
                            state = next_state
                            linearized = bits
                            depth += 1
                            # Lift: unlink the call and its return.
                            back = match[entry]
                            nxt[prv[entry]] = nxt[entry]
                            prv[nxt[entry]] = prv[entry]
                            nxt[prv[back]] = nxt[back]
                            prv[nxt[back]] = prv[back]
                            entry = nxt[head]
                            continue
                    entry = nxt[entry]
                    continue
                # A return: no definite candidate fits; indeterminate ones, just
                # in time.
                if depth > self.best_depth:
                    self._remember(depth, state, entry, stack)
                schedule = self._schedule(
                    state, linearized, info_bits, event_time[entry], entry, cache
                )
                position = 0
            if position < len(schedule):
                info_entry, next_state, bits = schedule[position]
                stack.append((True, info_entry, state, schedule, position))
                state = next_state
                info_bits = bits
                info_used[info_entry] = True
                schedule = None
                entry = nxt[head]
                continue
            # Nothing left to try here: backtrack.
            if not stack:
                return self._verdict(False)
            is_info, popped, state, previous, previous_position = stack.pop()
            if is_info:
                info_bits &= ~(1 << popped)
                info_used[popped] = False
                schedule = previous
                position = previous_position + 1
            else:
                linearized &= ~(1 << event_op[popped])
                depth -= 1
                back = match[popped]
                # Unlift in reverse order of the lift.
                nxt[prv[back]] = back
                prv[nxt[back]] = back
                nxt[prv[popped]] = popped
                prv[nxt[popped]] = popped
                schedule = None
                entry = nxt[popped]

    def _schedule(
        self,
        state: Any,
        linearized: int,
        info_bits: int,
        limit: float,
        stuck: int,
        cache: dict[tuple[int, Any], list[int]],
    ) -> list[tuple[int, Any, int]]:
        """The indeterminate operations worth trying at a stuck point, as
        (operation, state after it, indeterminate set after it).

        Each is applied to the current state once, here, and its configuration
        entered in the memo at once, before any is explored: so a longer chain
        of indeterminate operations that ends where a shorter one does is cut as
        dominated, whichever the search reaches first. Left out: operations
        invoked after ``limit`` (the pending return), those with an equal,
        later-invoked operation available (interchangeable; see
        ``next_same``), those that change nothing, and dominated ones. Those
        after which some definite candidate fits come first.
        """
        step = self.model.step
        calls = self.indefinite_calls
        info_time = self.info_time
        info_used = self.info_used
        next_same = self.next_same
        enabling: list[tuple[int, Any, int]] = []
        others: list[tuple[int, Any, int]] = []
        for index in range(len(calls)):
            if info_time[index] > limit:
                break
            if info_used[index]:
                continue
            later = next_same[index]
            while later >= 0 and info_time[later] <= limit and info_used[later]:
                later = next_same[later]
            if later >= 0 and info_time[later] <= limit:
                continue
            self.steps += 1
            allowed, next_state = step(state, calls[index], None, False)
            if not allowed or next_state == state:
                continue
            bits = info_bits | (1 << index)
            key = (linearized, next_state)
            seen = cache.get(key)
            if seen is None:
                cache[key] = [bits]
            elif any(old & ~bits == 0 for old in seen):
                continue
            else:
                seen.append(bits)
            item = (index, next_state, bits)
            (enabling if self._enables(next_state, stuck) else others).append(item)
        return enabling + others

    def _enables(self, state: Any, stuck: int) -> bool:
        """Whether some definite candidate (a call before ``stuck``) fits ``state``."""
        step = self.model.step
        entry = self.next[self.head]
        while entry != stuck:
            if self.event_is_call[entry]:
                index = self.event_op[entry]
                self.steps += 1
                if step(state, self.definite_calls[index], self.definite[index].result, True)[0]:
                    return True
            entry = self.next[entry]
        return False

    def _remember(self, depth: int, state: Any, stuck: int, stack: list[_Frame]) -> None:
        self.best_depth = depth
        self.best = {
            "state": state,
            "stuck": stuck,
            "frames": [(frame[0], frame[1]) for frame in stack[-EXPLANATION_TAIL:]],
            "linearized_total": len(stack),
        }

    def _verdict(self, linearizable: bool | None) -> PartitionVerdict:
        explanation = None
        if linearizable is False:
            explanation = self._explain()
        return PartitionVerdict(
            partition=self.partition,
            linearizable=linearizable,
            operations=len(self.operations),
            steps=self.steps,
            explanation=explanation,
        )

    def _explain(self) -> dict[str, Any]:
        best = self.best
        if best is None:  # pragma: no cover - a failing search always hits a return
            return {}
        stuck_op = self.definite[self.event_op[best["stuck"]]]
        stuck_time = stuck_op.effective_complete_time()
        linearized = [
            self.indefinite[entry] if is_info else self.definite[self.event_op[entry]]
            for is_info, entry in best["frames"]
        ]
        linearized_ids = {op.op_id for op in linearized}
        # Candidates at the stuck point: operations invoked before the stuck
        # operation completed and not linearized on the best path. Concurrent
        # with the stuck operation, they are the ones a reader must look at.
        candidates = [
            op
            for op in self.operations
            if op.invoke_time <= stuck_time
            and op.effective_complete_time() >= stuck_op.invoke_time
            and op.op_id not in linearized_ids
            and op.op_id != stuck_op.op_id
        ]
        candidates.sort(key=lambda op: op.invoke_time)
        return {
            "partition": self.partition,
            "operations": len(self.operations),
            "linearized_before_stuck": best["linearized_total"],
            "state_at_stuck": _plain(best["state"]),
            "stuck_operation": stuck_op.describe(),
            "last_linearized": [op.describe() for op in linearized],
            "concurrent_candidates": [op.describe() for op in candidates[:16]],
            "summary": (
                f"after linearizing {best['linearized_total']} of {len(self.operations)} "
                f"operations (state {_plain(best['state'])!r}), nothing could be "
                f"linearized before {stuck_op.describe()} completed"
            ),
        }


class _JitSearch:
    """Lowe's just-in-time linearization, breadth first over the history.

    Events are read in time order while keeping *every* configuration the
    history so far allows: a model state and the set of pending operations
    already linearized. A call adds its operation to the pending set. At the
    return of a definite operation ``o``, each configuration that has not yet
    linearized ``o`` must do so now, possibly after linearizing other pending
    operations first (the closure, explored breadth first so short chains come
    before long ones); configurations that cannot are dropped. Indeterminate
    operations never return, so they stay pending and optional.

    Memory is the number of configurations, kept small by the dominance rule of
    ``_Search`` (same state and definite set, fewer indeterminate operations
    used, wins) and by the canonical, interchangeable indeterminate operations.
    When no configuration survives a return the history is not linearizable,
    and that return is exactly where: the search never looks past it, so a bad
    history is rejected in time linear in its length up to the violation. This
    complements the depth-first ``_Search``, which is fastest on good
    histories but must exhaust every alternative before rejecting a bad one.
    """

    def __init__(
        self, partition: Hashable, operations: list[Operation], model: Model, steps_max: int
    ) -> None:
        self.partition = partition
        self.model = model
        self.steps_max = steps_max
        self.steps = 0
        self.definite = [op for op in operations if op.is_ok]
        self.indefinite = sorted(
            (op for op in operations if op.is_info), key=lambda op: op.invoke_time
        )
        self.operations = self.definite + self.indefinite
        self.calls = model.canonical(
            [op.operation for op in self.operations],
            [op.result if op.is_ok else None for op in self.operations],
        )
        count = len(self.definite)
        self.first_info = count
        # Read-only definite operations: a configuration that can linearize one
        # now does (see ``_saturate``).
        self.read_mask = 0
        for index in range(count):
            if model.is_read_only(self.calls[index]):
                self.read_mask |= 1 << index
        # Interchangeable indeterminate operations: the next equal one by
        # invocation (see ``_Search``).
        self.next_same = [-1] * len(self.operations)
        last_of: dict[Any, int] = {}
        for index in range(len(self.operations) - 1, count - 1, -1):
            marker = _marker(self.calls[index])
            self.next_same[index] = last_of.get(marker, -1)
            last_of[marker] = index
        events: list[tuple[float, int, int]] = []
        for index, op in enumerate(self.operations):
            events.append((float(op.invoke_time), 0, index))
            if op.is_ok:
                events.append((op.effective_complete_time(), 1, index))
        events.sort()
        self.events = events
        self.explanation: dict[str, Any] | None = None

    def run(self) -> PartitionVerdict:
        initial = self.model.init()
        # Configurations: (state, definite bits) -> list of indeterminate bit sets.
        configurations: dict[tuple[Any, int], list[int]] = {(initial, 0): [0]}
        pending = 0
        completed: list[int] = []
        for _, kind, index in self.events:
            if kind == 0:
                pending |= 1 << index
                if self.read_mask >> index & 1:
                    configurations = self._saturate_all(configurations, index)
                continue
            pending &= ~(1 << index)
            survivors = self._return(configurations, pending, index)
            if survivors is None:
                return self._verdict(None)
            if not survivors:
                self._explain(configurations, pending, index, completed)
                return self._verdict(False)
            configurations = survivors
            completed.append(index)
        return self._verdict(True)

    def _return(
        self,
        configurations: dict[tuple[Any, int], list[int]],
        pending: int,
        index: int,
    ) -> dict[tuple[Any, int], list[int]] | None:
        """Configurations after operation ``index`` returns (None: out of steps).

        ``pending`` no longer holds ``index``: a chain before it never repeats it."""
        bit = 1 << index
        survivors: dict[tuple[Any, int], list[int]] = {}
        for (state, definite_bits), info_sets in configurations.items():
            for info_bits in info_sets:
                if definite_bits & bit:
                    # Already linearized; configurations are saturated (pending
                    # reads that fit their state are linearized), so no change.
                    _add(survivors, (state, definite_bits & ~bit), info_bits)
                    continue
                if not self._closure(state, definite_bits, info_bits, pending, index, survivors):
                    return None
        return survivors

    def _closure(
        self,
        state: Any,
        definite_bits: int,
        info_bits: int,
        pending: int,
        index: int,
        survivors: dict[tuple[Any, int], list[int]],
    ) -> bool:
        """From one configuration, every way to linearize ``index`` now: after
        any chain of other pending operations (breadth first). Adds the results
        to ``survivors``; False when the step budget ran out."""
        step = self.model.step
        calls = self.calls
        operations = self.operations
        target = operations[index]
        seen: dict[tuple[Any, int], list[int]] = {(state, definite_bits): [info_bits]}
        queue = deque([(state, definite_bits, info_bits)])
        while queue:
            current, current_definite, current_info = queue.popleft()
            self.steps += 1
            if self.steps > self.steps_max:
                return False
            allowed, after = step(current, calls[index], target.result, True)
            if allowed:
                saturated = self._saturate(after, current_definite, pending)
                _add(survivors, (after, saturated), current_info)
            linearized = current_definite | current_info
            # Pending reads are never candidates: those that fit are linearized.
            candidates = pending & ~linearized & ~self.read_mask
            while candidates:
                low = candidates & -candidates
                candidates ^= low
                other = low.bit_length() - 1
                is_info = other >= self.first_info
                if is_info and self._has_later_equal(other, pending, linearized):
                    continue
                self.steps += 1
                op = operations[other]
                allowed, after = step(
                    current, calls[other], op.result if not is_info else None, not is_info
                )
                if not allowed or (is_info and after == current):
                    continue
                next_definite = current_definite if is_info else current_definite | low
                next_definite = self._saturate(after, next_definite, pending)
                next_info = current_info | low if is_info else current_info
                if _add(seen, (after, next_definite), next_info):
                    queue.append((after, next_definite, next_info))
        return True

    def _saturate(self, state: Any, definite_bits: int, pending: int) -> int:
        """Linearize every pending read that fits ``state``. A configuration that
        has done so dominates one that has not: a read changes nothing, and
        doing it now only removes a constraint on what comes later."""
        reads = pending & self.read_mask & ~definite_bits
        while reads:
            low = reads & -reads
            reads ^= low
            index = low.bit_length() - 1
            self.steps += 1
            if self.model.step(state, self.calls[index], self.operations[index].result, True)[0]:
                definite_bits |= low
        return definite_bits

    def _saturate_all(
        self, configurations: dict[tuple[Any, int], list[int]], index: int
    ) -> dict[tuple[Any, int], list[int]]:
        """Configurations after the read ``index`` is invoked (see ``_saturate``)."""
        saturated: dict[tuple[Any, int], list[int]] = {}
        for (state, definite_bits), info_sets in configurations.items():
            key = (state, self._saturate(state, definite_bits, 1 << index))
            for info_bits in info_sets:
                _add(saturated, key, info_bits)
        return saturated

    def _has_later_equal(self, index: int, pending: int, linearized: int) -> bool:
        later = self.next_same[index]
        while later >= 0:
            if pending >> later & 1:
                if not linearized >> later & 1:
                    return True
            else:
                return False  # invoked after now: not available
            later = self.next_same[later]
        return False

    def _explain(
        self,
        configurations: dict[tuple[Any, int], list[int]],
        pending: int,
        index: int,
        completed: list[int],
    ) -> None:
        stuck = self.operations[index]
        states = sorted({repr(_plain(state)) for state, _ in configurations})
        concurrent = [
            self.operations[other].describe()
            for other in range(len(self.operations))
            if pending >> other & 1 and other != index
        ]
        self.explanation = {
            "partition": self.partition,
            "operations": len(self.operations),
            "stuck_operation": stuck.describe(),
            "completed_before_stuck": len(completed),
            "possible_states_before": states[:EXPLANATION_TAIL],
            "last_completed": [
                self.operations[other].describe() for other in completed[-EXPLANATION_TAIL:]
            ],
            "concurrent_candidates": concurrent[:16],
            "summary": (
                f"after {len(completed)} operations completed, the state could be one of "
                f"{', '.join(states[:EXPLANATION_TAIL])}; no order of the pending "
                f"operations lets {stuck.describe()} return what it did"
            ),
        }

    def _verdict(self, linearizable: bool | None) -> PartitionVerdict:
        return PartitionVerdict(
            partition=self.partition,
            linearizable=linearizable,
            operations=len(self.operations),
            steps=self.steps,
            explanation=self.explanation if linearizable is False else None,
        )


def _add(table: dict[tuple[Any, int], list[int]], key: tuple[Any, int], info_bits: int) -> bool:
    """Enter a configuration unless one with a subset of its indeterminate
    operations is there; drop those it dominates. True if it was entered."""
    existing = table.get(key)
    if existing is None:
        table[key] = [info_bits]
        return True
    for old in existing:
        if old & ~info_bits == 0:
            return False
    existing[:] = [old for old in existing if info_bits & ~old != 0]
    existing.append(info_bits)
    return True


def _violation(model: Model, verdict: PartitionVerdict) -> Violation:
    explanation = verdict.explanation or {}
    message = (
        f"{model.name} partition {verdict.partition!r} is not linearizable: "
        f"{explanation.get('summary', 'no linearization exists')}"
    )
    return Violation(
        checker=CHECKER,
        kind="not-linearizable",
        message=message,
        details=explanation,
    )


def _marker(operation: tuple[Any, ...]) -> Any:
    try:
        hash(operation)
    except TypeError:
        return repr(operation)
    return operation


def _plain(value: Any) -> Any:
    """A value as a report can carry it (JSON scalars and lists, else its repr)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return repr(value)
