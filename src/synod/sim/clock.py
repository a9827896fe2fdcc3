"""Per-node clocks with skew and drift.

A node's core never sees true virtual time: it sees ``offset_ms + t * rate``, where
``offset_ms`` is drawn from ``[0, clock_skew_ms_max]`` and ``rate`` from
``1 +- clock_drift_ppm_max / 1e6``. The reading is strictly increasing in ``t``
(``rate > 0``), survives restarts (a clock is hardware, not process state), and
stays within ``clock_skew_ms_max + t * drift_max`` of true time. Timers are armed
in local milliseconds, so a node whose clock runs fast sees its timers fire early
in true time, as on a real machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeClock:
    """A linear clock: ``local(t) = offset_ms + t * rate``."""

    offset_ms: float = 0.0
    rate: float = 1.0

    def __post_init__(self) -> None:
        if self.rate <= 0.0:
            raise ValueError(f"clock rate must be > 0, got {self.rate}")

    @classmethod
    def draw(cls, rng: random.Random, skew_ms_max: float, drift_ppm_max: float) -> NodeClock:
        offset_ms = rng.uniform(0.0, skew_ms_max) if skew_ms_max > 0 else 0.0
        drift = rng.uniform(-drift_ppm_max, drift_ppm_max) / 1e6 if drift_ppm_max > 0 else 0.0
        return cls(offset_ms=offset_ms, rate=1.0 + drift)

    def local_ms(self, true_ms: float) -> float:
        """What this node's clock reads at true virtual time ``true_ms``."""
        return self.offset_ms + true_ms * self.rate

    def true_delay_ms(self, local_delay_ms: float) -> float:
        """How much true time passes while this clock advances ``local_delay_ms``."""
        return local_delay_ms / self.rate
