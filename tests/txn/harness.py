"""A fault-free simulated cluster of shards for driving the transaction servers
by hand: real ``ShardServer``s in ``synod.sim`` with no loss, no skew, no chaos."""

from __future__ import annotations

import dataclasses
import random

from synod.codec.kernel import ClientReply, ClientRequest
from synod.codec.registry import Message
from synod.core.effects import Effects, Recovered, Send
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.sim import SimConfig, Simulation
from synod.txn.config import TxnConfig
from synod.txn.server import ShardServer, ShardServerFactory
from synod.txn.shardmap import uniform_map

CLIENT = NodeId("c1")


class Recorder:
    """A client core that keeps every reply by request id."""

    def __init__(self, node: NodeId, rng: random.Random) -> None:
        self.replies: dict[int, Message] = {}

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        if isinstance(message, ClientReply):
            self.replies[message.request_id] = message.body
        return []

    def on_timer(self, now_ms: float, key: str) -> Effects:
        return []

    def check_invariants(self) -> None:
        pass


class Shards:
    def __init__(self, shards: int = 2, *, config: TxnConfig | None = None, seed: int = 1) -> None:
        sim_config = SimConfig(loss_probability=0.0, duplicate_probability=0.0, clock_skew_ms_max=0.0,
                               clock_drift_ppm_max=0.0, faults=False, buggify=False)
        self.sim = Simulation(seed, sim_config)
        self.map = uniform_map(shards, 3)
        paxos = dataclasses.replace(PaxosConfig.sim(), election_timeout_ms=50.0, heartbeat_interval_ms=10.0,
                                    lease_ms=100.0, clock_drift_bound_ms=10.0, check_quorum_ms=200.0)
        self.config = config or TxnConfig.sim()
        for shard in self.map.shards:
            factory = ShardServerFactory(group=shard.group, shard_map=self.map, config=self.config,
                                         paxos_config=paxos)
            for node in shard.replicas:
                self.sim.add_node(node, factory)
        self.sim.add_node(CLIENT, Recorder, fault_prone=False)
        self.sim.start()
        self.sim.run_for(800.0)
        self._request_id = 0

    def servers(self, group: str) -> list[ShardServer]:
        found = []
        for node in self.map.shard(group).replicas:
            if self.sim.is_up(node):
                core = self.sim.core(node)
                assert isinstance(core, ShardServer)
                found.append(core)
        return found

    def leader(self, group: str) -> ShardServer:
        for _ in range(50):
            ready = [s for s in self.servers(group) if s.is_ready]
            if ready:
                return ready[0]
            self.sim.run_for(50.0)
        raise AssertionError(f"no ready leader in {group}")

    def send(self, group: str, body: Message, to: NodeId | None = None) -> int:
        self._request_id += 1
        target = to or self.leader(group).node
        self.sim.execute_for(CLIENT, [Send(to=target, message=ClientRequest(request_id=self._request_id, body=body))])
        return self._request_id

    def reply(self, request_id: int) -> Message | None:
        recorder = self.sim.core(CLIENT)
        assert isinstance(recorder, Recorder)
        return recorder.replies.get(request_id)

    def ask(self, group: str, body: Message, wait_ms: float = 100.0, to: NodeId | None = None) -> Message | None:
        request_id = self.send(group, body, to)
        self.sim.run_for(wait_ms)
        return self.reply(request_id)
