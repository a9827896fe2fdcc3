"""A deterministic in-process cluster of gossip members (a message pump).

Theory of operation
-------------------
The gossip block's own small driver, for unit tests and for the large-n
measurements in docs/gossip.md: one event heap ordered by (virtual time,
sequence number), one seeded ``random.Random`` for the network, and a
``random.Random`` per member derived from the seed, so a run is a pure function
of its seed. It carries out the core's effects exactly as the drivers do
(``Persist`` appends to the node's "disk" and then runs ``then``; ``SetTimer``
re-arms by key; a cancelled timer never fires) and models the faults SWIM and
Lifeguard are about:

* datagram latency (uniform in a range) and loss (a probability);
* symmetric partitions (``partition(groups)``, ``heal()``);
* crash (volatile state lost, the disk kept) and restart with ``start``;
* paused members (SIGSTOP-like: nothing is processed until the pause ends) and
  slowed members (every message reaches them ``extra_ms`` late, as on an
  overloaded machine).

It is not the general simulator (``synod.sim``): it knows only gossip members,
and it is cheap enough per event to run thousands of them. Membership events
are handed, as they are drained after each step, to ``listeners``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from synod.codec.registry import Message, encode
from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Effect,
    Persist,
    Recovered,
    Send,
    SetTimer,
)
from synod.core.ids import NodeId
from synod.gossip.config import GossipConfig
from synod.gossip.member import GossipMember
from synod.gossip.messages import MemberState, MemberStatus
from synod.gossip.view import MemberEvent

_DELIVER = 0
_TIMER = 1

Listener = Callable[[NodeId, MemberEvent], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkModel:
    #: One-way datagram latency is uniform in [latency_ms_min, latency_ms_max].
    latency_ms_min: float = 0.5
    latency_ms_max: float = 2.0
    #: Probability that a datagram is lost.
    loss: float = 0.0


class GossipLab:
    def __init__(self, *, seed: int, config: GossipConfig | None = None,
                 network: NetworkModel | None = None, measure_bytes: bool = False,
                 check_invariants: bool = True) -> None:
        self.seed = seed
        self.config = config if config is not None else GossipConfig.sim()
        self.network = network if network is not None else NetworkModel()
        self.measure_bytes = measure_bytes
        self.check = check_invariants
        self.now_ms = 0.0
        self.rng = random.Random(f"gossip-lab/{seed}")
        self.members: dict[NodeId, GossipMember] = {}
        self.up: set[NodeId] = set()
        self.disks: dict[NodeId, list[bytes]] = {}
        self.listeners: list[Listener] = []
        self.messages_sent: dict[NodeId, int] = {}
        self.bytes_sent: dict[NodeId, int] = {}
        self.messages_delivered = 0
        self.paused_until: dict[NodeId, float] = {}
        self.slow_ms: dict[NodeId, float] = {}
        self._group: dict[NodeId, int] = {}
        self._heap: list[tuple[float, int, int, NodeId, object, object, int]] = []
        self._seq = 0
        self._epoch: dict[NodeId, int] = {}
        self._timer_generation: dict[tuple[NodeId, str], int] = {}
        self._meta: dict[NodeId, bytes] = {}
        self._boots: dict[NodeId, int] = {}

    # ------------------------------------------------------------ cluster

    def add_node(self, node: NodeId, *, seeds: tuple[NodeId, ...] = (), meta: bytes = b"",
                 config: GossipConfig | None = None) -> GossipMember:
        self.disks.setdefault(node, [])
        self._meta[node] = meta
        self.messages_sent.setdefault(node, 0)
        self.bytes_sent.setdefault(node, 0)
        boots = self._boots.get(node, 0) + 1
        self._boots[node] = boots
        member = GossipMember(node, random.Random(f"gossip-lab/{self.seed}/{node}/{boots}"),
                              config if config is not None else self.config,
                              address=f"{node}:7946", meta=meta, seeds=seeds)
        self.members[node] = member
        self.up.add(node)
        self._epoch[node] = self._epoch.get(node, 0) + 1
        self._execute(node, member.start(self.now_ms, Recovered(records=tuple(self.disks[node]))))
        return member

    def start_converged(self, nodes: list[NodeId]) -> None:
        """Start ``nodes`` already knowing each other (a restored snapshot), the way a
        long-running cluster looks; saves the O(n^2) join storm in large runs."""
        for node in nodes:
            self.add_node(node)
        rows = tuple(MemberState(node=node, address=f"{node}:7946",
                                 incarnation=self.members[node].incarnation,
                                 status=MemberStatus.ALIVE) for node in nodes)
        for node in nodes:
            self._execute(node, self.members[node].restore_snapshot(self.now_ms, rows))

    def crash(self, node: NodeId) -> None:
        """Stop ``node`` at once; its volatile state is gone, its disk stays."""
        self.up.discard(node)
        self._epoch[node] = self._epoch.get(node, 0) + 1

    def restart(self, node: NodeId, *, seeds: tuple[NodeId, ...] = ()) -> GossipMember:
        if node in self.up:
            raise ValueError(f"{node} is running")
        return self.add_node(node, seeds=seeds, meta=self._meta.get(node, b""))

    def pause(self, node: NodeId, duration_ms: float) -> None:
        """SIGSTOP for ``duration_ms``: events for ``node`` wait until it resumes."""
        self.paused_until[node] = self.now_ms + duration_ms

    def slow(self, node: NodeId, extra_ms: float) -> None:
        """Every message to ``node`` arrives ``extra_ms`` late (0 to stop)."""
        self.slow_ms[node] = extra_ms

    def partition(self, groups: list[list[NodeId]]) -> None:
        self._group = {node: index for index, group in enumerate(groups) for node in group}

    def heal(self) -> None:
        self._group = {}

    def set_loss(self, loss: float) -> None:
        self.network = NetworkModel(latency_ms_min=self.network.latency_ms_min,
                                    latency_ms_max=self.network.latency_ms_max, loss=loss)

    def live(self) -> list[NodeId]:
        return sorted(self.up)

    # ------------------------------------------------------------ running

    def run_until(self, until_ms: float, stop: Callable[[], bool] | None = None) -> bool:
        """Process events up to ``until_ms``; True if ``stop()`` became true first."""
        heap = self._heap
        while heap and heap[0][0] <= until_ms:
            item = heapq.heappop(heap)
            self.now_ms = item[0]
            self._step(item)
            if stop is not None and stop():
                return True
        self.now_ms = max(self.now_ms, until_ms)
        return False

    def run_for(self, duration_ms: float, stop: Callable[[], bool] | None = None) -> bool:
        return self.run_until(self.now_ms + duration_ms, stop)

    def do(self, node: NodeId, action: Callable[[GossipMember], list[Effect]]) -> None:
        """Call an API method of ``node``'s member now and carry out its effects."""
        member = self.members[node]
        self._execute(node, action(member))
        self._after(node, member)

    def _step(self, item: tuple[float, int, int, NodeId, object, object, int]) -> None:
        _time, _seq, kind, node, a, b, epoch = item
        if node not in self.up or epoch != self._epoch[node]:
            return
        paused = self.paused_until.get(node)
        if paused is not None and paused > self.now_ms:
            self._push(paused, kind, node, a, b, epoch)
            return
        member = self.members[node]
        if kind == _DELIVER:
            assert isinstance(b, Message)
            self.messages_delivered += 1
            effects = member.on_message(self.now_ms, NodeId(str(a)), b)
        else:
            key = str(a)
            if self._timer_generation.get((node, key)) != b:
                return
            del self._timer_generation[(node, key)]
            effects = member.on_timer(self.now_ms, key)
        self._execute(node, effects)
        self._after(node, member)

    def _after(self, node: NodeId, member: GossipMember) -> None:
        if self.check:
            member.check_invariants()
        if member._events:
            events = member.drain_events()
            for listener in self.listeners:
                for event in events:
                    listener(node, event)

    def _push(self, at_ms: float, kind: int, node: NodeId, a: object, b: object,
              epoch: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, self._seq, kind, node, a, b, epoch))

    def _execute(self, node: NodeId, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send():
                    self._send(node, effect.to, effect.message)
                case SetTimer():
                    self._seq += 1
                    generation = self._seq
                    self._timer_generation[(node, effect.key)] = generation
                    heapq.heappush(self._heap, (self.now_ms + effect.delay_ms, generation, _TIMER,
                                                node, effect.key, generation, self._epoch[node]))
                case CancelTimer():
                    self._timer_generation.pop((node, effect.key), None)
                case Persist():
                    self.disks[node].extend(effect.records)
                    self._execute(node, list(effect.then))
                case ClientResult():
                    pass

    def _send(self, source: NodeId, to: NodeId, message: Message) -> None:
        self.messages_sent[source] += 1
        if self.measure_bytes:
            self.bytes_sent[source] += len(encode(message))
        network = self.network
        if network.loss and self.rng.random() < network.loss:
            return
        group = self._group
        if group and group.get(source, -1) != group.get(to, -1):
            return
        if to not in self.up:
            return
        delay = self.rng.uniform(network.latency_ms_min, network.latency_ms_max)
        extra = self.slow_ms.get(to)
        if extra:
            delay += extra
        self._push(self.now_ms + delay, _DELIVER, to, source, message, self._epoch[to])
