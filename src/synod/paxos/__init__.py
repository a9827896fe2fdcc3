"""synod.paxos: Multi-Paxos replicated state machines (see docs/paxos.md)."""

from synod.paxos.config import PaxosConfig
from synod.paxos.kv import KeyValue
from synod.paxos.messages import (
    Ballot,
    Command,
    CommandResult,
    Read,
    ReadMode,
    ReadResult,
)
from synod.paxos.replica import PaxosReplica, ReplicaStatistics, Role, replica_factory
from synod.paxos.statemachine import ClientTable, ReplicatedState, StateMachine

__all__ = [
    "Ballot",
    "ClientTable",
    "Command",
    "CommandResult",
    "KeyValue",
    "PaxosConfig",
    "PaxosReplica",
    "Read",
    "ReadMode",
    "ReadResult",
    "ReplicaStatistics",
    "ReplicatedState",
    "Role",
    "StateMachine",
    "replica_factory",
]
