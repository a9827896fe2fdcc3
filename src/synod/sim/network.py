"""The simulated network: latency, loss, duplication, partitions, clogging.

Theory of operation
-------------------
``Network.route`` decides, when a node sends, what becomes of the message: it is
dropped (with a reason, counted) or delivered once or twice, each copy at its own
time. Latency is ``latency_ms_base`` plus an exponential tail of mean
``latency_ms_tail_mean``, capped at ``latency_ms_max``; independent latencies are
what reorder messages. Faults are *time-stamped state*, not events, so overlapping
faults compose without bookkeeping:

* a cut link ``(source, destination)`` drops messages until its ``until`` time; a
  symmetric partition is the cuts both ways between two sides, a one-way
  partition is a cut one way only. A cut is checked at send time AND at delivery
  time, so a partition also kills messages already in flight;
* a clogged node (every message it sends or receives) or clogged link holds
  messages until the clog ends, then lets them through with fresh latency;
* a loss burst raises the loss probability until it ends.

``repair()`` (the healing phase) removes every fault at once. All randomness comes
from one generator derived from the run's seed, so routing replays exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from synod.sim.config import SimConfig

Link = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Route:
    """The fate of one send: ``drop_reason`` set, or delivery times (1 or 2)."""

    drop_reason: str = ""
    deliver_at_ms: tuple[float, ...] = ()


class Network:
    def __init__(self, config: SimConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._cut_until: dict[Link, float] = {}
        self._node_clog_until: dict[str, float] = {}
        self._link_clog_until: dict[Link, float] = {}
        self._loss_burst_until = -1.0
        self._loss_burst_probability = 0.0

    # ------------------------------------------------------------ faults

    def cut(self, source: str, destination: str, until_ms: float) -> None:
        """Drop messages from ``source`` to ``destination`` until ``until_ms``."""
        link = (source, destination)
        self._cut_until[link] = max(self._cut_until.get(link, -1.0), until_ms)

    def partition(self, side_a: list[str], side_b: list[str], until_ms: float) -> None:
        """Cut every link between the two sides, both ways."""
        for a in side_a:
            for b in side_b:
                self.cut(a, b, until_ms)
                self.cut(b, a, until_ms)

    def clog_node(self, node: str, until_ms: float) -> None:
        """Hold every message ``node`` sends or receives until ``until_ms``."""
        self._node_clog_until[node] = max(self._node_clog_until.get(node, -1.0), until_ms)

    def clog_link(self, source: str, destination: str, until_ms: float) -> None:
        """Hold messages from ``source`` to ``destination`` until ``until_ms``."""
        link = (source, destination)
        self._link_clog_until[link] = max(self._link_clog_until.get(link, -1.0), until_ms)

    def loss_burst(self, probability: float, until_ms: float) -> None:
        """Drop messages with ``probability`` (instead of the base rate) until ``until_ms``."""
        self._loss_burst_until = until_ms
        self._loss_burst_probability = probability

    def repair(self) -> None:
        """Remove every partition, clog and loss burst (the healing phase)."""
        self._cut_until.clear()
        self._node_clog_until.clear()
        self._link_clog_until.clear()
        self._loss_burst_until = -1.0

    # ------------------------------------------------------------ queries

    def is_cut(self, source: str, destination: str, now_ms: float) -> bool:
        return self._cut_until.get((source, destination), -1.0) > now_ms

    def is_healthy(self, a: str, b: str, now_ms: float) -> bool:
        """No fault on the link between ``a`` and ``b`` now, either way: no cut,
        no clog, no loss burst (the base loss rate and latency still apply)."""
        return (self._loss_burst_until <= now_ms
                and not self.is_cut(a, b, now_ms) and not self.is_cut(b, a, now_ms)
                and self._clog_end_ms(a, b, now_ms) <= now_ms
                and self._clog_end_ms(b, a, now_ms) <= now_ms)

    def _clog_end_ms(self, source: str, destination: str, now_ms: float) -> float:
        end = max(
            self._node_clog_until.get(source, -1.0),
            self._node_clog_until.get(destination, -1.0),
            self._link_clog_until.get((source, destination), -1.0),
        )
        return end if end > now_ms else now_ms

    def _latency_ms(self) -> float:
        config = self._config
        tail = self._rng.expovariate(1.0 / config.latency_ms_tail_mean) if config.latency_ms_tail_mean > 0 else 0.0
        return min(config.latency_ms_base + tail, config.latency_ms_max)

    def route(self, source: str, destination: str, now_ms: float) -> Route:
        """Decide the fate of one message sent now."""
        if self.is_cut(source, destination, now_ms):
            return Route(drop_reason="partition")
        loss = self._config.loss_probability
        if self._loss_burst_until > now_ms:
            loss = max(loss, self._loss_burst_probability)
        if self._rng.random() < loss:
            return Route(drop_reason="loss")
        start_ms = self._clog_end_ms(source, destination, now_ms)
        copies = 2 if self._rng.random() < self._config.duplicate_probability else 1
        return Route(deliver_at_ms=tuple(start_ms + self._latency_ms() for _ in range(copies)))
