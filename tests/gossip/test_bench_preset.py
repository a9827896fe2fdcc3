"""The LAN preset's claims (the reasons written on ``suspicion_mult``), checked
from its formulas and in virtual time on the lab pump at n = 50, the size the
issue's targets name: a crash known everywhere faster than Serf (under 8.3 s),
and no member stalled for 5 s ever declared failed. ``bench/gossip.py`` measures
the same on real processes."""

from __future__ import annotations

from synod.gossip.config import GossipConfig
from synod.gossip.measure import measure_false_failures, measure_scale
from synod.gossip.suspicion import confirmations_wanted, suspicion_timeout_min_ms

SERF_DETECTION_MS = 8300.0
STALL_MS = 5000.0


def test_lan_preset_earliest_verdict_comes_after_a_five_second_stall() -> None:
    cfg = GossipConfig.lan()
    # From 32 members up (3 * log10(32) s + 0.5 s > 5 s). Below, max(1, log10 n) floors the minimum at
    # 3 probe intervals (4 in memberlist and Serf): small clusters trade stall
    # tolerance for speed, and bench/gossip.py shows what that costs at N = 5, 10, 25.
    for members in (32, 50, 100, 1000):
        minimum = suspicion_timeout_min_ms(cfg.suspicion_mult, members, cfg.probe_interval_ms)
        # A suspicion starts one probe timeout after the stall at the earliest; the
        # verdict comes no sooner than the minimum timeout after that.
        assert cfg.probe_timeout_ms + minimum > STALL_MS, members


def test_lan_preset_wants_one_independent_confirmation_at_fifty() -> None:
    cfg = GossipConfig.lan()
    assert confirmations_wanted(cfg.suspicion_mult, 50) == 1


def test_lan_preset_crash_is_known_everywhere_faster_than_serf_at_fifty() -> None:
    figure = measure_scale(50, seed=1, config=GossipConfig.lan())
    assert figure.all_failed_ms < SERF_DETECTION_MS
    assert figure.first_failed_ms > STALL_MS


def test_lan_preset_never_fails_a_member_stalled_five_seconds() -> None:
    for seed in (1, 2):
        figure = measure_false_failures(50, "stall5", lifeguard=True, seed=seed,
                                        duration_ms=30_000.0, config=GossipConfig.lan())
        assert figure.suspicions > 0  # the stalls were noticed ...
        assert figure.false_failures == 0  # ... and refuted in time
