"""The LAN preset's stall tolerance (the reasons written on ``suspicion_mult``,
``suspicion_timeout_min_floor_ms`` and ``retransmit_mult``): on the lab pump, in
virtual time, a member stalled for 5 s (like SIGSTOP) is never declared failed, in
small clusters where ``max(1, log10 n)`` would floor the suspicion timeout at
``suspicion_mult`` probe intervals, at n = 25 where the floor still bites, and at
n = 50, the size the issue's targets name. Without the floor, ``suspicion_mult = 3``
fails the small-cluster cases on every stall. ``bench/gossip.py`` measures the same
on real processes, against Serf."""

from __future__ import annotations

import dataclasses

import pytest

from synod.gossip.config import GossipConfig
from synod.gossip.measure import measure_false_failures, measure_scale


@pytest.mark.parametrize("members", [5, 10])
def test_lan_preset_never_fails_a_member_stalled_five_seconds_in_a_small_cluster(
        members: int) -> None:
    for seed in (1, 2, 3):
        figure = measure_false_failures(members, "stall5", lifeguard=True, seed=seed,
                                        duration_ms=60_000.0, affected=1,
                                        config=GossipConfig.lan())
        assert figure.suspicions > 0  # the stalls were noticed ...
        assert figure.false_failures == 0  # ... and refuted in time


def test_without_the_floor_suspicion_mult_three_fails_a_stalled_member() -> None:
    # The counterfactual that makes the floor necessary (and the test above able to fail).
    no_floor = dataclasses.replace(GossipConfig.lan(), suspicion_timeout_min_floor_ms=0.0)
    for members in (5, 10):
        figure = measure_false_failures(members, "stall5", lifeguard=True, seed=2,
                                        duration_ms=60_000.0, affected=1, config=no_floor)
        assert figure.false_failures > 0


@pytest.mark.parametrize("members", [25, 50])
def test_lan_preset_never_fails_five_members_stalled_five_seconds(members: int) -> None:
    # Seeds 1 and 3 at n = 25 each ended in one false verdict with retransmit_mult = 4
    # (a member missed the refutation); with 5, none.
    for seed in (1, 3):
        figure = measure_false_failures(members, "stall5", lifeguard=True, seed=seed,
                                        duration_ms=45_000.0, config=GossipConfig.lan())
        assert figure.suspicions > 0
        assert figure.false_failures == 0


def test_lan_preset_minimum_suspicion_is_above_a_five_second_stall_and_faster_at_fifty() -> None:
    # Virtual time, so a claim about the protocol, not a timing of this machine: at
    # n = 50 the crash is known everywhere sooner than with memberlist's constants.
    memberlist = dataclasses.replace(GossipConfig.lan(), suspicion_mult=4, retransmit_mult=4,
                                     suspicion_timeout_min_floor_ms=0.0)
    ours = measure_scale(50, seed=1, config=GossipConfig.lan())
    theirs = measure_scale(50, seed=1, config=memberlist)
    assert ours.all_failed_ms < theirs.all_failed_ms
    assert ours.first_failed_ms - ours.first_suspect_ms >= 4500.0
