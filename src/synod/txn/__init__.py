"""synod.txn: a sharded key-value store with serializable 2PC transactions over
Paxos groups (see docs/transactions.md)."""

from synod.txn.config import TxnConfig
from synod.txn.errors import (
    ConflictError,
    KeyTooLargeError,
    TxnAbortedError,
    TxnError,
    TxnStateError,
    TxnTooLargeError,
    UnknownTxnError,
    WrongShardError,
)
from synod.txn.machine import ShardMachine
from synod.txn.server import ShardServer, ShardServerFactory, TxnStatistics
from synod.txn.shardmap import Shard, ShardMap, ShardMapSource, StaticShardMapSource, uniform_map

__all__ = [
    "ConflictError",
    "KeyTooLargeError",
    "Shard",
    "ShardMachine",
    "ShardMap",
    "ShardMapSource",
    "ShardServer",
    "ShardServerFactory",
    "StaticShardMapSource",
    "TxnAbortedError",
    "TxnConfig",
    "TxnError",
    "TxnStateError",
    "TxnStatistics",
    "TxnTooLargeError",
    "UnknownTxnError",
    "WrongShardError",
    "uniform_map",
]
