"""Leases under drifting clocks (Paxos Made Live 5.2), driven by the test pump
with chosen clock rates: the old leader's clock runs slow, the others' fast, by
as much as the drift bound allows."""

from __future__ import annotations

import dataclasses

import pytest

from synod.core.faults import enable_mutant
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.messages import PreVote
from synod.paxos.replica import MUTANT_LEASE_IGNORES_DRIFT
from tests.paxos.pump import Cluster

N1 = NodeId("n1")
CONFIG = dataclasses.replace(
    PaxosConfig.sim(), election_timeout_ms=50.0, heartbeat_interval_ms=10.0, lease_ms=300.0,
    clock_drift_bound_ms=30.0, check_quorum_ms=600.0,
)
#: Each clock off by 4.5% (the bound allows 30 / (2 * 300) = 5%).
SLOW, FAST = 0.955, 1.045


def _overlap_after_isolating_the_leader() -> bool:
    """Isolate leader n1 and report whether it still believes its read lease at
    any moment when another replica already leads with a higher ballot."""
    cluster = Cluster(3, seed=21, config=CONFIG)
    cluster.clock_rate = {N1: SLOW, NodeId("n2"): FAST, NodeId("n3"): FAST}
    # Only n1 may win the first election.
    cluster.drop = lambda source, destination, message: isinstance(message, PreVote) and source != N1
    assert cluster.wait_leader() == N1
    cluster.drop = lambda source, destination, message: False
    cluster.run(100)
    for other in cluster.nodes[1:]:
        cluster.blocked |= {(N1, other), (other, N1)}
    old = cluster.replicas[N1]
    overlap = False
    deadline = cluster.now_ms + 3 * CONFIG.lease_ms
    while cluster.now_ms < deadline and cluster.step():
        others = [r for n, r in cluster.replicas.items() if n != N1 and r.is_leader]
        if others and old.has_read_lease(cluster.local_ms(N1)):
            assert all(r.ballot > old.ballot for r in others)
            overlap = True
    assert any(r.is_leader for n, r in cluster.replicas.items() if n != N1), "a new leader was elected"
    return overlap


def test_no_replica_leads_while_an_old_lease_is_believed() -> None:
    assert not _overlap_after_isolating_the_leader()


def test_the_lease_ignores_drift_mutant_lets_an_old_lease_outlive_its_grants() -> None:
    enable_mutant(MUTANT_LEASE_IGNORES_DRIFT)
    assert _overlap_after_isolating_the_leader()


@pytest.mark.parametrize("rate", [0.96, 1.0, 1.04])
def test_a_new_leader_is_elected_soon_after_the_grants_run_out(rate: float) -> None:
    cluster = Cluster(3, seed=22, config=CONFIG)
    cluster.clock_rate = {N1: rate}
    cluster.drop = lambda source, destination, message: isinstance(message, PreVote) and source != N1
    assert cluster.wait_leader() == N1
    cluster.drop = lambda source, destination, message: False
    for other in cluster.nodes[1:]:
        cluster.blocked |= {(N1, other), (other, N1)}
    start = cluster.now_ms
    cluster.run_until(lambda: any(r.is_leader for n, r in cluster.replicas.items() if n != N1))
    assert cluster.now_ms - start < CONFIG.lease_ms + 3 * CONFIG.election_timeout_ms
