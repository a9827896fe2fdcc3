"""Serializability checking for the list-append workload, after Elle.

Theory of operation
-------------------
Elle (Kingsbury & Alvaro, VLDB 2020) checks a transactional history without
searching over orders: it *infers* the dependencies between transactions from
what they observed, then looks for cycles. The list-append workload makes that
possible. Every key holds a list; a transaction's micro-operations are
``("append", k, v)`` and ``("r", k, observed_list)``; every appended value is
unique per key. A read then reveals the whole history of its key up to that read,
so:

* the *version order* of a key is its longest observed list, and every other
  read of the key must be a prefix of it (if not, the database showed two
  incompatible orders: anomaly ``incompatible-order``);
* from the version order and the reads, Adya's dependency edges between
  committed transactions follow:
  - ``ww`` (write-write): T1 appended the element just before T2's in a key's order;
  - ``wr`` (write-read): T2 read a list whose last element T1 appended;
  - ``rw`` (anti-dependency): T1 read a list, and T2 appended the element that
    comes right after it in the version order (T1 did not see T2's write).

A serializable history has an acyclic graph. Cycles are found per strongly
connected component (Tarjan), then a shortest cycle of each class inside it (BFS),
and classified as Adya does:

* ``G0``: a cycle of ww edges only (write cycle);
* ``G1c``: a cycle of ww and wr edges, with at least one wr;
* ``G2``: a cycle with at least one rw edge (``subclass: "G-single"`` when it has
  exactly one, Adya's G-single, the classic read skew / lost update shape).

Anomalies seen without a cycle:

* ``G1a`` (aborted read): a committed read saw a value appended by a transaction
  that failed (definitely aborted);
* ``G1b`` (intermediate read): a committed read ends at a value that is not the
  last its writer appended to that key;
* ``lost-update``: two committed transactions read the same version of a key and
  both appended to it (in any serial order one would have seen the other);
* ``incompatible-order`` / ``duplicate-elements``: reads that no single list can
  explain;
* ``garbage-read``: a read saw a value nobody appended;
* ``internal``: a transaction's read did not reflect its own earlier appends or
  reads of the same key.

Indeterminate (``info``) transactions may or may not have committed: one whose
append some committed read observed did commit and joins the graph; one whose
appends nobody observed is left out. Failed transactions are aborted. Only ok
transactions carry read results.

A committed append nobody read is placed after every version anyone read (each
read is a prefix of the key's final list, which holds it): its writer follows the
last observed writer and every reader of the key.

With ``realtime=True`` the checker also adds real-time edges (T1 completed before
T2 was invoked; Elle's frontier sweep keeps them linear in number) and so checks
*strict* serializability; a cycle that needs such an edge is reported as
``G0-realtime``, ``G1c-realtime`` or ``G2-realtime`` (by its other edges), with
``realtime: true`` in its details.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from synod.check.history import History, HistoryError, Operation
from synod.check.result import CheckResult, Violation

CHECKER = "serializability"

WW, WR, RW, RT = 1, 2, 4, 8
_EDGE_NAMES = {WW: "ww", WR: "wr", RW: "rw", RT: "rt"}

#: Bound on the breadth-first searches made per component and anomaly class.
CYCLE_SEARCHES_MAX = 256


@dataclass(slots=True)
class _Txn:
    index: int
    operation: Operation
    micro_ops: tuple[tuple[Any, ...], ...]
    #: Per key, the values this transaction appended, in order.
    appends: dict[Hashable, list[Any]] = field(default_factory=dict)

    def describe(self) -> str:
        return self.operation.describe()


@dataclass(slots=True)
class _Graph:
    """Dependency edges: ``edges[a][b]`` is a bitmask of edge types a -> b, and
    ``labels[(a, b, type)]`` the key that produced the edge (for reports)."""

    edges: dict[int, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    labels: dict[tuple[int, int, int], Any] = field(default_factory=dict)

    def add(self, source: int, target: int, kind: int, key: Any) -> None:
        if source == target:
            return
        targets = self.edges[source]
        targets[target] = targets.get(target, 0) | kind
        self.labels.setdefault((source, target, kind), key)

    def count(self) -> int:
        return sum(len(targets) for targets in self.edges.values())


def check_serializability(
    history: History | Iterable[Operation], *, realtime: bool = False
) -> CheckResult:
    """Check a list-append ``history`` (operations ``("txn", micro_ops)``).

    Returns a ``CheckResult`` with one ``Violation`` per anomaly found; its
    ``kind`` is the anomaly class (``"G0"``, ``"G1a"``, ``"G1b"``, ``"G1c"``,
    ``"G2"``, ``"lost-update"``, ``"incompatible-order"``, ...). With
    ``realtime=True`` the check is for strict serializability.
    """
    return _Checker(list(history), realtime).run()


class _Checker:
    def __init__(self, operations: list[Operation], realtime: bool) -> None:
        self.realtime = realtime
        self.violations: list[Violation] = []
        self.txns: list[_Txn] = []
        for operation in operations:
            micro_ops = _micro_ops(operation)
            txn = _Txn(index=len(self.txns), operation=operation, micro_ops=micro_ops)
            for micro in micro_ops:
                if micro[0] == "append":
                    txn.appends.setdefault(micro[1], []).append(micro[2])
            self.txns.append(txn)
        #: (key, value) -> index of the transaction that appended it.
        self.writer: dict[tuple[Any, Any], int] = {}
        for txn in self.txns:
            for key, values in txn.appends.items():
                for value in values:
                    other = self.writer.setdefault((key, value), txn.index)
                    if other != txn.index:
                        raise HistoryError(
                            f"value {value!r} appended to key {key!r} twice (#{other}, "
                            f"#{txn.index}): list-append values must be unique per key"
                        )
        self.graph = _Graph()
        self.version_order: dict[Any, tuple[Any, ...]] = {}

    def _report(self, kind: str, message: str, **details: Any) -> None:
        self.violations.append(
            Violation(checker=CHECKER, kind=kind, message=message, details=details)
        )

    def run(self) -> CheckResult:
        ok = [txn for txn in self.txns if txn.operation.is_ok]
        reads = self._reads(ok)
        self._check_internal(ok)
        ordered_keys = self._infer_version_orders(reads)
        self._check_read_values(reads)
        committed = self._committed(reads)
        self._check_lost_updates(ok, ordered_keys)
        self._build_edges(reads, committed, ordered_keys)
        if self.realtime:
            self._add_realtime_edges(committed)
        components = _strongly_connected(self.graph.edges)
        for component in components:
            self._classify_component(component)
        return CheckResult(
            checker=CHECKER,
            violations=tuple(self.violations),
            statistics={
                "transactions": len(self.txns),
                "committed": len(committed),
                "edges": self.graph.count(),
                "cyclic_components": len(components),
            },
        )

    # -- reads, orders and the anomalies they show directly -------------------

    def _reads(self, ok: list[_Txn]) -> dict[Any, list[tuple[int, tuple[Any, ...], int]]]:
        """Per key, (txn index, observed list, own appends before the read)."""
        reads: dict[Any, list[tuple[int, tuple[Any, ...], int]]] = defaultdict(list)
        for txn in ok:
            own: dict[Any, int] = defaultdict(int)
            for micro in txn.micro_ops:
                if micro[0] == "append":
                    own[micro[1]] += 1
                else:
                    reads[micro[1]].append((txn.index, micro[2], own[micro[1]]))
        return reads

    def _check_internal(self, ok: list[_Txn]) -> None:
        for txn in ok:
            # Per key: what the transaction knows the list must look like: a
            # known full list after a read, or only a known suffix before one.
            full: dict[Any, tuple[Any, ...]] = {}
            suffix: dict[Any, tuple[Any, ...]] = {}
            for micro in txn.micro_ops:
                key = micro[1]
                if micro[0] == "append":
                    if key in full:
                        full[key] = (*full[key], micro[2])
                    else:
                        suffix[key] = (*suffix.get(key, ()), micro[2])
                    continue
                observed = micro[2]
                if key in full:
                    expected_ok = observed == full[key]
                else:
                    tail = suffix.get(key, ())
                    expected_ok = not tail or observed[len(observed) - len(tail) :] == tail
                if not expected_ok:
                    self._report(
                        "internal",
                        f"transaction read {observed!r} from key {key!r}, which does not "
                        "reflect its own earlier appends or reads of that key",
                        key=key,
                        transaction=txn.describe(),
                    )
                full[key] = observed

    def _infer_version_orders(
        self, reads: dict[Any, list[tuple[int, tuple[Any, ...], int]]]
    ) -> set[Any]:
        """Longest read per key; returns the keys whose reads are all prefixes of it."""
        ordered: set[Any] = set()
        for key, observations in reads.items():
            longest_txn, longest, _ = max(observations, key=lambda item: len(item[1]))
            self.version_order[key] = longest
            consistent = True
            if len(set(longest)) != len(longest):
                consistent = False
                duplicates = sorted({v for v in longest if longest.count(v) > 1}, key=repr)
                self._report(
                    "duplicate-elements",
                    f"key {key!r} was read with duplicate elements {duplicates!r}",
                    key=key,
                    transaction=self.txns[longest_txn].describe(),
                )
            for txn_index, observed, _ in observations:
                if longest[: len(observed)] != observed:
                    consistent = False
                    self._report(
                        "incompatible-order",
                        f"key {key!r}: read {observed!r} is not a prefix of read {longest!r}",
                        key=key,
                        transactions=[
                            self.txns[txn_index].describe(),
                            self.txns[longest_txn].describe(),
                        ],
                    )
                    break
            if consistent:
                ordered.add(key)
        return ordered

    def _check_read_values(self, reads: dict[Any, list[tuple[int, tuple[Any, ...], int]]]) -> None:
        for key, observations in reads.items():
            for txn_index, observed, _ in observations:
                reader = self.txns[txn_index]
                for value in observed:
                    writer_index = self.writer.get((key, value))
                    if writer_index is None:
                        self._report(
                            "garbage-read",
                            f"key {key!r}: read saw {value!r}, which no transaction appended",
                            key=key,
                            transaction=reader.describe(),
                        )
                    elif self.txns[writer_index].operation.is_fail:
                        self._report(
                            "G1a",
                            f"key {key!r}: read saw {value!r}, appended by an aborted transaction",
                            key=key,
                            reader=reader.describe(),
                            writer=self.txns[writer_index].describe(),
                        )
                if not observed:
                    continue
                writer_index = self.writer.get((key, observed[-1]))
                if writer_index is None or writer_index == txn_index:
                    continue
                writer = self.txns[writer_index]
                if writer.appends[key][-1] != observed[-1]:
                    self._report(
                        "G1b",
                        f"key {key!r}: read ended at {observed[-1]!r}, an intermediate "
                        f"append of a transaction whose last append was "
                        f"{writer.appends[key][-1]!r}",
                        key=key,
                        reader=reader.describe(),
                        writer=writer.describe(),
                    )

    def _committed(self, reads: dict[Any, list[tuple[int, tuple[Any, ...], int]]]) -> set[int]:
        """Ok transactions, plus indeterminate ones some committed read observed."""
        committed = {txn.index for txn in self.txns if txn.operation.is_ok}
        for key, observations in reads.items():
            for _, observed, _ in observations:
                for value in observed:
                    writer_index = self.writer.get((key, value))
                    if writer_index is not None and self.txns[writer_index].operation.is_info:
                        committed.add(writer_index)
        return committed

    def _check_lost_updates(self, ok: list[_Txn], ordered_keys: set[Any]) -> None:
        # Per key, the version (observed length) each read-modify-write read.
        read_then_appended: dict[tuple[Any, int], list[_Txn]] = defaultdict(list)
        for txn in ok:
            first_read: dict[Any, int] = {}
            appended: set[Any] = set()
            for micro in txn.micro_ops:
                key = micro[1]
                if micro[0] == "r":
                    if key not in appended and key not in first_read:
                        first_read[key] = len(micro[2])
                else:
                    appended.add(key)
            for key, length in first_read.items():
                if key in appended and key in ordered_keys:
                    read_then_appended[(key, length)].append(txn)
        for (key, length), txns in read_then_appended.items():
            if len(txns) < 2:
                continue
            version = self.version_order[key][:length]
            self._report(
                "lost-update",
                f"key {key!r}: {len(txns)} committed transactions read version {version!r} "
                "and each appended to it",
                key=key,
                transactions=[txn.describe() for txn in txns],
            )

    # -- the dependency graph --------------------------------------------------

    def _build_edges(
        self,
        reads: dict[Any, list[tuple[int, tuple[Any, ...], int]]],
        committed: set[int],
        ordered_keys: set[Any],
    ) -> None:
        graph = self.graph
        for key in ordered_keys:
            order = self.version_order[key]
            writers = [self.writer.get((key, value)) for value in order]
            for before, after in pairwise(writers):
                if before in committed and after in committed:
                    assert before is not None and after is not None
                    graph.add(before, after, WW, key)
        for key, observations in reads.items():
            order = self.version_order[key]
            for reader, observed, own_before in observations:
                # What the reader saw of others: drop its own trailing appends.
                foreign = observed[: len(observed) - own_before] if own_before else observed
                if foreign:
                    writer = self.writer.get((key, foreign[-1]))
                    if writer is not None and writer in committed:
                        graph.add(writer, reader, WR, key)
                if key in ordered_keys and len(foreign) < len(order):
                    overwriter = self.writer.get((key, order[len(foreign)]))
                    if overwriter is not None and overwriter in committed:
                        graph.add(reader, overwriter, RW, key)
        self._unobserved_append_edges(reads, committed, ordered_keys)

    def _unobserved_append_edges(
        self,
        reads: dict[Any, list[tuple[int, tuple[Any, ...], int]]],
        committed: set[int],
        ordered_keys: set[Any],
    ) -> None:
        """A committed append nobody read still sits in the key's final list,
        after every version anyone read (all of which are prefixes of it). So
        its writer follows the last observed writer (ww, or a ww path) and every
        reader of the key that is not itself (rw, or an rw-then-ww path): in any
        serial order these must hold, and the path they stand for has the same
        kinds of edges, so a cycle through them is classified soundly."""
        graph = self.graph
        appenders: dict[Any, list[_Txn]] = defaultdict(list)
        for index in committed:
            txn = self.txns[index]
            for key in txn.appends:
                if key in ordered_keys:
                    appenders[key].append(txn)
        for key, txns in appenders.items():
            seen = set(self.version_order[key])
            unobserved = sorted(
                txn.index for txn in txns if any(value not in seen for value in txn.appends[key])
            )
            if not unobserved:
                continue
            order = self.version_order[key]
            last_writer = self.writer.get((key, order[-1])) if order else None
            for writer in unobserved:
                if last_writer is not None and last_writer in committed:
                    graph.add(last_writer, writer, WW, key)
                for reader, _, _ in reads[key]:
                    graph.add(reader, writer, RW, key)

    def _add_realtime_edges(self, committed: set[int]) -> None:
        """T1 -> T2 when T1 completed before T2 was invoked.

        Not every such pair gets an edge (that is quadratic): as Elle does, a sweep
        over invocations and completions keeps the *frontier*, the completed
        transactions no later-completed transaction follows; a transaction
        invoked now gets an edge from each of them. Every real-time precedence is
        then a path, and the graph grows by about the concurrency per transaction.
        """
        events: list[tuple[float, int, int]] = []
        for index in committed:
            operation = self.txns[index].operation
            events.append((float(operation.invoke_time), 0, index))
            if operation.is_ok:
                # An indeterminate transaction may have committed at any time
                # after its invocation: it precedes nothing.
                events.append((operation.effective_complete_time(), 1, index))
        # Invocations before completions at equal times: equal means concurrent.
        events.sort()
        frontier: list[int] = []
        for _, kind, index in events:
            if kind == 0:
                for earlier in frontier:
                    self.graph.add(earlier, index, RT, "realtime")
                continue
            invoked = self.txns[index].operation.invoke_time
            frontier = [
                earlier
                for earlier in frontier
                if not self.txns[earlier].operation.effective_complete_time() < invoked
            ]
            frontier.append(index)

    # -- cycles ------------------------------------------------------------------

    def _classify_component(self, component: list[int]) -> None:
        members = set(component)
        edges = self.graph.edges
        ww_only = _restrict(edges, members, WW)
        found = False
        for sub in _strongly_connected(ww_only):
            cycle = _shortest_cycle_through(ww_only, set(sub), sub[0])
            if cycle:
                self._report_cycle("G0", cycle, WW)
                found = True
                break
        if not found:
            cycle = self._cycle_using(members, WR, WW | WR)
            if cycle:
                self._report_cycle("G1c", cycle, WW | WR)
                found = True
        if not found:
            cycle = self._cycle_using(members, RW, WW | WR)
            if cycle is None:
                cycle = self._cycle_using(members, RW, WW | WR | RW)
            if cycle:
                self._report_cycle("G2", cycle, WW | WR | RW)
                found = True
        if not found and self.realtime:
            # Only real-time edges close this cycle (strict serializability).
            cycle = self._cycle_using(members, RT, WW | WR | RW | RT)
            if cycle:
                self._report_cycle("realtime", cycle, WW | WR | RW | RT)

    def _cycle_using(self, members: set[int], first: int, allowed: int) -> list[int] | None:
        """A shortest cycle that starts with an edge of type ``first`` and returns
        through edges of the ``allowed`` types (bounded number of searches)."""
        edges = self.graph.edges
        restricted = _restrict(edges, members, allowed)
        best: list[int] | None = None
        searches = 0
        for source in sorted(members):
            for target, kinds in edges.get(source, {}).items():
                if target not in members or not kinds & first:
                    continue
                path = _shortest_path(restricted, target, source)
                searches += 1
                if path is not None and (best is None or len(path) < len(best)):
                    best = [source, *path[:-1]]
                if searches >= CYCLE_SEARCHES_MAX or (best is not None and len(best) == 2):
                    return best
        return best

    def _report_cycle(self, kind: str, cycle: list[int], allowed: int) -> None:
        steps = []
        anti_dependencies = 0
        uses_realtime = False
        edges = self.graph.edges
        for position, source in enumerate(cycle):
            target = cycle[(position + 1) % len(cycle)]
            kinds = edges[source][target] & allowed
            # Name the strongest relation the edge carries.
            for edge_kind in (WW, WR, RW, RT):
                if kinds & edge_kind:
                    break
            anti_dependencies += edge_kind == RW
            uses_realtime |= edge_kind == RT
            key = self.graph.labels.get((source, target, edge_kind))
            label = _EDGE_NAMES[edge_kind] + ("" if edge_kind == RT else f" on {key!r}")
            steps.append(f"T{source} -{label}-> T{target}")
        details: dict[str, Any] = {
            "cycle": steps,
            "transactions": [f"T{index}: {self.txns[index].describe()}" for index in cycle],
        }
        if uses_realtime:
            # Elle's names: the class of the cycle's other edges, "-realtime".
            base = (
                "G2" if anti_dependencies else ("G1c" if any("-wr" in s for s in steps) else "G0")
            )
            kind = f"{base}-realtime"
            details["realtime"] = True
        if kind.startswith("G2"):
            details["subclass"] = "G-single" if anti_dependencies == 1 else "G2-item"
        self._report(
            kind,
            f"{kind} cycle of {len(cycle)} transactions: " + ", ".join(steps),
            **details,
        )


def _micro_ops(operation: Operation) -> tuple[tuple[Any, ...], ...]:
    if operation.operation[0] != "txn" or len(operation.operation) != 2:
        raise HistoryError(f"not a list-append transaction: {operation.describe()}")
    micro_ops = operation.result if operation.is_ok else operation.operation[1]
    if not isinstance(micro_ops, tuple):
        raise HistoryError(f"transaction #{operation.op_id}: micro-operations must be a list")
    for micro in micro_ops:
        if not isinstance(micro, tuple) or len(micro) != 3 or micro[0] not in ("append", "r"):
            raise HistoryError(f"transaction #{operation.op_id}: bad micro-operation {micro!r}")
        if operation.is_ok and micro[0] == "r" and not isinstance(micro[2], tuple):
            raise HistoryError(
                f"transaction #{operation.op_id}: committed read of {micro[1]!r} has no list"
            )
    return micro_ops


def _restrict(
    edges: dict[int, dict[int, int]], members: set[int], allowed: int
) -> dict[int, dict[int, int]]:
    restricted: dict[int, dict[int, int]] = {}
    for source in members:
        targets = {
            target: kinds & allowed
            for target, kinds in edges.get(source, {}).items()
            if target in members and kinds & allowed
        }
        if targets:
            restricted[source] = targets
    return restricted


def _shortest_path(edges: dict[int, dict[int, int]], source: int, target: int) -> list[int] | None:
    """Breadth-first: the nodes from ``source`` to ``target`` inclusive, or None."""
    if source == target:
        return [source]
    parent: dict[int, int] = {source: source}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        for successor in edges.get(node, {}):
            if successor in parent:
                continue
            parent[successor] = node
            if successor == target:
                path = [target]
                while path[-1] != source:
                    path.append(parent[path[-1]])
                path.reverse()
                return path
            queue.append(successor)
    return None


def _shortest_cycle_through(
    edges: dict[int, dict[int, int]], members: set[int], node: int
) -> list[int] | None:
    best: list[int] | None = None
    for successor in edges.get(node, {}):
        if successor not in members:
            continue
        path = _shortest_path(edges, successor, node)
        if path is not None and (best is None or len(path) < len(best)):
            best = [node, *path[:-1]]
    return best


def _strongly_connected(edges: dict[int, dict[int, int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative; returns only components with a cycle
    (more than one node: the graph has no self-loops)."""
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    nodes: Sequence[int] = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    for root in nodes:
        if root in index_of:
            continue
        work: list[tuple[int, Iterable[int]]] = [(root, iter(edges.get(root, {})))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index_of:
                    index_of[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(edges.get(successor, {}))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index_of[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components
