"""The LAN preset's stall tolerance (the reason written on ``suspicion_mult``):
on the lab pump, in virtual time, a member stalled for 5 s (like SIGSTOP) is never
declared failed, in small clusters where ``max(1, log10 n)`` floors the suspicion
timeout and at n = 50, the size the issue's targets name. ``suspicion_mult = 3``
fails the small-cluster cases on every stall. ``bench/gossip.py`` measures the
same on real processes."""

from __future__ import annotations

import pytest

from synod.gossip.config import GossipConfig
from synod.gossip.measure import measure_false_failures


@pytest.mark.parametrize("members", [5, 10])
def test_lan_preset_never_fails_a_member_stalled_five_seconds_in_a_small_cluster(
        members: int) -> None:
    for seed in (1, 2, 3):
        figure = measure_false_failures(members, "stall5", lifeguard=True, seed=seed,
                                        duration_ms=60_000.0, affected=1,
                                        config=GossipConfig.lan())
        assert figure.suspicions > 0  # the stalls were noticed ...
        assert figure.false_failures == 0  # ... and refuted in time


def test_lan_preset_never_fails_a_member_stalled_five_seconds_at_fifty() -> None:
    for seed in (1, 2):
        figure = measure_false_failures(50, "stall5", lifeguard=True, seed=seed,
                                        duration_ms=30_000.0, config=GossipConfig.lan())
        assert figure.suspicions > 0
        assert figure.false_failures == 0
