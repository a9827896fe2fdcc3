"""Small helpers shared by the gossip tests."""

from __future__ import annotations

import random

from synod.core.effects import Effect, Persist, Recovered, Send, SetTimer
from synod.core.ids import NodeId
from synod.gossip.config import GossipConfig
from synod.gossip.member import GossipMember
from synod.gossip.messages import Ack, Alive, Gossip, Nack, Ping, PingReq, Update


def member(name: str = "a", config: GossipConfig | None = None, *, records: tuple[bytes, ...] = (),
           meta: bytes = b"", seeds: tuple[str, ...] = ()) -> GossipMember:
    """A started member (its start effects discarded)."""
    core = GossipMember(NodeId(name), random.Random(7), config or GossipConfig(), meta=meta,
                        address=f"{name}:7946", seeds=tuple(NodeId(s) for s in seeds))
    core.start(0.0, Recovered(records=records))
    return core


def flatten(effects: list[Effect]) -> list[Effect]:
    out: list[Effect] = []
    for effect in effects:
        out.append(effect)
        if isinstance(effect, Persist):
            out.extend(flatten(list(effect.then)))
    return out


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in flatten(effects) if isinstance(e, Send)]


def timers(effects: list[Effect]) -> dict[str, float]:
    return {e.key: e.delay_ms for e in flatten(effects) if isinstance(e, SetTimer)}


def piggybacked(effects: list[Effect]) -> list[Update]:
    found: list[Update] = []
    for send in sends(effects):
        message = send.message
        if isinstance(message, Ping | Ack | PingReq | Nack | Gossip):
            found.extend(message.updates)
    return found


def learn(core: GossipMember, *updates: Update, now_ms: float = 0.0,
          source: str = "x") -> list[Effect]:
    """Deliver ``updates`` to ``core`` in one gossip datagram."""
    return core.on_message(now_ms, NodeId(source), Gossip(updates=tuple(updates)))


def add_peers(core: GossipMember, *names: str, incarnation: int = 1) -> None:
    learn(core, *(Alive(node=NodeId(n), incarnation=incarnation, address=f"{n}:7946")
                  for n in names))
    core.drain_events()
