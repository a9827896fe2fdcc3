"""Measurements of SWIM + Lifeguard against the papers' claims, on the lab pump.

Theory of operation
-------------------
Each function builds a ``GossipLab`` cluster from a seed, runs it in virtual
time and returns a frozen figure. Large clusters start converged (as from a
membership snapshot), which skips the O(n^2) join storm that is not what these
figures are about. Figures (SWIM section 5, Lifeguard section 5):

* ``spread``: one user event sent by one member; virtual time until every member
  delivered it, in gossip rounds (expect O(log n));
* ``detection``: one member crashes; time to the first suspicion, the first
  failure verdict and the last member's verdict;
* ``cost``: datagrams and bytes each member sends per probe period at steady
  state (expect constant in n); push-pull state exchanges are counted apart,
  since their size grows with n (their period is stretched by log n);
* ``false_failures``: failure verdicts about live members under datagram loss,
  slowed members (messages reach them late) or stalled members (paused), with
  Lifeguard on and off.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from synod.core.ids import NodeId
from synod.gossip.checks import EventRecorder
from synod.gossip.config import GossipConfig
from synod.gossip.lab import GossipLab, NetworkModel
from synod.gossip.messages import PushPull, PushPullReply
from synod.gossip.view import EventKind, MemberEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleFigure:
    members: int
    spread_ms: float  # a user event reaches every member
    spread_rounds: float  # ... in gossip intervals
    first_suspect_ms: float  # crash to the first suspicion
    first_failed_ms: float  # crash to the first failure verdict
    all_failed_ms: float  # crash to the last live member's verdict
    datagrams_per_member_period: float  # steady state, push-pull excluded
    bytes_per_member_period: float
    push_pull_bytes_per_member_period: float  # two full tables per stretched period


@dataclass(frozen=True, slots=True, kw_only=True)
class FalseFailureFigure:
    members: int
    condition: str
    lifeguard: bool
    duration_ms: float
    false_failures: int  # FAILED verdicts about live members, over all observers
    members_wrongly_failed: int  # distinct live members someone declared failed
    suspicions: int


def _nodes(count: int) -> list[NodeId]:
    return [NodeId(f"m{i:05d}") for i in range(count)]


class _FirstTimes:
    """Listener: first time of each (kind, subject), and per-subject verdict times."""

    def __init__(self) -> None:
        self.first: dict[tuple[EventKind, NodeId], float] = {}
        self.failed: dict[NodeId, list[float]] = {}
        self.user_deliveries: dict[str, int] = {}

    def __call__(self, observer: NodeId, event: MemberEvent) -> None:
        self.first.setdefault((event.kind, event.node), event.at_ms)
        if event.kind is EventKind.FAILED:
            self.failed.setdefault(event.node, []).append(event.at_ms)
        elif event.kind is EventKind.USER:
            self.user_deliveries[event.name] = self.user_deliveries.get(event.name, 0) + 1


def measure_scale(members: int, *, seed: int = 1, config: GossipConfig | None = None,
                  steady_window_ms: float = 5000.0) -> ScaleFigure:
    """Dissemination, detection and per-member cost for one cluster size."""
    config = config if config is not None else GossipConfig.lan()
    lab = GossipLab(seed=seed, config=config, check_invariants=False, measure_bytes=True)
    times = _FirstTimes()
    lab.listeners.append(times)
    nodes = _nodes(members)
    lab.start_converged(nodes)
    push_pull_bytes = 0
    original_send = lab._send

    def counting_send(source: NodeId, to: NodeId, message: object) -> None:
        nonlocal push_pull_bytes
        if isinstance(message, PushPull | PushPullReply):
            push_pull_bytes += 1  # counted as exchanges; sized below
        original_send(source, to, message)  # type: ignore[arg-type]

    lab._send = counting_send  # type: ignore[method-assign]

    # Steady state: after everyone's own start broadcast has run out.
    lab.run_until(3000.0)
    sent_before = sum(lab.messages_sent.values())
    bytes_before = sum(lab.bytes_sent.values())
    exchanges_before = push_pull_bytes
    lab.run_until(3000.0 + steady_window_ms)
    periods = steady_window_ms / config.probe_interval_ms
    exchanges = push_pull_bytes - exchanges_before
    datagrams = (sum(lab.messages_sent.values()) - sent_before - exchanges) / members / periods
    byte_count = sum(lab.bytes_sent.values()) - bytes_before
    # A push-pull message carries ~one row per member: price it from one encoding.
    row_bytes = _push_pull_bytes(lab, nodes[0])
    datagram_bytes = (byte_count - exchanges * row_bytes) / members / periods
    scale = 1 if members <= 32 else math.ceil(math.log2(members) - math.log2(32)) + 1
    push_pull_per_period = (2 * row_bytes / (config.push_pull_interval_ms * scale)
                            * config.probe_interval_ms)

    # Dissemination of one user event.
    start = lab.now_ms
    lab.do(nodes[0], lambda m: m.send_user_event(lab.now_ms, "measure"))
    lab.run_until(start + 60_000.0, stop=lambda: times.user_deliveries.get("measure", 0) >= members)
    spread_ms = lab.now_ms - start

    # Detection of one crash.
    lab.run_for(2000.0)
    victim = nodes[members // 2]
    crash_ms = lab.now_ms
    lab.crash(victim)
    lab.run_until(crash_ms + 120_000.0,
                  stop=lambda: len(times.failed.get(victim, ())) >= members - 1)
    verdicts = times.failed.get(victim, [])
    return ScaleFigure(
        members=members, spread_ms=spread_ms, spread_rounds=spread_ms / config.gossip_interval_ms,
        first_suspect_ms=times.first.get((EventKind.SUSPECT, victim), math.nan) - crash_ms,
        first_failed_ms=(min(verdicts) - crash_ms) if verdicts else math.nan,
        all_failed_ms=(max(verdicts) - crash_ms) if len(verdicts) >= members - 1 else math.nan,
        datagrams_per_member_period=datagrams, bytes_per_member_period=datagram_bytes,
        push_pull_bytes_per_member_period=push_pull_per_period)


def _push_pull_bytes(lab: GossipLab, node: NodeId) -> int:
    from synod.codec.registry import encode

    member = lab.members[node]
    return len(encode(PushPull(join=False, members=member._state_rows())))


def measure_false_failures(members: int, condition: str, *, lifeguard: bool, seed: int = 1,
                           duration_ms: float = 120_000.0, affected: int = 5,
                           config: GossipConfig | None = None) -> FalseFailureFigure:
    """False failure verdicts under ``condition``: ``loss10`` (10% datagram loss),
    ``slow`` (``affected`` members get every message 800 ms late), ``stall2`` /
    ``stall5`` (``affected`` members pause for 2 s / 5 s, once every 20 s)."""
    base = config if config is not None else GossipConfig.lan()
    config = dataclasses.replace(base, lifeguard=lifeguard)
    loss = 0.1 if condition == "loss10" else 0.0
    lab = GossipLab(seed=seed, config=config, network=NetworkModel(loss=loss),
                    check_invariants=False)
    recorder = EventRecorder(record_joined=False)
    lab.listeners.append(recorder)
    nodes = _nodes(members)
    lab.start_converged(nodes)
    victims = nodes[1:1 + affected]
    if condition == "slow":
        for node in victims:
            lab.slow(node, 800.0)
        lab.run_until(duration_ms)
    elif condition in ("stall2", "stall5"):
        pause_ms = 2000.0 if condition == "stall2" else 5000.0
        t = 5000.0
        while t < duration_ms:
            lab.run_until(t)
            for node in victims:
                lab.pause(node, pause_ms)
            t += 20_000.0
        lab.run_until(duration_ms)
    elif condition == "loss10":
        lab.run_until(duration_ms)
    else:
        raise ValueError(f"unknown condition {condition!r}")
    false = [(t, o, s) for t, o, s in recorder.failed_log]  # nobody crashed: all are false
    return FalseFailureFigure(
        members=members, condition=condition, lifeguard=lifeguard, duration_ms=duration_ms,
        false_failures=len(false), members_wrongly_failed=len({s for _, _, s in false}),
        suspicions=recorder.counts.get("suspect", 0))
