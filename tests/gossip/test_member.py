"""One test per claim of SWIM / Lifeguard, on a single member fed by hand."""

from __future__ import annotations

import dataclasses

import pytest

from synod.codec.registry import decode, encode
from synod.core.effects import Persist, Recovered
from synod.core.errors import LocalProtocolError
from synod.core.ids import NodeId
from synod.gossip.config import GossipConfig
from synod.gossip.member import (
    TIMER_PROBE,
    TIMER_PROBE_TIMEOUT,
    TIMER_SUSPECT_PREFIX,
    GossipMember,
)
from synod.gossip.messages import (
    Ack,
    Alive,
    Dead,
    IncarnationRecord,
    Left,
    MemberState,
    MemberStatus,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullReply,
    Suspect,
    UserEvent,
)
from synod.gossip.view import EventKind
from tests.gossip.helpers import add_peers, learn, member, piggybacked, sends, timers

B, C, D = NodeId("b"), NodeId("c"), NodeId("d")


def self_alive(core: GossipMember) -> Alive:
    pending = core.queue.pending(core.node)
    assert isinstance(pending, Alive)
    return pending


# ---------------------------------------------------------------- start and restart


def test_start_persists_the_incarnation_before_anything_is_sent() -> None:
    core = GossipMember(NodeId("a"), __import__("random").Random(1), GossipConfig(),
                        seeds=(B,))
    effects = core.start(0.0, Recovered())
    assert len(effects) == 1 and isinstance(effects[0], Persist)
    record = decode(effects[0].records[0])
    assert record == IncarnationRecord(incarnation=1)
    assert any(s.to == B and isinstance(s.message, PushPull) for s in sends(effects))


def test_restart_comes_back_above_every_persisted_incarnation() -> None:
    records = (encode(IncarnationRecord(incarnation=3)), encode(IncarnationRecord(incarnation=7)),
               b"not a gossip record")
    core = member(records=records)
    assert core.incarnation == 8


def test_a_restarted_member_refutes_its_old_life_above_the_highest_seen() -> None:
    core = member()  # incarnation 1, but the cluster remembers us dead at 40
    learn(core, Dead(node=core.node, incarnation=40, source=B))
    assert core.incarnation == 41
    assert self_alive(core).incarnation == 41


# ---------------------------------------------------------------- refutation and incarnations


def test_refutation_raises_the_incarnation() -> None:
    core = member()
    before = core.incarnation
    learn(core, Suspect(node=core.node, incarnation=before, source=B))
    assert core.incarnation == before + 1
    assert self_alive(core).incarnation == before + 1
    assert core.statistics().refutations == 1


def test_a_suspicion_of_our_older_incarnation_needs_no_refutation() -> None:
    core = member()
    learn(core, Suspect(node=core.node, incarnation=core.incarnation, source=B))
    current = core.incarnation
    learn(core, Suspect(node=core.node, incarnation=current - 1, source=C))
    assert core.incarnation == current
    assert core.statistics().refutations == 1


def test_a_forged_dead_for_the_local_node_is_refuted() -> None:
    core = member()
    learn(core, Dead(node=core.node, incarnation=core.incarnation, source=B))
    assert core.incarnation == 2
    assert core.status_of(core.node) is MemberStatus.ALIVE


def test_a_forged_leave_for_the_local_node_is_refuted() -> None:
    core = member()
    learn(core, Left(node=core.node, incarnation=core.incarnation))
    assert core.incarnation == 2
    assert core.status_of(core.node) is MemberStatus.ALIVE


def test_an_alive_of_ours_with_a_higher_incarnation_is_refuted_above_it() -> None:
    core = member()
    learn(core, Alive(node=core.node, incarnation=5, address="elsewhere"))
    assert core.incarnation == 6


def test_refutation_above_a_forged_huge_incarnation_is_bounded() -> None:
    config = GossipConfig(incarnation_jump_max=10)
    core = member(config=config)
    learn(core, Suspect(node=core.node, incarnation=2**60, source=B))
    assert core.incarnation == 1 + 10 + 1


def test_an_incarnation_far_in_the_future_is_ignored_for_others() -> None:
    config = GossipConfig(incarnation_jump_max=10)
    core = member(config=config)
    add_peers(core, "b")
    learn(core, Suspect(node=B, incarnation=1000, source=C))
    learn(core, Dead(node=B, incarnation=1000, source=C))
    learn(core, Alive(node=B, incarnation=1000))
    info = core.view(0.0).get(B)
    assert info is not None and info.status is MemberStatus.ALIVE and info.incarnation == 1
    assert dict(core.statistics().ignored)["incarnation_jump"] == 3


