"""Lifeguard's local health awareness (the "local health multiplier", LHM).

Theory of operation
-------------------
A member that is itself slow (an overloaded CPU, a stalled process, a lossy
NIC) misses acks and wrongly suspects healthy members. Lifeguard (section 4.1)
lets a member notice its own trouble and slow down: a score in
``[0, max_multiplier)`` rises when

* a probe fails and fewer nacks than expected came back (the nack-ers were
  reachable, so the failure may be ours), by the number of missing nacks, or by 1
  when no indirect probe was possible;
* we had to refute a suspicion of ourselves (others cannot hear us well);

and falls by 1 on every successful probe. Probe interval and probe timeout are
multiplied by ``score + 1``, so a sick member probes less often and waits
longer before it accuses anyone. memberlist's awareness.go works the same way.
"""

from __future__ import annotations

from synod.core.errors import invariant


class Awareness:
    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        invariant(max_multiplier >= 1, "awareness needs max_multiplier >= 1")
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        """Change the score by ``delta``, clamped to ``[0, max_multiplier - 1]``."""
        self.score = min(self.max_multiplier - 1, max(0, self.score + delta))

    def scale_ms(self, base_ms: float) -> float:
        """``base_ms * (score + 1)``."""
        return base_ms * (self.score + 1)
