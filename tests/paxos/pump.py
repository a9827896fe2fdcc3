"""A tiny deterministic driver for unit tests: virtual time, a message queue,
timers, a disk per node that keeps only what was persisted, crash and restart.

It is deliberately small (the real simulator is ``synod.sim``): tests use it to
drive replicas by hand and to plant exact interleavings.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synod.codec.kernel import ClientRequest
from synod.codec.registry import Message, decode, encode
from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Effect,
    Persist,
    Recovered,
    SaveSnapshot,
    Send,
    SetTimer,
)
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.kv import KeyValue
from synod.paxos.replica import PaxosReplica


@dataclass(order=True)
class _Event:
    at_ms: float
    seq: int
    kind: str = field(compare=False)
    node: NodeId = field(compare=False)
    payload: Any = field(compare=False)


class Cluster:
    """Replicas n1..nN on a virtual network with per-link blocking."""

    def __init__(self, size: int = 3, *, seed: int = 1, config: PaxosConfig | None = None,
                 latency_ms: float = 1.0, codec_roundtrip: bool = True,
                 initial_members: int | None = None) -> None:
        self.config = config or PaxosConfig.sim()
        self.nodes = tuple(NodeId(f"n{i}") for i in range(1, size + 1))
        self.members = self.nodes[: initial_members or size]
        self.rng = random.Random(seed)
        self.now_ms = 0.0
        self.latency_ms = latency_ms
        self.codec_roundtrip = codec_roundtrip
        self._queue: list[_Event] = []
        self._seq = 0
        self.replicas: dict[NodeId, PaxosReplica] = {}
        self.disks: dict[NodeId, list[bytes]] = {}
        self.unsynced: dict[NodeId, list[Persist | SaveSnapshot]] = {}
        self.snapshots: dict[NodeId, tuple[bytes, ...]] = {}
        self.hold_persists: set[NodeId] = set()
        self.down: set[NodeId] = set()
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.clock_rate: dict[NodeId, float] = {}
        self._timer_gen: dict[tuple[NodeId, str], int] = {}
        self._incarnation: dict[NodeId, int] = {}
        self.results: dict[int, Message] = {}
        self.sent: list[tuple[NodeId, NodeId, Message]] = []
        self.drop: Callable[[NodeId, NodeId, Message], bool] = lambda s, d, m: False
        self._request_id = 0
        for node in self.nodes:
            self.disks[node] = []
            self.start(node)

    # ------------------------------------------------------------ nodes

    def local_ms(self, node: NodeId) -> float:
        return self.now_ms * self.clock_rate.get(node, 1.0)

    def build(self, node: NodeId) -> PaxosReplica:
        return PaxosReplica(node, random.Random(f"{node}/{self._incarnation.get(node, 0)}"),
                            members=self.members, machine=KeyValue(), config=self.config)

    def start(self, node: NodeId) -> None:
        self._incarnation[node] = self._incarnation.get(node, 0) + 1
        self.down.discard(node)
        self.unsynced[node] = []
        replica = self.build(node)
        self.replicas[node] = replica
        self.execute(node, replica.start(self.local_ms(node), Recovered(records=tuple(self.disks[node]),
                                                                           snapshot=self.snapshots.get(node))))

    def crash(self, node: NodeId) -> None:
        """Lose every volatile thing: memory, unsynced persists, armed timers."""
        self.down.add(node)
        self.unsynced[node] = []
        self._incarnation[node] = self._incarnation.get(node, 0) + 1
        for key in [k for k in self._timer_gen if k[0] == node]:
            del self._timer_gen[key]

    def restart(self, node: NodeId) -> None:
        self.start(node)

    def flush(self, node: NodeId) -> None:
        """Make the held persists of ``node`` durable and run their ``then``."""
        persists, self.unsynced[node] = self.unsynced[node], []
        for persist in persists:
            if isinstance(persist, SaveSnapshot):
                self._save_snapshot(node, persist)
                continue
            self.disks[node].extend(persist.records)
            self.execute(node, list(persist.then))

    # ------------------------------------------------------------ effects

    def _push(self, at_ms: float, kind: str, node: NodeId, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Event(at_ms, self._seq, kind, node, payload))

    def execute(self, node: NodeId, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message):
                    self.sent.append((node, to, message))
                    if (node, to) in self.blocked or self.drop(node, to, message):
                        continue
                    if self.codec_roundtrip:
                        message = decode(encode(message))
                    self._push(self.now_ms + self.latency_ms, "message", to, (node, message))
                case SetTimer(key=key, delay_ms=delay_ms):
                    gen = self._timer_gen.get((node, key), 0) + 1
                    self._timer_gen[(node, key)] = gen
                    rate = self.clock_rate.get(node, 1.0)
                    self._push(self.now_ms + delay_ms / rate, "timer", node, (key, gen))
                case CancelTimer(key=key):
                    self._timer_gen[(node, key)] = self._timer_gen.get((node, key), 0) + 1
                case Persist():
                    if node in self.hold_persists:
                        self.unsynced[node].append(effect)
                    else:
                        self.disks[node].extend(effect.records)
                        self.execute(node, list(effect.then))
                case SaveSnapshot():
                    if node in self.hold_persists:
                        self.unsynced[node].append(effect)
                    else:
                        self._save_snapshot(node, effect)
                case ClientResult(request_id=request_id, result=result):
                    self.results[request_id] = result

    def _save_snapshot(self, node: NodeId, effect: SaveSnapshot) -> None:
        """Like a driver: the snapshot replaces every record persisted before it."""
        self.snapshots[node] = effect.chunks
        self.disks[node] = []
        self.execute(node, list(effect.then))

    # ------------------------------------------------------------ running

    def step(self) -> bool:
        if not self._queue:
            return False
        event = heapq.heappop(self._queue)
        self.now_ms = max(self.now_ms, event.at_ms)
        node = event.node
        if node in self.down:
            return True
        replica = self.replicas[node]
        if event.kind == "message":
            source, message = event.payload
            effects = replica.on_message(self.local_ms(node), source, message)
        else:
            key, gen = event.payload
            if self._timer_gen.get((node, key)) != gen:
                return True
            effects = replica.on_timer(self.local_ms(node), key)
        self.execute(node, effects)
        replica.check_invariants()
        return True

    def run(self, duration_ms: float) -> None:
        end = self.now_ms + duration_ms
        while self._queue and self._queue[0].at_ms <= end:
            self.step()
        self.now_ms = max(self.now_ms, end)

    def run_until(self, condition: Callable[[], bool], limit_ms: float = 10_000.0) -> None:
        end = self.now_ms + limit_ms
        while not condition():
            if not self._queue or self._queue[0].at_ms > end:
                raise AssertionError(f"condition not reached by {end} ms")
            self.step()

    # ------------------------------------------------------------ helpers

    def leader(self) -> NodeId | None:
        leaders = [n for n, r in self.replicas.items() if r.is_leader and n not in self.down]
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(self, limit_ms: float = 10_000.0) -> NodeId:
        self.run_until(lambda: self.leader() is not None and
                       self.replicas[self.leader() or NodeId("")].has_read_lease(self.local_ms(self.leader() or NodeId(""))),
                       limit_ms)
        leader = self.leader()
        assert leader is not None
        return leader

    def request(self, node: NodeId, body: Message, client: str = "c1") -> int:
        """Deliver a client request to ``node`` now; returns its request id."""
        self._request_id += 1
        request_id = self._request_id
        effects = self.replicas[node].on_message(self.local_ms(node), NodeId(client),
                                                 ClientRequest(request_id=request_id, body=body))
        self.execute(node, effects)
        self.replicas[node].check_invariants()
        return request_id

    def wait_result(self, request_id: int, limit_ms: float = 5_000.0) -> Message:
        self.run_until(lambda: request_id in self.results, limit_ms)
        return self.results[request_id]

    def chosen_by_slot(self) -> dict[int, set[bytes]]:
        """Every value each live replica holds as chosen, by slot (encoded)."""
        found: dict[int, set[bytes]] = {}
        for replica in self.replicas.values():
            for slot, value in replica.chosen_values().items():
                found.setdefault(slot, set()).add(encode(value))
        return found
