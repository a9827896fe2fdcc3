"""Helpers for driving one replica by hand."""

from __future__ import annotations

import random

from synod.core.effects import Effect, Persist, Recovered, Send
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.kv import KeyValue
from synod.paxos.messages import Ballot
from synod.paxos.replica import PaxosReplica

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
MEMBERS = (N1, N2, N3)
CONFIG = PaxosConfig.sim()
#: The first moment a freshly started acceptor may promise.
READY_MS = CONFIG.lease_ms + CONFIG.clock_drift_bound_ms + 1.0


def fresh(node: NodeId = N1, records: tuple[bytes, ...] = (), now_ms: float = 0.0,
          config: PaxosConfig = CONFIG) -> PaxosReplica:
    replica = PaxosReplica(node, random.Random(7), members=MEMBERS, machine=KeyValue(), config=config)
    replica.start(now_ms, Recovered(records=records))
    return replica


def ballot(round_: int, node: NodeId) -> Ballot:
    return Ballot(round=round_, node=node)


def sends(effects: list[Effect], *, durable_only: bool = False) -> list[Send]:
    """Every Send in ``effects``; with ``durable_only`` only those inside a Persist."""
    found: list[Send] = []
    for effect in effects:
        if isinstance(effect, Send) and not durable_only:
            found.append(effect)
        elif isinstance(effect, Persist):
            found.extend(e for e in effect.then if isinstance(e, Send))
    return found


def records(effects: list[Effect]) -> list[bytes]:
    return [r for e in effects if isinstance(e, Persist) for r in e.records]


def persist_then_all(effects: list[Effect]) -> list[Effect]:
    """Flatten: every effect, with a Persist's ``then`` in its place (disk done)."""
    flat: list[Effect] = []
    for effect in effects:
        if isinstance(effect, Persist):
            flat.extend(effect.then)
        else:
            flat.append(effect)
    return flat
