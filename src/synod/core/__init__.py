"""The kernel every block builds on: node ids, effects, the host interface, errors."""

from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Core,
    CoreFactory,
    Effect,
    Effects,
    Host,
    Persist,
    Recovered,
    SaveSnapshot,
    Send,
    SetTimer,
    frame_chunks,
    unframe_chunks,
)
from synod.core.errors import (
    ConfigError,
    InvariantViolation,
    LocalProtocolError,
    RemoteProtocolError,
    SynodError,
    TimeoutError_,
    invariant,
)
from synod.core.ids import NodeId, node_id

__all__ = [
    "CancelTimer",
    "ClientResult",
    "ConfigError",
    "Core",
    "CoreFactory",
    "Effect",
    "Effects",
    "Host",
    "InvariantViolation",
    "LocalProtocolError",
    "NodeId",
    "Persist",
    "Recovered",
    "RemoteProtocolError",
    "SaveSnapshot",
    "Send",
    "SetTimer",
    "SynodError",
    "TimeoutError_",
    "frame_chunks",
    "invariant",
    "node_id",
    "unframe_chunks",
]
