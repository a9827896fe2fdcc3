"""``SimConfig``: every knob of a simulation run, with units and presets.

One frozen dataclass holds the network model, the disk model, the clocks and the
fault schedule, so that a run is fully described by ``(seed, SimConfig, scenario
options)`` and a failing run can be replayed from its command line. Presets:

* ``SimConfig.calm()``  -- a perfect LAN, no faults: for unit tests of a core;
* ``SimConfig()``       -- the default chaos run (a LAN with a little loss and
  duplication, crashes, partitions, clogs, loss bursts, skewed clocks, BUGGIFY);
* ``SimConfig.harsh()`` -- more of everything, for soak runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from synod.core.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """The simulated world. Times are virtual milliseconds."""

    # ---------------------------------------------------------------- network
    latency_ms_base: float = 0.5
    """Smallest one-way message latency. A LAN round trip is about a millisecond."""

    latency_ms_tail_mean: float = 1.5
    """Mean of the exponential tail added to ``latency_ms_base``. Random latency is
    what reorders messages: two sends to one node may arrive in either order."""

    latency_ms_max: float = 50.0
    """Cap on one message's latency (before clogging), so a run stays bounded."""

    loss_probability: float = 0.01
    """Chance that a message is silently dropped."""

    duplicate_probability: float = 0.01
    """Chance that a message is delivered twice (each copy with its own latency)."""

    # ---------------------------------------------------------------- disk
    fsync_ms_min: float = 0.5
    """Fastest fsync. Every fsync takes a time drawn from [min, max]; Persists
    arriving while one is in flight wait and share the next one (group commit)."""

    fsync_ms_max: float = 4.0
    """Slowest fsync (an SSD under load)."""

    disk_sector_bytes: int = 512
    """The unit in which a crash tears an unsynced write (``SimDiskConfig``)."""

    disk_tear_probability: float = 0.5
    """Chance that a crash tears the last unsynced write it keeps."""

    storage_check: bool = True
    """At every restart, check that the recovered log is a prefix of what the node
    appended and holds every fsynced record. Switched off only to prove that a
    scenario's own checks catch a storage bug without this help."""

    # ---------------------------------------------------------------- clocks
    clock_skew_ms_max: float = 200.0
    """Largest offset of a node's clock from true virtual time at time zero."""

    clock_drift_ppm_max: float = 1000.0
    """Largest clock rate error, parts per million (1000 ppm: 1 ms per second).
    A node's clock reads ``offset + t * (1 + drift)``: monotonic, and within
    ``clock_skew_ms_max + t * drift_max`` of true time ``t``."""

    # ---------------------------------------------------------------- fault schedule
    faults: bool = True
    """Draw a chaos phase from the seed. False: no crashes, partitions, clogs or
    loss bursts (the network keeps its base loss and duplication)."""

    buggify: bool = True
    """Switch BUGGIFY points on for the run (``synod.core.faults.enable_buggify``)."""

    chaos_ms: float = 4000.0
    """Length of the chaos phase, in which faults are injected."""

    heal_ms: float = 3000.0
    """Length of the healing phase: network repaired, every node restarted, no
    more faults; the cluster must converge before it ends."""

    heal_restart_all: bool = True
    """At the start of healing, crash and restart every fault-prone node that is up
    (nodes that are down are restarted in any case), so that every node proves it
    can rebuild itself from its disk and catch up."""

    fault_interval_ms_mean: float = 250.0
    """Mean time between two fault injections (exponential inter-arrival)."""

    crash_weight: float = 3.0
    """Relative weight of a node crash (with a later restart) among faults."""

    partition_weight: float = 2.0
    """Relative weight of a symmetric partition (the nodes split in two sides)."""

    one_way_weight: float = 1.0
    """Relative weight of a one-way link cut (a -> b dropped, b -> a delivered)."""

    clog_weight: float = 1.5
    """Relative weight of clogging a node or a link (messages held, then released)."""

    loss_burst_weight: float = 1.0
    """Relative weight of a burst of heavy message loss."""

    down_ms_min: float = 20.0
    """Shortest time a crashed node stays down before it restarts."""

    down_ms_max: float = 600.0
    """Longest time a crashed node stays down before it restarts."""

    crash_mid_write_probability: float = 0.5
    """Chance that a crash waits for the node's next disk write and strikes while
    that write's fsync is in flight: the power loss that tears a write, which a
    crash at a random time rarely hits. If the node writes nothing for
    ``mid_write_wait_ms_max`` the crash strikes then anyway."""

    mid_write_wait_ms_max: float = 100.0
    """Longest a mid-write crash waits for a write to strike in."""

    crashed_nodes_max: int = 1
    """Most nodes down at once during chaos (a scenario raises it for big clusters)."""

    partition_ms_min: float = 50.0
    """Shortest partition or one-way cut."""

    partition_ms_max: float = 1000.0
    """Longest partition or one-way cut."""

    clog_ms_min: float = 10.0
    """Shortest clog."""

    clog_ms_max: float = 400.0
    """Longest clog."""

    loss_burst_probability: float = 0.5
    """Loss probability during a loss burst."""

    loss_burst_ms_max: float = 500.0
    """Longest loss burst (the shortest is ``clog_ms_min``)."""

    # ---------------------------------------------------------------- bounds
    events_max: int = 2_000_000
    """Most events one run may process; more is a livelock and fails the run."""

    pending_events_max: int = 500_000
    """Most events waiting in the heap at once; more fails the run (a core that
    floods the network or arms timers without bound)."""

    def __post_init__(self) -> None:
        non_negative = (
            "latency_ms_base", "latency_ms_tail_mean", "fsync_ms_min", "clock_skew_ms_max",
            "clock_drift_ppm_max", "chaos_ms", "heal_ms", "crash_weight", "partition_weight",
            "one_way_weight", "clog_weight", "loss_burst_weight", "down_ms_min",
            "partition_ms_min", "clog_ms_min", "mid_write_wait_ms_max",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"SimConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.disk_sector_bytes < 1:
            raise ConfigError("SimConfig.disk_sector_bytes must be >= 1")
        for name in ("loss_probability", "duplicate_probability", "loss_burst_probability",
                     "disk_tear_probability", "crash_mid_write_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"SimConfig.{name} must be in [0, 1], got {value}")
        pairs = (
            ("latency_ms_base", "latency_ms_max"), ("fsync_ms_min", "fsync_ms_max"),
            ("down_ms_min", "down_ms_max"), ("partition_ms_min", "partition_ms_max"),
            ("clog_ms_min", "clog_ms_max"), ("clog_ms_min", "loss_burst_ms_max"),
        )
        for low, high in pairs:
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f"SimConfig.{low} must be <= SimConfig.{high}")
        if self.clock_drift_ppm_max >= 100_000:
            raise ConfigError("SimConfig.clock_drift_ppm_max must be < 100000 (10%)")
        if self.fault_interval_ms_mean <= 0:
            raise ConfigError("SimConfig.fault_interval_ms_mean must be > 0")
        if self.crashed_nodes_max < 0:
            raise ConfigError("SimConfig.crashed_nodes_max must be >= 0")
        if self.events_max <= 0 or self.pending_events_max <= 0:
            raise ConfigError("SimConfig.events_max and pending_events_max must be > 0")

    @classmethod
    def calm(cls) -> SimConfig:
        """A perfect LAN without faults: no loss, no duplication, no skew, no BUGGIFY."""
        return cls(
            loss_probability=0.0, duplicate_probability=0.0, clock_skew_ms_max=0.0,
            clock_drift_ppm_max=0.0, faults=False, buggify=False,
        )

    @classmethod
    def harsh(cls) -> SimConfig:
        """More loss, slower disks, faults twice as often, longer outages."""
        return cls(
            loss_probability=0.05, duplicate_probability=0.05, latency_ms_tail_mean=5.0,
            fsync_ms_max=20.0, fault_interval_ms_mean=120.0, down_ms_max=1500.0,
            partition_ms_max=2000.0, chaos_ms=8000.0, heal_ms=4000.0,
        )

    def replace(self, **changes: object) -> SimConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
