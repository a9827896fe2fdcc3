"""Lifeguard's dynamic suspicion timeout (4.2) and local health awareness (4.1)."""

from __future__ import annotations

import math

import pytest

from synod.core.ids import NodeId
from synod.gossip.awareness import Awareness
from synod.gossip.suspicion import (
    Suspicion,
    confirmations_wanted,
    suspicion_timeout_min_ms,
    timeout_ms,
)


def test_minimum_timeout_formula() -> None:
    assert suspicion_timeout_min_ms(4, 1, 1000.0) == 4000.0
    assert suspicion_timeout_min_ms(4, 10, 1000.0) == 4000.0
    assert suspicion_timeout_min_ms(4, 100, 1000.0) == 8000.0
    assert suspicion_timeout_min_ms(4, 2000, 1000.0) == pytest.approx(4 * math.log10(2000) * 1000)


def test_confirmations_wanted_is_mult_minus_two_unless_the_cluster_is_tiny() -> None:
    assert confirmations_wanted(4, 100) == 2
    assert confirmations_wanted(4, 4) == 2
    assert confirmations_wanted(4, 3) == 0
    assert confirmations_wanted(6, 5) == 0


def test_timeout_falls_logarithmically_from_max_to_min() -> None:
    values = [timeout_ms(c, 3, 1000.0, 6000.0) for c in range(5)]
    assert values[0] == 6000.0
    assert values[3] == values[4] == 1000.0
    assert values[0] > values[1] > values[2] > values[3]
    # memberlist: max - (max - min) * log(c + 1) / log(k + 1)
    assert values[1] == math.floor(6000 - 5000 * math.log(2) / math.log(4))
    assert timeout_ms(0, 0, 1000.0, 6000.0) == 1000.0


def test_only_new_independent_confirmations_count_up_to_k() -> None:
    s = Suspicion(accuser=NodeId("a"), incarnation=1, k=2, min_ms=1000.0, max_ms=6000.0,
                  start_ms=500.0)
    assert s.deadline_ms() == 6500.0
    assert not s.confirm(NodeId("a"))  # the accuser is not independent
    assert s.confirm(NodeId("b"))
    assert not s.confirm(NodeId("b"))
    assert s.confirm(NodeId("c"))
    assert not s.confirm(NodeId("d"))  # k reached
    assert s.deadline_ms() == 1500.0


def test_awareness_is_clamped_and_scales_timeouts() -> None:
    a = Awareness(8)
    assert a.scale_ms(500.0) == 500.0
    a.apply_delta(3)
    assert a.scale_ms(500.0) == 2000.0
    a.apply_delta(100)
    assert a.score == 7
    a.apply_delta(-100)
    assert a.score == 0


def test_the_floor_raises_the_minimum_only_where_the_formula_is_below_it() -> None:
    assert suspicion_timeout_min_ms(3, 5, 1000.0, floor_ms=4500.0) == 4500.0
    assert suspicion_timeout_min_ms(3, 10, 1000.0, floor_ms=4500.0) == 4500.0
    assert suspicion_timeout_min_ms(3, 50, 1000.0, floor_ms=4500.0) == pytest.approx(
        3 * math.log10(50) * 1000)