def test_a_suspicion_of_an_older_incarnation_is_ignored() -> None:
    core = member()
    add_peers(core, "b", incarnation=5)
    learn(core, Suspect(node=B, incarnation=4, source=C))
    assert core.status_of(B) is MemberStatus.ALIVE
    assert dict(core.statistics().ignored)["stale_suspicion"] == 1


def test_a_refutation_overrides_the_suspicion() -> None:
    core = member()
    add_peers(core, "b")
    learn(core, Suspect(node=B, incarnation=1, source=C), now_ms=10.0)
    assert core.status_of(B) is MemberStatus.SUSPECT
    effects = learn(core, Alive(node=B, incarnation=2, address="b:7946"), now_ms=20.0)
    assert core.status_of(B) is MemberStatus.ALIVE
    assert any(k == f"{TIMER_SUSPECT_PREFIX}b" for k in
               (e.key for e in effects if hasattr(e, "key")))  # its timer is cancelled
    kinds = [e.kind for e in core.drain_events()]
    assert kinds == [EventKind.SUSPECT, EventKind.ALIVE]


def test_an_alive_of_the_same_incarnation_does_not_refute() -> None:
    core = member()
    add_peers(core, "b")
    learn(core, Suspect(node=B, incarnation=1, source=C))
    learn(core, Alive(node=B, incarnation=1))
    assert core.status_of(B) is MemberStatus.SUSPECT


def test_dead_is_final_for_an_incarnation() -> None:
    core = member()
    add_peers(core, "b")
    learn(core, Dead(node=B, incarnation=1, source=C))
    assert core.status_of(B) is MemberStatus.DEAD
    learn(core, Alive(node=B, incarnation=1), Suspect(node=B, incarnation=1, source=D),
          Suspect(node=B, incarnation=2, source=D))
    assert core.status_of(B) is MemberStatus.DEAD
    learn(core, Alive(node=B, incarnation=2))  # only B itself, one incarnation up, returns
    assert core.status_of(B) is MemberStatus.ALIVE
    assert [e.kind for e in core.drain_events()] == [EventKind.FAILED, EventKind.JOINED]


def test_a_member_is_never_learnt_from_a_rumour_of_its_death() -> None:
    core = member()
    learn(core, Suspect(node=B, incarnation=1, source=C), Dead(node=B, incarnation=1, source=C))
    assert core.status_of(B) is None


# ---------------------------------------------------------------- suspicion (Lifeguard 4.2)


def test_suspicion_timeout_declares_the_member_failed_and_broadcasts_it() -> None:
    # memberlist's suspicion_mult (4) pinned: the formula, not the LAN preset, is the claim.
    core = member(config=GossipConfig(suspicion_mult=4, suspicion_timeout_min_floor_ms=0.0))
    add_peers(core, *(f"p{i}" for i in range(8)))
    effects = learn(core, Suspect(node=NodeId("p0"), incarnation=1, source=C), now_ms=100.0)
    delay = timers(effects)[f"{TIMER_SUSPECT_PREFIX}p0"]
    # n = 9: min = 4 * max(1, log10(9)) * 1000 ms; no confirmations yet: max = 6 * min.
    assert delay == pytest.approx(6 * 4 * 1000)
    core.on_timer(100.0 + delay, f"{TIMER_SUSPECT_PREFIX}p0")
    assert core.status_of(NodeId("p0")) is MemberStatus.DEAD
    dead = core.queue.pending(NodeId("p0"))
    assert isinstance(dead, Dead) and dead.source == core.node


def test_independent_confirmations_shorten_the_suspicion_timeout() -> None:
    # suspicion_mult = 4 wants k = 2 confirmations, so both shorten the timeout.
    core = member(config=GossipConfig(suspicion_mult=4, suspicion_timeout_min_floor_ms=0.0))
    add_peers(core, *(f"p{i}" for i in range(8)))
    first = timers(learn(core, Suspect(node=NodeId("p0"), incarnation=1, source=C)))
    second = timers(learn(core, Suspect(node=NodeId("p0"), incarnation=1, source=D)))
    third = timers(learn(core, Suspect(node=NodeId("p0"), incarnation=1, source=NodeId("e"))))
    key = f"{TIMER_SUSPECT_PREFIX}p0"
    assert first[key] > second[key] > third[key]
    again = timers(learn(core, Suspect(node=NodeId("p0"), incarnation=1, source=D)))
    assert key not in again  # the same confirmer counts once


