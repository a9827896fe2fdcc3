"""Bad input never crashes a replica nor breaks its invariants: arbitrary
well-typed paxos messages (hypothesis, from the message annotations) from
arbitrary peers and clients, delivered to a follower and to a leader."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synod.codec.kernel import ClientRequest
from synod.codec.registry import Message
from synod.core.ids import NodeId
from synod.paxos import messages as m
from tests.codec.strategies import message_strategy
from tests.paxos.pump import Cluster

PEER_MESSAGES = (m.PreVote, m.PreVoteReply, m.Prepare, m.Promise, m.Accept, m.Accepted, m.Reject,
                 m.CatchupRequest, m.CatchupReply, m.SnapshotChunk, m.TimeoutNow, m.LeaseRelease)
CLIENT_BODIES = (m.Command, m.Read, m.ChangeMembers, m.TransferLeader)

SOURCES = st.sampled_from([NodeId("n1"), NodeId("n2"), NodeId("n3"), NodeId("x9")])
ANY_MESSAGE = st.one_of(
    *[message_strategy(cls) for cls in PEER_MESSAGES],
    st.builds(lambda request_id, body: ClientRequest(request_id=request_id, body=body),
              st.integers(0, 1 << 31), st.one_of(*[message_strategy(cls) for cls in CLIENT_BODIES])),
)

_cluster: Cluster | None = None


def _warm_cluster() -> Cluster:
    global _cluster
    if _cluster is None:
        _cluster = Cluster(3, seed=31)
        _cluster.wait_leader()
    return _cluster


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(SOURCES, ANY_MESSAGE), min_size=1, max_size=8), st.booleans())
def test_arbitrary_messages_never_crash_a_replica(batch: list[tuple[NodeId, Message]], to_leader: bool) -> None:
    cluster = _warm_cluster()
    leader = cluster.leader() or NodeId("n1")
    target = leader if to_leader else next(n for n in cluster.nodes if n != leader)
    replica = cluster.replicas[target]
    for source, message in batch:
        if source == target:
            continue
        effects = replica.on_message(cluster.local_ms(target), source, message)
        assert isinstance(effects, list)
        replica.check_invariants()
    # Let the group digest whatever it was told without breaking an invariant.
    # (Agreement is not asserted: a well-formed message forged in a member's name
    # is a Byzantine fault, kept out by authenticated links, not by Paxos.)
    cluster.run(20)
