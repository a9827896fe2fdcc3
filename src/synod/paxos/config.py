"""The Multi-Paxos replica's configuration: one frozen dataclass, three presets.

Every duration is in milliseconds of the *monotonic* clock the driver passes in as
``now_ms``; every bound is a ``*_max``. ``lan()`` is the default (three or five
replicas on one data-centre network), ``local()`` is tuned for processes on one
machine (loopback, short timeouts), ``sim()`` for the simulator (round numbers that
read well in traces, small snapshot interval so snapshots and catch-up by snapshot
happen often).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from synod.core.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class PaxosConfig:
    """Knobs of one replica. All replicas of a group must agree on
    ``window_slots_max`` (it is also the reconfiguration distance alpha), and on
    ``lease_ms``/``clock_drift_bound_ms`` (the lease is a contract between them)."""

    #: A follower that hears nothing from a leader for a random time drawn from
    #: [election_timeout_ms, 2 * election_timeout_ms) starts an election (pre-vote
    #: first). Ten heartbeats, so a few lost ones do not cause an election.
    election_timeout_ms: float = 500.0

    #: A leader sends an Accept round (empty when idle) this often. It carries the
    #: chosen index to learners and renews the lease.
    heartbeat_interval_ms: float = 50.0

    #: How long a granted lease lasts on the acceptor's clock, from when it accepted
    #: the round. The leader counts it from when it SENT the round, minus the drift
    #: bound. Shorter than the election timeout so a dead leader's lease has run out
    #: by the time anyone campaigns (it may be longer: then a dead leader is
    #: replaced only once its lease ran out, as acceptors refuse to promise).
    lease_ms: float = 400.0

    #: The most two replicas' monotonic clocks may disagree about the length of one
    #: lease (rate drift). The leader shortens its lease by this much; a restarted
    #: acceptor waits lease_ms + clock_drift_bound_ms before it makes any promise.
    clock_drift_bound_ms: float = 40.0

    #: Leader step-down: a leader that has not heard from a majority within this
    #: long steps down (check-quorum). Defaults to the election timeout.
    check_quorum_ms: float = 500.0

    #: Slots a leader may have proposed beyond its chosen prefix (the Phase 2
    #: pipeline). Also alpha: a membership change chosen in slot s governs slots
    #: from s + window_slots_max on.
    window_slots_max: int = 32

    #: Client commands per slot (one batch) at most.
    batch_commands_max: int = 1024

    #: Bytes of client commands per slot at most.
    batch_bytes_max: int = 1024 * 1024

    #: Largest client command (operation bytes) accepted; larger is a typed error.
    command_bytes_max: int = 64 * 1024

    #: Client commands a leader queues while its window is full; beyond that the
    #: client gets an "overloaded" error (back-pressure).
    pending_commands_max: int = 100_000

    #: Reads waiting for a quorum round or for the state machine to catch up.
    pending_reads_max: int = 100_000

    #: Take a snapshot and truncate the log once this many slots were applied
    #: since the last snapshot.
    snapshot_interval_slots: int = 10_000

    #: A snapshot is sent to a lagging replica in chunks of at most this many bytes.
    snapshot_chunk_bytes_max: int = 256 * 1024

    #: Chosen entries in one catch-up reply, at most, and their bytes.
    catchup_entries_max: int = 256
    catchup_bytes_max: int = 4 * 1024 * 1024

    #: A learner re-asks for catch-up after this long without progress.
    catchup_retry_ms: float = 100.0

    #: Accepted entries in one Promise at most; a candidate that gets a truncated
    #: promise is too far behind and catches up before campaigning again.
    promise_entries_max: int = 4096

    #: Results kept per client for exactly-once (the window of in-flight requests).
    client_window_max: int = 4096

    #: Clients in the exactly-once table; a client not seen for
    #: client_retention_slots slots is evicted (by log position, never by time).
    clients_max: int = 100_000
    client_retention_slots: int = 1_000_000

    #: Pre-vote: a replica asks whether it could win before it raises its ballot,
    #: so a returning partitioned replica does not depose a working leader.
    pre_vote: bool = True

    def __post_init__(self) -> None:
        positive = (
            "election_timeout_ms", "heartbeat_interval_ms", "lease_ms", "check_quorum_ms",
            "window_slots_max", "batch_commands_max", "batch_bytes_max", "command_bytes_max",
            "pending_commands_max", "pending_reads_max", "snapshot_interval_slots",
            "snapshot_chunk_bytes_max", "catchup_entries_max", "catchup_bytes_max",
            "catchup_retry_ms", "promise_entries_max", "client_window_max", "clients_max",
            "client_retention_slots",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"PaxosConfig.{name} must be positive")
        if self.clock_drift_bound_ms < 0:
            raise ConfigError("PaxosConfig.clock_drift_bound_ms must not be negative")
        if self.heartbeat_interval_ms * 2 > self.election_timeout_ms:
            raise ConfigError("PaxosConfig.heartbeat_interval_ms must be at most half the election timeout")
        if self.lease_ms <= self.clock_drift_bound_ms:
            raise ConfigError("PaxosConfig.lease_ms must exceed clock_drift_bound_ms")
        if self.command_bytes_max > self.batch_bytes_max:
            raise ConfigError("PaxosConfig.command_bytes_max must not exceed batch_bytes_max")
        if self.promise_entries_max < 2 * self.window_slots_max:
            raise ConfigError("PaxosConfig.promise_entries_max must be at least 2 * window_slots_max")

    @classmethod
    def lan(cls) -> PaxosConfig:
        """Replicas on one LAN: the defaults."""
        return cls()

    @classmethod
    def local(cls) -> PaxosConfig:
        """Replicas as processes on one machine: loopback latency is tens of
        microseconds, so shorter timeouts give failover well under a second."""
        return dataclasses.replace(
            cls(), election_timeout_ms=300.0, heartbeat_interval_ms=30.0, lease_ms=240.0,
            clock_drift_bound_ms=24.0, check_quorum_ms=300.0,
        )

    @classmethod
    def sim(cls) -> PaxosConfig:
        """The simulator: small snapshot interval and catch-up batches so that
        snapshot transfer, truncation and catch-up happen in every run."""
        return dataclasses.replace(
            cls(), election_timeout_ms=300.0, heartbeat_interval_ms=30.0, lease_ms=200.0,
            clock_drift_bound_ms=20.0, check_quorum_ms=300.0, window_slots_max=8,
            batch_commands_max=16, snapshot_interval_slots=40, snapshot_chunk_bytes_max=512,
            catchup_entries_max=16, promise_entries_max=64, client_window_max=64,
        )