def test_without_lifeguard_the_suspicion_timeout_is_fixed() -> None:
    core = member(config=GossipConfig(lifeguard=False, suspicion_mult=4,
                                      suspicion_timeout_min_floor_ms=0.0))
    add_peers(core, *(f"p{i}" for i in range(8)))
    first = timers(learn(core, Suspect(node=NodeId("p0"), incarnation=1, source=C)))
    second = timers(learn(core, Suspect(node=NodeId("p0"), incarnation=1, source=D)))
    key = f"{TIMER_SUSPECT_PREFIX}p0"
    assert first[key] == pytest.approx(4 * 1000)
    assert key not in second


# ---------------------------------------------------------------- probing (SWIM 3, Lifeguard 4.1)


def probe_once(core: GossipMember, now_ms: float) -> Ping:
    effects = core.on_timer(now_ms, TIMER_PROBE)
    pings = [s for s in sends(effects) if isinstance(s.message, Ping)]
    assert len(pings) == 1
    ping = pings[0].message
    assert isinstance(ping, Ping)
    return ping


def test_probe_ack_then_no_suspicion() -> None:
    core = member()
    add_peers(core, "b")
    ping = probe_once(core, 1000.0)
    assert ping.target == B
    core.on_message(1001.0, B, Ack(seq=ping.seq))
    probe_once(core, 2000.0)
    assert core.status_of(B) is MemberStatus.ALIVE


def test_missed_ack_leads_to_ping_req_through_k_members_then_suspicion() -> None:
    core = member()
    add_peers(core, *(f"p{i}" for i in range(6)))
    ping = probe_once(core, 1000.0)
    effects = core.on_timer(1500.0, TIMER_PROBE_TIMEOUT)
    requests = [s for s in sends(effects) if isinstance(s.message, PingReq)]
    assert len(requests) == 3
    assert all(s.to != ping.target for s in requests)
    assert all(isinstance(s.message, PingReq) and s.message.target == ping.target
               for s in requests)
    core.on_timer(2000.0, TIMER_PROBE)
    assert core.status_of(ping.target) is MemberStatus.SUSPECT


def test_an_indirect_ack_saves_the_target() -> None:
    core = member()
    add_peers(core, *(f"p{i}" for i in range(6)))
    ping = probe_once(core, 1000.0)
    effects = core.on_timer(1500.0, TIMER_PROBE_TIMEOUT)
    helper = sends(effects)[0].to
    core.on_message(1600.0, helper, Ack(seq=ping.seq))
    core.on_timer(2000.0, TIMER_PROBE)
    assert core.status_of(ping.target) is MemberStatus.ALIVE


def test_ping_req_is_forwarded_and_answered_with_an_ack_or_a_nack() -> None:
    helper = member("h")
    add_peers(helper, "b", "r")
    out = helper.on_message(0.0, NodeId("r"), PingReq(seq=77, target=B))
    [ping] = [s for s in sends(out) if isinstance(s.message, Ping)]
    assert ping.to == B and isinstance(ping.message, Ping)
    forwarded = helper.on_message(5.0, B, Ack(seq=ping.message.seq))
    assert [(s.to, s.message.seq) for s in sends(forwarded)
            if isinstance(s.message, Ack)] == [("r", 77)]
    # A second request whose target stays silent gets a nack before the probe ends.
    out = helper.on_message(10.0, NodeId("r"), PingReq(seq=78, target=B))
    [nack_timer] = [k for k in timers(out) if k.startswith("gossip.indirect/")]
    nacked = helper.on_timer(410.0, nack_timer)
    assert [(s.to, s.message.seq) for s in sends(nacked) if isinstance(s.message, Nack)] \
        == [("r", 78)]


def test_a_ping_for_another_member_is_not_acked() -> None:
    core = member()
    assert not [s for s in sends(core.on_message(0.0, B, Ping(seq=1, target=C)))
                if isinstance(s.message, Ack)]
    assert [s.to for s in sends(core.on_message(0.0, B, Ping(seq=2, target=core.node)))
            if isinstance(s.message, Ack)] == [B]


def test_local_health_rises_on_missed_nacks_and_stretches_the_probe_interval() -> None:
    core = member()
    add_peers(core, *(f"p{i}" for i in range(6)))
    probe_once(core, 1000.0)
    core.on_timer(1500.0, TIMER_PROBE_TIMEOUT)  # 3 ping-reqs, no nack comes back
    effects = core.on_timer(2000.0, TIMER_PROBE)
    assert core.awareness.score == 3
    assert timers(effects)[TIMER_PROBE] == 4 * 1000.0
    assert timers(effects)[TIMER_PROBE_TIMEOUT] == 4 * 500.0


