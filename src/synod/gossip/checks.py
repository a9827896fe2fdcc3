"""Checkers for gossip runs: what SWIM promises, stated over recorded events.

Theory of operation
-------------------
A driver (the simulator, or ``synod.gossip.lab``) feeds every member's drained
``MemberEvent``s to an ``EventRecorder``, and tells it which members really
crashed and when. The checks then state SWIM's guarantees (Das et al. section 5)
as properties that a run either has or lacks:

* **completeness**: every crashed member is eventually declared failed by every
  live member (``check_crashes_detected``);
* **timely dissemination**: once one member declares a crash, every live member
  does within a bound (``check_verdict_spread``): O(log n) gossip rounds, since
  a verdict travels by infection;
* **accuracy** (where the network gives no excuse): no live, reachable member is
  declared failed (``check_no_false_failures``);
* **monotone incarnations**: no member ever sees another's incarnation go down
  except when it (re)learns the member after a tombstone (``check_incarnations``);
* **convergence**: after the faults heal, every live member holds the same view,
  and it is the truth (``check_converged``).

Each check returns a list of violation sentences (empty: the property holds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from synod.core.ids import NodeId
from synod.gossip.messages import MemberStatus
from synod.gossip.view import EventKind, MemberEvent


@dataclass(slots=True)
class EventRecorder:
    """Everything the checks need from a run's event stream, kept compact."""

    #: subject -> observer -> time of its first FAILED verdict about subject.
    failed: dict[NodeId, dict[NodeId, float]] = field(default_factory=dict)
    #: (time, observer, subject) of every FAILED verdict, in order.
    failed_log: list[tuple[float, NodeId, NodeId]] = field(default_factory=list)
    #: subject -> number of SUSPECT events about it.
    suspected: dict[NodeId, int] = field(default_factory=dict)
    #: (observer, subject) -> last incarnation seen in an event.
    incarnations: dict[tuple[NodeId, NodeId], int] = field(default_factory=dict)
    incarnation_drops: list[str] = field(default_factory=list)
    #: event kind -> count.
    counts: dict[str, int] = field(default_factory=dict)
    #: subject -> observer -> time of the first JOINED (for convergence figures).
    joined: dict[NodeId, dict[NodeId, float]] = field(default_factory=dict)
    #: user event name -> observer -> time delivered.
    user_events: dict[str, dict[NodeId, float]] = field(default_factory=dict)
    record_joined: bool = True

    def __call__(self, observer: NodeId, event: MemberEvent, at_ms: float | None = None) -> None:
        """Record ``event`` drained from ``observer``; ``at_ms`` is the true time (the
        simulator's, not the observer's skewed clock) if the driver knows it."""
        if at_ms is not None:
            event = MemberEvent(kind=event.kind, node=event.node, incarnation=event.incarnation,
                                at_ms=at_ms, meta=event.meta, name=event.name,
                                payload=event.payload)
        kind = event.kind
        self.counts[kind.value] = self.counts.get(kind.value, 0) + 1
        subject = event.node
        if kind is EventKind.FAILED:
            self.failed.setdefault(subject, {}).setdefault(observer, event.at_ms)
            self.failed_log.append((event.at_ms, observer, subject))
        elif kind is EventKind.SUSPECT:
            self.suspected[subject] = self.suspected.get(subject, 0) + 1
        elif kind is EventKind.JOINED:
            if self.record_joined:
                self.joined.setdefault(subject, {}).setdefault(observer, event.at_ms)
        elif kind is EventKind.USER:
            self.user_events.setdefault(event.name, {}).setdefault(observer, event.at_ms)
            return
        key = (observer, subject)
        last = self.incarnations.get(key)
        if last is not None and event.incarnation < last and kind is not EventKind.JOINED:
            self.incarnation_drops.append(
                f"{observer} saw {subject}'s incarnation fall from {last} to "
                f"{event.incarnation} ({kind.value} at {event.at_ms:.0f} ms)")
        self.incarnations[key] = event.incarnation


def check_crashes_detected(views: Mapping[NodeId, Mapping[NodeId, MemberStatus | None]],
                           crashed: Iterable[NodeId], live: Iterable[NodeId]) -> list[str]:
    """Every live member holds every crashed member failed (or never knew it):
    none still believes it alive or merely suspect.

    ``views[observer][subject]`` is observer's status for subject (None: unknown)."""
    violations = []
    live = list(live)
    for subject in sorted(crashed):
        believers = [o for o in live
                     if views[o].get(subject) in (MemberStatus.ALIVE, MemberStatus.SUSPECT)]
        if believers:
            violations.append(f"{subject} crashed but {len(believers)} live member(s) never "
                              f"declared it failed, e.g. {sorted(believers)[:5]}")
    return violations


def verdict_spread_bound_ms(members: int, gossip_interval_ms: float, retransmit_mult: int,
                            probe_interval_ms: float) -> float:
    """How long a failure verdict may take to reach everyone once made: the time for
    its retransmissions, ``retransmit_mult * ceil(log10(n+1))`` gossip rounds, plus
    one more round of slack. (Piggybacking on probes only speeds it up.)"""
    del probe_interval_ms  # kept in the signature: the bound may use it in the future
    rounds = retransmit_mult * max(1, math.ceil(math.log10(members + 1)))
    return (rounds + 1) * gossip_interval_ms


def check_verdict_spread(recorder: EventRecorder, crashed: Mapping[NodeId, float],
                         live: Iterable[NodeId], bound_ms: float) -> list[str]:
    """After the first member declares a crash, every live member does within ``bound_ms``."""
    violations = []
    live = list(live)
    for subject, crash_ms in sorted(crashed.items()):
        verdicts = {o: t for o, t in recorder.failed.get(subject, {}).items() if t >= crash_ms}
        if not verdicts:
            continue
        first = min(verdicts.values())
        late = [o for o in live if o != subject and verdicts.get(o, math.inf) > first + bound_ms]
        if late:
            worst = max(verdicts.get(o, math.inf) for o in late) - first
            violations.append(
                f"the failure of {subject} took {worst:.0f} ms to spread from the first verdict "
                f"to {len(late)} member(s) (bound {bound_ms:.0f} ms), e.g. {sorted(late)[:5]}")
    return violations


def check_no_false_failures(recorder: EventRecorder,
                            was_down: Callable[[NodeId, float], bool]) -> list[str]:
    """No member is declared failed while it was up (``was_down(node, t)`` is False)."""
    violations = []
    for at_ms, observer, subject in recorder.failed_log:
        if not was_down(subject, at_ms):
            violations.append(f"{observer} declared the live member {subject} failed at "
                              f"{at_ms:.0f} ms")
    return violations


def check_incarnations(recorder: EventRecorder) -> list[str]:
    return list(recorder.incarnation_drops)


def check_converged(views: Mapping[NodeId, Mapping[NodeId, MemberStatus | None]],
                    live: Iterable[NodeId]) -> list[str]:
    """Every live member sees exactly the live members as alive (and nobody as suspect).

    ``views[observer][subject]`` is observer's status for subject (None: unknown)."""
    live = sorted(live)
    live_set = set(live)
    violations = []
    for observer in live:
        view = views[observer]
        wrong = [s for s in live if view.get(s) is not MemberStatus.ALIVE]
        ghosts = [s for s, status in view.items()
                  if s not in live_set and status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)]
        if wrong or ghosts:
            violations.append(f"{observer} has not converged: live members not alive in its "
                              f"view {wrong[:5]}, departed members still alive {ghosts[:5]}")
    return violations
