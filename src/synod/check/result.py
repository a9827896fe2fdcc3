"""What every checker returns: a ``CheckResult`` holding ``Violation`` records.

A checker never raises on a bad history: it *reports* it. A simulation scenario
collects the results of all its checkers, merges them with ``CheckResult.merge``
and fails the run (printing the seed) when the merged result is not ``ok``.

Three outcomes are kept apart, because they mean different things to whoever
reads a failing run:

* ``violations``: the checker proved something is wrong (a history that is not
  linearizable, a dependency cycle, two values chosen for one slot);
* ``inconclusive``: the checker gave up before deciding (a search budget ran out);
  such a run is not a pass, and the reason says which budget to raise;
* neither: the history passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One thing a checker found wrong.

    ``checker`` names the checker ("linearizability", "serializability",
    "invariant:single-value-per-slot", ...); ``kind`` is a short machine-readable
    class ("not-linearizable", "G1c", "lost-update", ...) that tests and reports
    can match on; ``message`` is one human sentence; ``details`` carries the
    evidence (the operations or transactions involved), JSON-friendly values only.
    """

    checker: str
    kind: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"[{self.checker}] {self.kind}: {self.message}"


class CheckFailed(AssertionError):
    """Raised by ``CheckResult.raise_if_failed``; its text is the full report."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """The verdict of one or more checkers on one run.

    ``statistics`` holds counters the checker chose to report (operations checked,
    search steps, ...); after ``merge`` each key is prefixed with its checker name.
    """

    checker: str
    violations: tuple[Violation, ...] = ()
    inconclusive: tuple[str, ...] = ()
    statistics: Mapping[str, int | float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing was violated and every checker reached a verdict."""
        return not self.violations and not self.inconclusive

    @property
    def kinds(self) -> frozenset[str]:
        """The classes of the violations found (``Violation.kind``)."""
        return frozenset(violation.kind for violation in self.violations)

    @staticmethod
    def passed(checker: str, statistics: Mapping[str, int | float] | None = None) -> CheckResult:
        return CheckResult(checker=checker, statistics=dict(statistics or {}))

    @staticmethod
    def from_violations(
        checker: str,
        messages: Iterable[str],
        *,
        kind: str = "violation",
    ) -> CheckResult:
        """Wrap the violation strings of an invariant helper into a result."""
        violations = tuple(
            Violation(checker=checker, kind=kind, message=message) for message in messages
        )
        return CheckResult(checker=checker, violations=violations)

    @staticmethod
    def merge(results: Iterable[CheckResult], *, checker: str = "combined") -> CheckResult:
        """One result holding every violation and inconclusive reason of ``results``."""
        violations: list[Violation] = []
        inconclusive: list[str] = []
        statistics: dict[str, int | float] = {}
        for result in results:
            violations.extend(result.violations)
            inconclusive.extend(f"[{result.checker}] {reason}" for reason in result.inconclusive)
            for key, value in result.statistics.items():
                statistics[f"{result.checker}.{key}"] = value
        return CheckResult(
            checker=checker,
            violations=tuple(violations),
            inconclusive=tuple(inconclusive),
            statistics=statistics,
        )

    def report(self, *, details: bool = True) -> str:
        """A multi-line human report (what a failing simulation prints)."""
        if self.ok:
            return f"{self.checker}: ok"
        lines = [
            f"{self.checker}: {len(self.violations)} violation(s), "
            f"{len(self.inconclusive)} inconclusive"
        ]
        for violation in self.violations:
            lines.append(f"  {violation}")
            if details:
                for key, value in violation.details.items():
                    lines.extend(_indent_value(key, value))
        lines.extend(f"  inconclusive: {reason}" for reason in self.inconclusive)
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise ``CheckFailed`` with the report unless the result is ``ok``."""
        if not self.ok:
            raise CheckFailed(self.report())


def _indent_value(key: str, value: Any) -> list[str]:
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return [f"      {key}:"] + [f"        {item}" for item in value]
    return [f"      {key}: {value}"]
