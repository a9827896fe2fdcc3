"""A small lock cell in the simulator (no faults unless asked) for tests of the
master glue and the client core: three ``LockServer`` replicas and client nodes
whose ``ClientSession`` a test drives call by call."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from synod.codec.kernel import ClientReply
from synod.codec.registry import Message
from synod.core.effects import Effects, Recovered
from synod.core.ids import NodeId
from synod.lock.config import LockConfig
from synod.lock.messages import Event
from synod.lock.server import LockServer, LockServerFactory
from synod.lock.session import ClientSession
from synod.paxos.config import PaxosConfig
from synod.sim import SimConfig, Simulation

REPLICAS = (NodeId("n1"), NodeId("n2"), NodeId("n3"))


class ClientCore:
    """A simulated client node hosting one ``ClientSession`` at a time."""

    def __init__(self, node: NodeId, rng: random.Random, config: LockConfig) -> None:
        self.node = node
        self.rng = rng
        self.config = config
        self.events: list[Event] = []
        #: Every reply this node got (a test may send raw requests).
        self.replies: list[ClientReply] = []
        self.session = self.new_session()

    def new_session(self) -> ClientSession:
        self.session = ClientSession(self.node, self.rng, servers=REPLICAS, config=self.config,
                                     call_timeout_ms=150.0, on_event=self.events.append)
        return self.session

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        if isinstance(message, ClientReply):
            self.replies.append(message)
        return self.session.on_message(now_ms, source, message)

    def on_timer(self, now_ms: float, key: str) -> Effects:
        return self.session.on_timer(now_ms, key)

    def check_invariants(self) -> None:
        self.session.check_invariants()


class Cell:
    def __init__(self, *, seed: int = 1, clients: int = 2, sim: SimConfig | None = None,
                 config: LockConfig | None = None) -> None:
        self.config = config or LockConfig.sim()
        paxos = dataclasses.replace(PaxosConfig.sim(), election_timeout_ms=100.0, heartbeat_interval_ms=10.0,
                                    lease_ms=100.0, clock_drift_bound_ms=10.0, check_quorum_ms=100.0)
        self.simulation = Simulation(seed, sim or SimConfig.calm())
        factory = LockServerFactory(members=REPLICAS, config=self.config, paxos=paxos)
        for node in REPLICAS:
            self.simulation.add_node(node, factory)
        self.clients = [NodeId(f"c{i}") for i in range(1, clients + 1)]
        config_ = self.config
        for node in self.clients:
            self.simulation.add_node(node, lambda n, rng: ClientCore(n, rng, config_), fault_prone=False)
        self.simulation.start()

    def server(self, node: NodeId) -> LockServer:
        core = self.simulation.core(node)
        assert isinstance(core, LockServer)
        return core

    def client(self, node: NodeId) -> ClientCore:
        core = self.simulation.core(node)
        assert isinstance(core, ClientCore)
        return core

    def master(self) -> LockServer | None:
        for node in REPLICAS:
            if self.simulation.is_up(node) and self.server(node).is_master:
                return self.server(node)
        return None

    def wait_master(self, limit_ms: float = 3000.0) -> LockServer:
        waited = 0.0
        while waited < limit_ms:
            master = self.master()
            if master is not None:
                return master
            self.simulation.run_for(10.0)
            waited += 10.0
        raise AssertionError("no master")

    def act(self, node: NodeId, action: Callable[[ClientSession, float], Effects]) -> None:
        """Run ``action(session, local now)`` on client ``node`` and carry out its effects."""
        client = self.client(node)
        self.simulation.execute_for(node, action(client.session, self.simulation.local_ms(node)))

    def call(self, node: NodeId, action: Callable[[ClientSession, float, Callable[[Message], None]], Effects],
             limit_ms: float = 3000.0) -> Message:
        """Run a call and wait for its result."""
        box: list[Message] = []
        self.act(node, lambda session, now: action(session, now, box.append))
        waited = 0.0
        while not box and waited < limit_ms:
            self.simulation.run_for(1.0)
            waited += 1.0
        assert box, "no result"
        return box[0]

    def open(self, node: NodeId) -> int:
        self.wait_master()
        self.call(node, lambda s, now, done: s.open(now, done))
        session = self.client(node).session
        assert session.usable, session.state
        return session.session
