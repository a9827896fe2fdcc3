"""Invariant helpers for simulation scenarios.

Each helper takes plain data a scenario can collect from its nodes after (or
during) a run and returns a list of violation strings, empty when the invariant
holds. ``CheckResult.from_violations(name, strings)`` wraps them for reporting.
They never raise on bad data: finding it is their job.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any


def check_single_value_per_slot(chosen: Mapping[Hashable, Mapping[int, Any]]) -> list[str]:
    """At most one value chosen per slot across replicas (Paxos safety).

    ``chosen`` maps each replica to its map slot -> chosen value (what it learned,
    including from before a crash if its log kept it).
    """
    first: dict[int, tuple[Hashable, Any]] = {}
    violations: list[str] = []
    for replica in sorted(chosen, key=repr):
        for slot, value in sorted(chosen[replica].items()):
            seen = first.setdefault(slot, (replica, value))
            if seen[1] != value:
                violations.append(
                    f"slot {slot}: replica {seen[0]!r} chose {seen[1]!r} but replica "
                    f"{replica!r} chose {value!r}"
                )
    return violations


def check_prefix(recovered: Sequence[Any], appended: Sequence[Any], durable: int) -> list[str]:
    """What a log recovered after a crash is a prefix of what was appended, and
    holds at least the first ``durable`` records (those acknowledged as synced).

    Records beyond ``durable`` may or may not survive; anything else is a bug:
    a changed record, a record never appended, or a lost durable record.
    """
    violations: list[str] = []
    if not 0 <= durable <= len(appended):
        violations.append(f"durable count {durable} is outside 0..{len(appended)}")
        durable = max(0, min(durable, len(appended)))
    for index, record in enumerate(recovered):
        if index >= len(appended):
            violations.append(
                f"recovered {len(recovered)} records but only {len(appended)} were appended"
            )
            break
        if record != appended[index]:
            violations.append(
                f"record {index} recovered as {record!r}, appended as {appended[index]!r}"
            )
            break
    if len(recovered) < durable:
        violations.append(
            f"recovered {len(recovered)} records but {durable} were acknowledged durable"
        )
    return violations


def check_converged(digests: Mapping[Hashable, Any]) -> list[str]:
    """Every replica reports the same state digest (after the healing phase)."""
    groups: dict[Any, list[Hashable]] = {}
    for replica in sorted(digests, key=repr):
        groups.setdefault(digests[replica], []).append(replica)
    if len(groups) <= 1:
        return []
    described = "; ".join(
        f"{digest!r}: {', '.join(repr(replica) for replica in replicas)}"
        for digest, replicas in sorted(groups.items(), key=lambda item: -len(item[1]))
    )
    return [f"replicas did not converge: {len(groups)} distinct digests ({described})"]


def check_acknowledged_present(acknowledged: Iterable[Any], present: Iterable[Any]) -> list[str]:
    """Every acknowledged write (by its unique id) is present in the final state."""
    have = set(present)
    missing = [item for item in acknowledged if item not in have]
    if not missing:
        return []
    shown = ", ".join(repr(item) for item in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return [f"{len(missing)} acknowledged writes are missing: {shown}{more}"]


def check_conserved(
    totals: Iterable[tuple[Hashable, int | float]], expected: int | float
) -> list[str]:
    """A conserved quantity (the bank workload's total) reads ``expected`` in
    every observation; ``totals`` pairs an observation label with its sum."""
    return [
        f"observation {label!r} saw a total of {total!r}, expected {expected!r}"
        for label, total in totals
        if total != expected
    ]


def check_at_most_one_holder(holders: Mapping[Hashable, Iterable[Hashable]]) -> list[str]:
    """Mutual exclusion: each lock (or leadership term) has at most one holder.

    ``holders`` maps a lock (or a ballot/term) to everyone that believed it held
    it at the same time.
    """
    violations = []
    for lock in sorted(holders, key=repr):
        distinct = sorted(set(holders[lock]), key=repr)
        if len(distinct) > 1:
            violations.append(f"{lock!r} held by {len(distinct)} at once: {distinct!r}")
    return violations