def test_nacks_show_our_path_works_so_health_does_not_drop() -> None:
    core = member()
    add_peers(core, *(f"p{i}" for i in range(6)))
    ping = probe_once(core, 1000.0)
    effects = core.on_timer(1500.0, TIMER_PROBE_TIMEOUT)
    for send in sends(effects):
        core.on_message(1900.0, send.to, Nack(seq=ping.seq))
    core.on_timer(2000.0, TIMER_PROBE)
    assert core.awareness.score == 0
    assert core.status_of(ping.target) is MemberStatus.SUSPECT


def test_a_successful_probe_heals_local_health() -> None:
    core = member()
    add_peers(core, "b")
    core.awareness.apply_delta(3)
    ping = probe_once(core, 1000.0)
    core.on_message(1001.0, B, Ack(seq=ping.seq))
    assert core.awareness.score == 2


def test_refuting_lowers_local_health() -> None:
    core = member()
    learn(core, Suspect(node=core.node, incarnation=1, source=B))
    assert core.awareness.score == 1


def test_buddy_system_tells_the_suspect_first() -> None:
    core = member()
    add_peers(core, "b")
    learn(core, Suspect(node=B, incarnation=1, source=C))
    ping = probe_once(core, 1000.0)
    assert ping.target == B
    assert ping.updates[0] == Suspect(node=B, incarnation=1, source=core.node)


# ---------------------------------------------------------------- dissemination


def test_updates_are_piggybacked_on_acks() -> None:
    core = member()
    add_peers(core, "b")
    learn(core, Suspect(node=C, incarnation=1, source=B))  # unknown: ignored
    learn(core, Alive(node=C, incarnation=1))
    effects = core.on_message(0.0, B, Ping(seq=1, target=core.node))
    assert Alive(node=C, incarnation=1) in piggybacked(effects)


def test_packets_respect_the_byte_bound() -> None:
    config = GossipConfig(packet_bytes_max=400, meta_bytes_max=100, user_event_bytes_max=100)
    core = member(config=config)
    add_peers(core, *(f"p{i:03d}" for i in range(100)))
    effects = core.on_message(0.0, NodeId("p001"), Ping(seq=1, target=core.node))
    [ack] = sends(effects)
    assert len(encode(ack.message)) <= 400
    assert isinstance(ack.message, Ack) and ack.message.updates


# ---------------------------------------------------------------- metadata and user events


def test_metadata_over_the_limit_is_refused_locally_and_from_peers() -> None:
    config = GossipConfig(meta_bytes_max=16)
    with pytest.raises(LocalProtocolError):
        member(config=config, meta=b"x" * 17)
    core = member(config=config)
    with pytest.raises(LocalProtocolError):
        core.set_meta(0.0, b"y" * 17)
    learn(core, Alive(node=B, incarnation=1, meta=b"z" * 17))
    assert core.status_of(B) is None
    assert dict(core.statistics().ignored)["meta_too_large"] == 1


def test_metadata_changes_at_run_time_raise_the_incarnation() -> None:
    core = member()
    core.set_meta(0.0, b"role=db")
    assert core.incarnation == 2 and self_alive(core).meta == b"role=db"
    observer = member("o")
    learn(observer, Alive(node=B, incarnation=1, meta=b"v1"))
    learn(observer, Alive(node=B, incarnation=2, meta=b"v2"))
    events = observer.drain_events()
    assert [(e.kind, e.meta) for e in events] == [(EventKind.JOINED, b"v1"),
                                                  (EventKind.UPDATED, b"v2")]


def test_user_events_are_delivered_once_and_bounded() -> None:
    core = member(config=GossipConfig(user_event_bytes_max=32))
    with pytest.raises(LocalProtocolError):
        core.send_user_event(0.0, "deploy", b"x" * 40)
    event = UserEvent(origin=B, event_id=1, name="deploy", payload=b"v42")
    learn(core, event)
    learn(core, event)
    users = [e for e in core.drain_events() if e.kind is EventKind.USER]
    assert [(e.node, e.name, e.payload) for e in users] == [(B, "deploy", b"v42")]
    learn(core, UserEvent(origin=B, event_id=2, name="big", payload=b"x" * 40))
    assert dict(core.statistics().ignored)["user_event_too_large"] == 1


# ---------------------------------------------------------------- join, push-pull, leave


