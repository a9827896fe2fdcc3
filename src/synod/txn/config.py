"""The transaction block's configuration: one frozen dataclass, three presets.

Durations are milliseconds of the monotonic clock the driver passes in as
``now_ms``; sizes are bytes; every bound is a ``*_max``. Every replica of every
shard must agree on the size limits (they decide what the state machine accepts).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from synod.core.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnConfig:
    """Knobs of the shard servers and of the transaction client."""

    #: Largest key, in UTF-8 bytes. Keys index the engine's B-tree; etcd's
    #: default request limit (1.5 MiB) is far larger, but a key is not a value.
    key_bytes_max: int = 1024

    #: Largest value, in bytes.
    value_bytes_max: int = 64 * 1024

    #: Keys a transaction may read or write in total, at most (its locks).
    txn_keys_max: int = 1024

    #: Bytes of writes (keys + values) a transaction may carry, at most. Below
    #: the Paxos command limit so a prepare record always fits in one command.
    txn_bytes_max: int = 48 * 1024

    #: Keys one scan returns at most (a longer range is read in pages).
    scan_keys_max: int = 1000

    #: A transaction holding locks at a shard leader (not yet prepared) that has
    #: sent nothing for this long is presumed abandoned: its locks are released.
    txn_idle_ms: float = 5_000.0

    #: A transaction record left pending this long by a coordinator leader (a
    #: participant never answered, the client is gone) is aborted.
    txn_record_timeout_ms: float = 5_000.0

    #: A coordinator re-sends prepare requests and decisions it has no answer
    #: for this often; an in-doubt participant asks the coordinator this often.
    resend_ms: float = 100.0

    #: A cross-shard participant's prepare waits this long at most for its write
    #: locks, then votes no (a retryable conflict). Wound-wait cannot break a
    #: cycle through a transaction prepared at another shard (it is never
    #: wounded); without this bound only ``txn_record_timeout_ms`` would. A few
    #: rounds: long enough to wait for an older transaction to finish, checked
    #: on the tick (every ``resend_ms``).
    prepare_wait_ms: float = 200.0

    #: Re-sends back off: each re-send of a prepare request or decision, and each
    #: in-doubt query, waits twice as long as the one before, up to this many
    #: times ``resend_ms`` (1: no back-off, every ``resend_ms``). Under CPU
    #: starvation a round takes longer than ``resend_ms``, and re-sending every
    #: tick to every replica only adds work to a machine already behind.
    resend_backoff_max: int = 1

    #: Transactions a shard leader tracks at once (locks, waiters, coordination);
    #: beyond this a new transaction gets the retryable ``overloaded`` error.
    txns_active_max: int = 10_000

    #: Lock requests queued behind one key at most (beyond: ``overloaded``).
    lock_waiters_max: int = 256

    #: Changes kept for watches; a watch from an older revision is told the
    #: history was compacted (``compacted``), as etcd does.
    watch_history_max: int = 10_000

    #: Commits one ``TxnBatch`` carries at most (the client library's batches
    #: are at most this big; a larger one is refused whole with ``too_large``).
    batch_items_max: int = 256

    #: Long-poll watches (``WatchWait``) one replica holds open at once; beyond
    #: this a new one gets the retryable ``overloaded`` error.
    watches_waiting_max: int = 1024

    #: The longest a long-poll watch is held open without a change (a client
    #: asking for longer is answered after this, with no events, and asks again).
    watch_wait_ms_max: float = 30_000.0

    #: Finished transaction outcomes a participant remembers (for late duplicate
    #: prepares and decisions); older ones are forgotten oldest first.
    outcomes_max: int = 100_000

    def __post_init__(self) -> None:
        positive = (
            "key_bytes_max", "value_bytes_max", "txn_keys_max", "txn_bytes_max", "scan_keys_max",
            "txn_idle_ms", "txn_record_timeout_ms", "resend_ms", "txns_active_max",
            "lock_waiters_max", "watch_history_max", "outcomes_max", "watches_waiting_max",
            "watch_wait_ms_max", "batch_items_max", "resend_backoff_max", "prepare_wait_ms",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"TxnConfig.{name} must be positive")
        if self.key_bytes_max > self.txn_bytes_max:
            raise ConfigError("TxnConfig.key_bytes_max must not exceed txn_bytes_max")
        if self.prepare_wait_ms >= self.txn_record_timeout_ms:
            raise ConfigError("TxnConfig.prepare_wait_ms must be below txn_record_timeout_ms")
        if self.resend_ms * 2 > self.txn_record_timeout_ms:
            raise ConfigError("TxnConfig.resend_ms must be at most half of txn_record_timeout_ms")

    @classmethod
    def lan(cls) -> TxnConfig:
        """Shards on one LAN: the defaults."""
        return cls()

    @classmethod
    def local(cls) -> TxnConfig:
        """Processes on one machine: shorter timeouts."""
        return dataclasses.replace(cls(), txn_idle_ms=2_000.0, txn_record_timeout_ms=2_000.0, resend_ms=50.0,
                                   prepare_wait_ms=100.0)

    @classmethod
    def sim(cls) -> TxnConfig:
        """The simulator: short timeouts so abandonment and resumption run in every seed."""
        return dataclasses.replace(
            cls(), txn_idle_ms=600.0, txn_record_timeout_ms=600.0, resend_ms=40.0, prepare_wait_ms=80.0,
            watch_history_max=200, outcomes_max=2_000,
        )
