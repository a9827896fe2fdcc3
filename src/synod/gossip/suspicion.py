"""Lifeguard's dynamic suspicion timeout.

Theory of operation
-------------------
SWIM declares a suspect dead after a fixed timeout. Lifeguard (Dadgar et al.
2017, section 4.2, "Dynamic Suspicion Timeouts") starts the timeout at a maximum
and lowers it, logarithmically, as *independent* members confirm the suspicion,
down to a minimum once ``k`` confirmations arrived. A suspicion with many
accusers is almost surely real and is settled quickly; a lone accuser (which may
itself be the slow one) gives the suspect time to refute. memberlist's
suspicion.go computes, with ``c`` confirmations so far:

    timeout(c) = max(min_ms, max_ms - (max_ms - min_ms) * log(c + 1) / log(k + 1))

and the base values, for ``n`` members and probe interval ``T``:

    min_ms = max(floor_ms, suspicion_mult * max(1, log10(n)) * T)
    max_ms = suspicion_max_timeout_mult * min_ms
    k      = suspicion_mult - 2, or 0 when fewer than k + 2 members exist

``floor_ms`` (``suspicion_timeout_min_floor_ms``, ours, not memberlist's) keeps
the minimum above the longest stall a live member must survive: below 10 members
``max(1, log10 n)`` is 1, so the formula alone gives ``suspicion_mult`` probe
intervals however small the multiplier, and a smaller multiplier (faster
detection in larger clusters) would declare a member stalled for 5 s failed.

Confirmations are counted once per member, never from the first accuser, and at
most ``k`` of them. With ``k == 0`` (or Lifeguard off) the timeout is ``min_ms``.
"""

from __future__ import annotations

import math

from synod.core.ids import NodeId


def suspicion_timeout_min_ms(suspicion_mult: int, members: int, probe_interval_ms: float,
                             floor_ms: float = 0.0) -> float:
    """``max(floor_ms, suspicion_mult * max(1, log10(n)) * probe_interval_ms)``."""
    node_scale = max(1.0, math.log10(max(1.0, float(members))))
    return max(floor_ms, suspicion_mult * node_scale * probe_interval_ms)


def confirmations_wanted(suspicion_mult: int, members: int) -> int:
    """``k``: independent confirmations that bring the timeout to its minimum."""
    k = suspicion_mult - 2
    return 0 if members - 2 < k else k


def timeout_ms(confirmations: int, k: int, min_ms: float, max_ms: float) -> float:
    """Total suspicion timeout after ``confirmations`` confirmations."""
    if k < 1:
        return min_ms
    fraction = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_ms - fraction * (max_ms - min_ms)
    return max(min_ms, math.floor(raw))


class Suspicion:
    """One running suspicion of one member, at one incarnation."""

    __slots__ = ("_confirmers", "accuser", "incarnation", "k", "max_ms", "min_ms", "start_ms")

    def __init__(self, *, accuser: NodeId, incarnation: int, k: int, min_ms: float,
                 max_ms: float, start_ms: float) -> None:
        self.accuser = accuser
        self.incarnation = incarnation
        self.k = k
        self.min_ms = min_ms
        self.max_ms = max(min_ms, max_ms)
        self.start_ms = start_ms
        self._confirmers: set[NodeId] = set()

    @property
    def confirmations(self) -> int:
        return len(self._confirmers)

    def confirm(self, source: NodeId) -> bool:
        """Count ``source``'s confirmation; True if it was new (so worth re-gossiping)."""
        if len(self._confirmers) >= self.k:
            return False
        if source == self.accuser or source in self._confirmers:
            return False
        self._confirmers.add(source)
        return True

    def deadline_ms(self) -> float:
        """When the suspect is declared dead unless it refutes first."""
        return self.start_ms + timeout_ms(len(self._confirmers), self.k, self.min_ms,
                                          self.max_ms)