def test_push_pull_answers_with_the_table_and_merges_dead_rows_as_suspicions() -> None:
    core = member()
    add_peers(core, "b", "c")
    rows = (MemberState(node=B, address="", incarnation=1, status=MemberStatus.DEAD),
            MemberState(node=D, address="d:1", incarnation=3, status=MemberStatus.ALIVE))
    effects = core.on_message(0.0, C, PushPull(join=False, members=rows))
    [reply] = sends(effects)
    assert reply.to == C and isinstance(reply.message, PushPullReply)
    assert {r.node for r in reply.message.members} == {"a", "b", "c"}  # before the merge
    assert core.status_of(B) is MemberStatus.SUSPECT  # a stale table cannot kill outright
    assert core.status_of(D) is MemberStatus.ALIVE


def test_an_unsolicited_push_pull_reply_is_ignored() -> None:
    core = member()
    rows = (MemberState(node=D, address="", incarnation=1, status=MemberStatus.ALIVE),)
    core.on_message(0.0, C, PushPullReply(members=rows))
    assert core.status_of(D) is None


def test_join_retries_until_a_seed_answers() -> None:
    core = member(seeds=("s",))
    retry = core.on_timer(1000.0, "gossip.join")
    assert [s.to for s in sends(retry)] == ["s"]
    rows = (MemberState(node=NodeId("s"), address="", incarnation=1,
                        status=MemberStatus.ALIVE),)
    core.on_message(1001.0, NodeId("s"), PushPullReply(members=rows))
    assert core.status_of(NodeId("s")) is MemberStatus.ALIVE
    assert sends(core.on_timer(2000.0, "gossip.join")) == []


def test_graceful_leave_broadcasts_left_and_is_seen_as_left() -> None:
    core = member()
    add_peers(core, "b", "c", "d")
    effects = core.leave(0.0)
    assert Left(node=core.node, incarnation=1) in piggybacked(effects)
    observer = member("o")
    add_peers(observer, "a")
    learn(observer, Left(node=NodeId("a"), incarnation=1))
    assert observer.status_of(NodeId("a")) is MemberStatus.LEFT
    assert [e.kind for e in observer.drain_events()] == [EventKind.LEFT]
    with pytest.raises(LocalProtocolError):
        core.set_meta(1.0, b"")


def test_invariants_hold_through_a_busy_sequence() -> None:
    core = member()
    add_peers(core, *(f"p{i}" for i in range(5)))
    learn(core, Suspect(node=NodeId("p1"), incarnation=1, source=B))
    learn(core, Dead(node=NodeId("p2"), incarnation=1, source=B))
    learn(core, Left(node=NodeId("p3"), incarnation=1))
    learn(core, Suspect(node=core.node, incarnation=1, source=B))
    core.check_invariants()
    stats = core.statistics()
    assert (stats.members_alive, stats.members_suspect, stats.members_dead,
            stats.members_left) == (3, 1, 1, 1)


def test_config_presets_are_valid_and_differ() -> None:
    assert GossipConfig.lan() == GossipConfig()
    assert GossipConfig.local().probe_interval_ms < GossipConfig.lan().probe_interval_ms
    assert dataclasses.replace(GossipConfig.sim()).push_pull_interval_ms == 10_000.0


def test_the_sender_of_a_stale_rumour_is_told_the_newer_alive() -> None:
    core = member()
    add_peers(core, "b", incarnation=3)
    effects = learn(core, Dead(node=B, incarnation=2, source=C), source="z")
    assert [(s.to, u) for s in sends(effects) for u in getattr(s.message, "updates", ())] \
        == [("z", Alive(node=B, incarnation=3, address="b:7946"))]
    learn(core, Suspect(node=core.node, incarnation=core.incarnation, source=C))  # refute: 2
    effects = learn(core, Dead(node=core.node, incarnation=1, source=C), source="z")
    corrections = [u for s in sends(effects) if s.to == "z" for u in getattr(s.message, "updates", ())]
    assert corrections == [Alive(node=core.node, incarnation=2, address="a:7946")]


def test_a_datagram_from_a_stranger_starts_a_push_pull_with_it() -> None:
    core = member()
    effects = core.on_message(100.0, NodeId("x"), Ping(seq=1, target=core.node))
    pulls = [s.to for s in sends(effects) if isinstance(s.message, PushPull)]
    assert pulls == ["x"]
    again = core.on_message(150.0, NodeId("y"), Ping(seq=2, target=core.node))
    assert not [s for s in sends(again) if isinstance(s.message, PushPull)]  # rate-limited
    add_peers(core, "b")
    later = core.on_message(1000.0, B, Ping(seq=3, target=core.node))
    assert not [s for s in sends(later) if isinstance(s.message, PushPull)]  # b is known
