"""The gossip block's configuration: one frozen dataclass, with presets.

Theory of operation
-------------------
Every timeout of SWIM + Lifeguard derives from a handful of knobs, as in
hashicorp/memberlist's ``DefaultLANConfig``. The formulas that turn them into
the effective values (all computed from the current member count ``n``):

* retransmits of each update = ``retransmit_mult * ceil(log10(n + 1))``
  (infection-style dissemination needs O(log n) rounds, SWIM section 4.1);
* suspicion timeout, minimum = ``max(suspicion_timeout_min_floor_ms,
  suspicion_mult * max(1, log10(n)) * probe_interval_ms)``,
  maximum = ``suspicion_max_timeout_mult * minimum``; the timeout starts at the
  maximum and falls towards the minimum as ``k = suspicion_mult - 2`` independent
  confirmations arrive (Lifeguard section 4.2);
* probe interval and probe timeout are both multiplied by ``awareness + 1``,
  where the local health score ``awareness`` is in ``[0, awareness_max_multiplier)``
  (Lifeguard section 4.1);
* push-pull interval = ``push_pull_interval_ms * scale(n)``, ``scale`` = 1 up to
  32 members, then ``ceil(log2(n) - log2(32)) + 1`` (memberlist's pushPullScale),
  so anti-entropy traffic grows no faster than log n per member.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from synod.core.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipConfig:
    """SWIM + Lifeguard knobs. Defaults are for a LAN (memberlist's DefaultLANConfig,
    except ``suspicion_mult`` and ``suspicion_timeout_min_floor_ms``)."""

    #: Period of the failure detector: one member is probed per period. 1 s on a LAN
    #: (SWIM's T'); shorter detects faster at the cost of more packets.
    probe_interval_ms: float = 1000.0
    #: How long to wait for a direct ack before asking ``indirect_checks`` others to
    #: probe (ping-req). Must be well above the network's round trip: 500 ms on a LAN.
    probe_timeout_ms: float = 500.0
    #: Members asked to probe on our behalf after a missed direct ack (SWIM's k).
    #: 3 makes a false suspicion from one lossy path unlikely.
    indirect_checks: int = 3
    #: Each update is piggybacked ``retransmit_mult * ceil(log10(n+1))`` times. A
    #: member misses an update with probability about ``e^-R`` (R the retransmits), and
    #: one that misses a refutation declares a live member failed when its suspicion
    #: timer runs out. memberlist's 4 (R = 8 for 10-99 members) was enough with its
    #: longer suspicion timeouts; with ``suspicion_mult = 3`` it let 2 of about 3,600
    #: (stall, observer) pairs at n = 25 end in a false verdict on the lab pump (5
    #: members stalled 5 s every 20 s, 20 seeds), and 5 (R = 10) none there or at
    #: n = 10 and 50. It costs bytes only while updates are queued, not at steady state.
    retransmit_mult: int = 5
    #: Scales the minimum suspicion timeout (see the module comment); also fixes the
    #: number of confirmations Lifeguard waits for: ``suspicion_mult - 2``. memberlist
    #: and Serf use 4; we use 3 with ``suspicion_timeout_min_floor_ms``: at n = 50 the
    #: minimum is 5.1 s instead of 6.8 s and one confirmation (not two) brings the
    #: timeout down to it, so a crash is known everywhere about 2 s sooner than Serf
    #: (bench/gossip.py). 3 alone was refused: ``max(1, log10 n)`` floors the minimum
    #: at ``suspicion_mult`` probe intervals below 10 members, 3 s, and a member
    #: stalled 5 s in a 5- or 10-member cluster was declared failed on every stall.
    suspicion_mult: int = 3
    #: Lower bound (ms) of the minimum suspicion timeout, whatever n. A stalled member
    #: (SIGSTOP, a long GC pause, a VM migration) is suspected at the earliest about one
    #: probe interval after its stall begins; it refutes as soon as it runs again. So
    #: a stall of S ms is survived when ``probe_interval_ms + floor > S`` plus the
    #: refutation's trip back: 4500 ms covers 5 s stalls with about half a second to
    #: spare on a LAN. It only bites below about 30 members (3 * log10(n) * 1 s >=
    #: 4.5 s from n = 32 on). 0 gives memberlist's formula alone.
    suspicion_timeout_min_floor_ms: float = 4500.0
    #: Maximum suspicion timeout as a multiple of the minimum (Lifeguard's beta). 6
    #: gives a lone accuser's suspicion time to be refuted.
    suspicion_max_timeout_mult: int = 6
    #: Upper bound of the local health multiplier (Lifeguard's LHM, S): timeouts
    #: stretch to at most this many times their base value. 8 as in memberlist.
    awareness_max_multiplier: int = 8
    #: Period of the extra gossip round that sends pending updates to
    #: ``gossip_nodes`` random members, besides piggybacking them on probes.
    gossip_interval_ms: float = 200.0
    #: Members each gossip round sends to (memberlist's GossipNodes).
    gossip_nodes: int = 3
    #: Dead members still receive gossip for this long, so a member wrongly declared
    #: dead hears about it and refutes. 30 s as in memberlist.
    gossip_to_the_dead_ms: float = 30_000.0
    #: Dead and left members are kept as tombstones this long, so a stale "alive"
    #: rumour of an old incarnation cannot revive them (e.g. after a mass restart).
    tombstone_ms: float = 60_000.0
    #: Base period of the full-state push-pull exchange with one random member
    #: (anti-entropy); scaled up for large clusters (module comment). 0 disables it.
    push_pull_interval_ms: float = 30_000.0
    #: Period of the reconnect attempt (Serf's reconnect_interval): a push-pull with
    #: one random member we hold dead. After a partition, each side holds the other
    #: dead and neither probes nor push-pulls with it; this is what heals them. 0
    #: disables it.
    reconnect_interval_ms: float = 30_000.0
    #: Retry period of a join whose seeds have not answered yet.
    join_retry_ms: float = 1000.0
    #: Join attempts before giving up (each attempt contacts every seed).
    join_attempts_max: int = 30
    #: Largest datagram the core builds: the primary message plus piggybacked
    #: updates. 1400 bytes stays under a 1500-byte Ethernet MTU with IP/UDP/HMAC room.
    packet_bytes_max: int = 1400
    #: Largest node metadata (tags) in bytes; larger is refused locally and dropped
    #: (counted) from peers. 512 as memberlist's MetaMaxSize.
    meta_bytes_max: int = 512
    #: Largest user event (name + payload) in bytes; must fit one packet with room.
    user_event_bytes_max: int = 512
    #: Largest increase of a known member's incarnation we accept in one update. A
    #: forged huge value would otherwise force the member to refute above it forever.
    incarnation_jump_max: int = 1000
    #: Updates waiting for retransmission; beyond it the most-sent are dropped.
    broadcast_queue_max: int = 4096
    #: Indirect probes we run on behalf of others at once; more ping-reqs are dropped.
    indirect_pending_max: int = 64
    #: Members we track (alive, suspect and tombstones); beyond it new ones are refused.
    members_max: int = 100_000
    #: Membership events kept for the subscriber until drained; oldest dropped beyond.
    event_queue_max: int = 10_000
    #: Recently seen user events remembered to drop duplicates.
    user_event_seen_max: int = 4096
    #: Lifeguard switch: local health awareness, dynamic suspicion timeouts and the
    #: buddy system. Off gives plain SWIM with a fixed suspicion timeout (the
    #: minimum), for comparison only.
    lifeguard: bool = True
    #: Persist our incarnation at start (a ``Persist`` effect), so a restarted member
    #: comes back above every incarnation it used before.
    persist_incarnation: bool = True

    def __post_init__(self) -> None:
        positive_ms = ("probe_interval_ms", "probe_timeout_ms", "gossip_interval_ms",
                       "join_retry_ms")
        for name in positive_ms:
            if not getattr(self, name) > 0:
                raise ConfigError(f"GossipConfig.{name} must be > 0")
        if self.probe_timeout_ms >= self.probe_interval_ms:
            raise ConfigError("GossipConfig.probe_timeout_ms must be below probe_interval_ms "
                              "(indirect probes need the rest of the period)")
        for name in ("gossip_to_the_dead_ms", "tombstone_ms", "push_pull_interval_ms",
                     "reconnect_interval_ms", "suspicion_timeout_min_floor_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"GossipConfig.{name} must be >= 0")
        if self.tombstone_ms < self.gossip_to_the_dead_ms:
            raise ConfigError("GossipConfig.tombstone_ms must be >= gossip_to_the_dead_ms "
                              "(we gossip to a dead member only while we remember it)")
        at_least_one = ("indirect_checks", "retransmit_mult", "gossip_nodes",
                        "awareness_max_multiplier", "join_attempts_max",
                        "incarnation_jump_max", "broadcast_queue_max",
                        "indirect_pending_max", "event_queue_max", "user_event_seen_max")
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ConfigError(f"GossipConfig.{name} must be >= 1")
        if self.suspicion_mult < 2:
            raise ConfigError("GossipConfig.suspicion_mult must be >= 2")
        if self.suspicion_max_timeout_mult < 1:
            raise ConfigError("GossipConfig.suspicion_max_timeout_mult must be >= 1")
        if self.members_max < 2:
            raise ConfigError("GossipConfig.members_max must be >= 2")
        if self.packet_bytes_max < 256:
            raise ConfigError("GossipConfig.packet_bytes_max must be >= 256")
        if self.meta_bytes_max < 0 or self.user_event_bytes_max < 1:
            raise ConfigError("GossipConfig.meta_bytes_max/user_event_bytes_max out of range")
        if self.user_event_bytes_max > self.packet_bytes_max - 128:
            raise ConfigError("GossipConfig.user_event_bytes_max must leave 128 bytes of "
                              "packet_bytes_max for headers")
        if self.meta_bytes_max > self.packet_bytes_max - 128:
            raise ConfigError("GossipConfig.meta_bytes_max must leave 128 bytes of "
                              "packet_bytes_max for headers")

    @classmethod
    def lan(cls) -> GossipConfig:
        """Defaults for a LAN (memberlist's DefaultLANConfig)."""
        return cls()

    @classmethod
    def local(cls) -> GossipConfig:
        """Loopback or one host: round trips are tiny, so detect 5x faster
        (memberlist's DefaultLocalConfig: 200 ms probes, 100 ms timeout, 3x retransmits,
        memberlist's suspicion formula without our floor). Tests and demos: a stall
        of a second can be declared failed here."""
        return dataclasses.replace(
            cls(),
            probe_interval_ms=200.0,
            probe_timeout_ms=100.0,
            retransmit_mult=3,
            suspicion_mult=4,
            suspicion_timeout_min_floor_ms=0.0,
            suspicion_max_timeout_mult=3,
            gossip_interval_ms=100.0,
            push_pull_interval_ms=15_000.0,
            reconnect_interval_ms=10_000.0,
            gossip_to_the_dead_ms=15_000.0,
            tombstone_ms=30_000.0,
        )

    @classmethod
    def sim(cls) -> GossipConfig:
        """The simulator's preset: LAN timings (so figures compare with the papers and
        with Serf), shorter push-pull and reconnect periods so anti-entropy and
        partition healing show up in short runs."""
        return dataclasses.replace(cls(), push_pull_interval_ms=10_000.0,
                                   reconnect_interval_ms=10_000.0)
