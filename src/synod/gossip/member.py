"""The SWIM + Lifeguard member: a sans-IO ``synod.core.Core``.

Theory of operation
-------------------
One ``GossipMember`` per node. It follows SWIM (Das, Gupta, Motivala 2002) with
the Lifeguard refinements (Dadgar et al. 2017), as hashicorp/memberlist does;
each concern lives in its own module (``state``: member lifecycle and probe
order; ``broadcast``: the retransmit-limited queue; ``suspicion``: dynamic
suspicion timeouts; ``awareness``: local health).

*Failure detection* (SWIM section 3). Every probe interval (stretched by the
local health multiplier) we conclude the previous probe and ping the next member
of a shuffled round-robin. No ack within the probe timeout: we ask
``indirect_checks`` random members to ping it for us (ping-req); they forward its
ack, or a nack if it stays silent. No ack by the end of the interval: we suspect
it, and broadcast the suspicion.

*Suspicion and refutation* (SWIM section 4.2). A suspicion names an
incarnation. The suspect, on hearing it, refutes by broadcasting "alive" at a
higher incarnation, which overrides the suspicion everywhere. Otherwise, when
its suspicion timer expires, a member declares it dead ("failed") and broadcasts
that verdict, final for that incarnation. Lifeguard: timers start long and
shorten with each independent confirmation (``suspicion``), a member that
refutes or misses acks slows down (``awareness``), and a probe of a suspect
carries the suspicion first (the buddy system), so the suspect learns it at once.

*Dissemination* (SWIM section 4.1). Every update we learn (or make) is queued
in the ``BroadcastQueue`` and piggybacked on our pings, acks, ping-reqs, nacks,
and on a gossip round every ``gossip_interval_ms`` to ``gossip_nodes`` random
members (memberlist's addition, which makes dissemination independent of the
probe rate).

*Anti-entropy*. Every (scaled) ``push_pull_interval_ms`` we send our whole table to
one random member, which merges it and answers with its own. "Dead" rows merge as
suspicions, so a stale table can never kill anyone outright. Joining is a
push-pull with each seed.

*Our own incarnation*. At start it is one above the highest we persisted
(``Persist`` before any message), so a restarted member outranks its old self;
and whenever we hear anything about ourselves that is not our current alive
(a suspicion, a forged death or leave, an alive of another incarnation), we
refute above it, but never by more than ``incarnation_jump_max`` above our own,
so a forged huge number cannot push us out of range.

*Events*. Membership changes are queued as ``MemberEvent``s, drained by the
driver (see ``synod.gossip.view``). Nothing in this module does I/O: time comes
in as ``now_ms``, randomness from the ``random.Random`` the driver gives us.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict, deque
from enum import Enum
from typing import assert_never

from synod.codec.registry import Message, decode, encode
from synod.core.effects import CancelTimer, Effects, Persist, Recovered, Send, SetTimer
from synod.core.errors import LocalProtocolError, RemoteProtocolError, invariant
from synod.core.faults import declare_mutant, mutant
from synod.core.ids import NodeId
from synod.gossip.awareness import Awareness
from synod.gossip.broadcast import BroadcastQueue
from synod.gossip.config import GossipConfig
from synod.gossip.messages import (
    Ack,
    Alive,
    Dead,
    Gossip,
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
    Update,
    UserEvent,
)
from synod.gossip.state import Member, MemberTable, Transition
from synod.gossip.suspicion import (
    Suspicion,
    confirmations_wanted,
    suspicion_timeout_min_ms,
)
from synod.gossip.view import (
    EventKind,
    GossipStatistics,
    MemberEvent,
    MemberInfo,
    MembershipView,
)

REFUTE_WITHOUT_INCARNATION = declare_mutant(
    "gossip.refute_without_incarnation",
    "a suspected member refutes by re-sending alive at its current incarnation",
)
ACCEPT_OLDER_SUSPICION = declare_mutant(
    "gossip.accept_older_suspicion",
    "a suspicion of an older (already refuted) incarnation is accepted",
)

TIMER_PROBE = "gossip.probe"
TIMER_PROBE_TIMEOUT = "gossip.probe_timeout"
TIMER_GOSSIP = "gossip.gossip"
TIMER_PUSH_PULL = "gossip.push_pull"
TIMER_JOIN = "gossip.join"
TIMER_RECONNECT = "gossip.reconnect"
TIMER_SUSPECT_PREFIX = "gossip.suspect/"
TIMER_INDIRECT_PREFIX = "gossip.indirect/"

#: Bytes reserved in a packet for the primary message around the piggybacked updates.
PRIMARY_BYTES = 64
#: Outstanding push-pull exchanges we remember (replies from others are ignored).
PUSH_PULL_PENDING_MAX = 16
#: Smallest gap between two push-pulls started because a stranger spoke to us.
STRANGER_PULL_MS = 200.0
#: Corrections (newer alives answering stale rumours) sent back per received datagram.
CORRECTIONS_MAX = 8
#: User event ids are ``boot incarnation * EVENT_ID_STRIDE + counter``, unique across restarts.
EVENT_ID_STRIDE = 1 << 24


class Role(Enum):
    STOPPED = "stopped"  # built, not started
    ACTIVE = "active"  # probing and gossiping
    LEFT = "left"  # left gracefully: only spreads its leave and answers pings


ALIVE, SUSPECT, DEAD, LEFT = (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD,
                              MemberStatus.LEFT)


class _Probe:
    __slots__ = ("acked", "expected_nacks", "incarnation", "nacks", "seq", "target")

    def __init__(self, seq: int, target: NodeId, incarnation: int) -> None:
        self.seq = seq
        self.target = target
        self.incarnation = incarnation
        self.acked = False
        self.nacks = 0
        self.expected_nacks = 0


class _Indirect:
    __slots__ = ("nacked", "requester", "requester_seq", "target")

    def __init__(self, requester: NodeId, requester_seq: int, target: NodeId) -> None:
        self.requester = requester
        self.requester_seq = requester_seq
        self.target = target
        self.nacked = False


class GossipMember:
    """One SWIM member (``synod.core.Core``). See the module comment."""

    def __init__(self, node: NodeId, rng: random.Random, config: GossipConfig | None = None,
                 *, address: str = "", meta: bytes = b"",
                 seeds: tuple[NodeId, ...] = ()) -> None:
        self.node = node
        self.rng = rng
        self.config = config if config is not None else GossipConfig()
        if len(meta) > self.config.meta_bytes_max:
            raise LocalProtocolError(
                f"metadata of {len(meta)} bytes over meta_bytes_max {self.config.meta_bytes_max}")
        self.address = address
        self.seeds = tuple(seed for seed in seeds if seed != node)
        self.role = Role.STOPPED
        self.boot_incarnation = 0
        self.awareness = Awareness(self.config.awareness_max_multiplier)
        self.queue = BroadcastQueue(retransmit_mult=self.config.retransmit_mult,
                                    queue_max=self.config.broadcast_queue_max)
        self.table = MemberTable(Member(node, address, 0, meta, 0.0))
        self._suspicions: dict[NodeId, Suspicion] = {}
        self._probe: _Probe | None = None
        self._indirect: dict[int, _Indirect] = {}
        self._push_pull_pending: OrderedDict[NodeId, float] = OrderedDict()
        self._join_attempts = 0
        self._joined = False
        self._seq = 0
        self._event_counter = 0
        self._events: deque[MemberEvent] = deque()
        self._events_seen: OrderedDict[tuple[NodeId, int], None] = OrderedDict()
        self._counts: dict[str, int] = {}
        self._ignored: dict[str, int] = {}
        self._corrections: dict[NodeId, Alive] = {}
        self._stranger_pull_ms = -STRANGER_PULL_MS
        self._out: Effects = []

    # ================================================================ Core

    @property
    def local(self) -> Member:
        return self.table.local

    @property
    def incarnation(self) -> int:
        return self.table.local.incarnation

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        invariant(self.role is Role.STOPPED, "start called twice")
        persisted = 0
        for record in recovered.records:
            try:
                decoded = decode(record)
            except RemoteProtocolError:
                continue  # not ours (another block shares the log) or damaged
            if isinstance(decoded, IncarnationRecord):
                persisted = max(persisted, decoded.incarnation)
        self.boot_incarnation = persisted + 1
        self.local.incarnation = self.boot_incarnation
        self.local.status_ms = now_ms
        self.become_active()
        self._enqueue_self_alive()
        cfg = self.config
        # Random phases, so members started together do not probe in lockstep.
        then: Effects = [
            SetTimer(key=TIMER_PROBE, delay_ms=self.rng.uniform(0, cfg.probe_interval_ms)),
            SetTimer(key=TIMER_GOSSIP, delay_ms=self.rng.uniform(0, cfg.gossip_interval_ms)),
        ]
        if cfg.push_pull_interval_ms > 0:
            then.append(SetTimer(key=TIMER_PUSH_PULL, delay_ms=self.rng.uniform(
                0.5 * cfg.push_pull_interval_ms, cfg.push_pull_interval_ms)))
        if cfg.reconnect_interval_ms > 0:
            then.append(SetTimer(key=TIMER_RECONNECT, delay_ms=self.rng.uniform(
                0.5 * cfg.reconnect_interval_ms, cfg.reconnect_interval_ms)))
        self._join_round(now_ms)
        then += self._take()
        if not cfg.persist_incarnation:
            return then
        record = encode(IncarnationRecord(incarnation=self.boot_incarnation))
        return [Persist(records=(record,), then=tuple(then))]

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        if self.role is Role.STOPPED:
            self._ignore("not_started")
            return []
        if self.role is Role.LEFT and not isinstance(message, Ping):
            self._ignore("after_leave")
            return []
        self._count("messages_received")
        self._pull_if_stranger(now_ms, source, message)
        match message:
            case Ping():
                self._apply_updates(now_ms, message.updates)
                self._on_ping(source, message)
            case Ack():
                self._apply_updates(now_ms, message.updates)
                self._on_ack(now_ms, message)
            case PingReq():
                self._apply_updates(now_ms, message.updates)
                self._on_ping_req(source, message)
            case Nack():
                self._apply_updates(now_ms, message.updates)
                if self._probe is not None and self._probe.seq == message.seq:
                    self._probe.nacks += 1
                else:
                    self._ignore("stale_nack")
            case Gossip():
                self._apply_updates(now_ms, message.updates)
            case PushPull():
                # Refute what they believe of us first, so that our answer already
                # carries the refutation; then answer with our table, then merge theirs.
                self._merge_own_row(now_ms, source, message.members)
                self._send(source, PushPullReply(members=self._state_rows()), piggyback=False)
                self._merge(now_ms, source, message.members)
            case PushPullReply():
                if self._push_pull_pending.pop(source, None) is None:
                    self._ignore("unsolicited_push_pull_reply")
                else:
                    self._merge(now_ms, source, message.members)
                    self._note_joined()
            case _:
                self._ignore("unknown_message")
        self._send_corrections(source)
        return self._take()

    def on_timer(self, now_ms: float, key: str) -> Effects:
        if self.role is Role.STOPPED:
            return []
        if key == TIMER_PROBE:
            self._on_probe_tick(now_ms)
        elif key == TIMER_PROBE_TIMEOUT:
            self._on_probe_timeout()
        elif key == TIMER_GOSSIP:
            self._on_gossip_tick(now_ms)
        elif key == TIMER_PUSH_PULL:
            self._on_push_pull_tick(now_ms)
        elif key == TIMER_RECONNECT:
            self._on_reconnect_tick(now_ms)
        elif key == TIMER_JOIN:
            if not self._joined and self.role is Role.ACTIVE:
                self._join_round(now_ms)
        elif key.startswith(TIMER_SUSPECT_PREFIX):
            self._on_suspicion_timeout(now_ms, NodeId(key[len(TIMER_SUSPECT_PREFIX):]))
        elif key.startswith(TIMER_INDIRECT_PREFIX):
            self._on_indirect_timeout(int(key[len(TIMER_INDIRECT_PREFIX):]))
        else:
            self._ignore("unknown_timer")
        self._corrections.clear()  # only a received rumour has a sender to correct
        return self._take()

    def check_invariants(self) -> None:
        self.table.check()
        self.queue.check()
        local = self.local
        invariant(local.incarnation >= self.boot_incarnation, "our incarnation went down")
        if self.role is Role.ACTIVE:
            invariant(local.status is ALIVE, "an active member must see itself alive")
        invariant(len(self._suspicions) == self.table.count(SUSPECT),
                  "every suspect needs exactly one suspicion timer")
        invariant(0 <= self.awareness.score < self.config.awareness_max_multiplier,
                  "awareness out of range")
        invariant(len(self._indirect) <= self.config.indirect_pending_max,
                  "indirect probes over their bound")
        invariant(len(self._events) <= self.config.event_queue_max, "event queue over its bound")
        invariant(len(self.table) <= self.config.members_max, "member table over its bound")
        invariant(self._probe is None or self._probe.target != self.node, "probing ourselves")

    # ================================================================ roles

    def become_active(self) -> None:
        invariant(self.role is Role.STOPPED, f"become_active from {self.role.value}")
        self.role = Role.ACTIVE

    def become_left(self, now_ms: float) -> None:
        invariant(self.role is Role.ACTIVE, f"become_left from {self.role.value}")
        self.role = Role.LEFT
        self.table.move(self.local, Transition.LEAVE, self.local.incarnation, now_ms)

    # ================================================================ API

    def join(self, now_ms: float, seeds: tuple[NodeId, ...]) -> Effects:
        """Join (again) through ``seeds``: a push-pull with each, retried until one answers."""
        if self.role is not Role.ACTIVE:
            raise LocalProtocolError(f"join while {self.role.value}")
        self.seeds = tuple(seed for seed in seeds if seed != self.node)
        self._joined = False
        self._join_attempts = 0
        self._join_round(now_ms)
        return self._take()

    def leave(self, now_ms: float) -> Effects:
        """Leave gracefully: broadcast our leave at once to ``gossip_nodes`` members,
        stop probing; the driver may stop the node once ``leave_spread()``."""
        if self.role is not Role.ACTIVE:
            raise LocalProtocolError(f"leave while {self.role.value}")
        self.become_left(now_ms)
        self.queue.enqueue(self.node, Left(node=self.node, incarnation=self.local.incarnation))
        self._out += [CancelTimer(key=TIMER_PROBE), CancelTimer(key=TIMER_PROBE_TIMEOUT),
                      CancelTimer(key=TIMER_PUSH_PULL), CancelTimer(key=TIMER_JOIN),
                      CancelTimer(key=TIMER_RECONNECT)]
        self._probe = None
        self._gossip_round(now_ms)
        return self._take()

    def leave_spread(self) -> bool:
        """True once our leave has been sent as many times as the queue allows."""
        return self.role is Role.LEFT and self.queue.pending(self.node) is None

    def set_meta(self, now_ms: float, meta: bytes) -> Effects:
        """Change our metadata at run time (raises our incarnation and broadcasts it)."""
        if len(meta) > self.config.meta_bytes_max:
            raise LocalProtocolError(
                f"metadata of {len(meta)} bytes over meta_bytes_max {self.config.meta_bytes_max}")
        if self.role is not Role.ACTIVE:
            raise LocalProtocolError(f"set_meta while {self.role.value}")
        self.local.meta = meta
        self.local.incarnation += 1
        self._enqueue_self_alive()
        self._emit(EventKind.UPDATED, self.node, now_ms, meta=meta)
        return self._take()

    def send_user_event(self, now_ms: float, name: str, payload: bytes = b"") -> Effects:
        """Broadcast a user event to every member (and deliver it locally)."""
        size = len(name.encode()) + len(payload)
        if size > self.config.user_event_bytes_max:
            raise LocalProtocolError(
                f"user event of {size} bytes over user_event_bytes_max "
                f"{self.config.user_event_bytes_max}")
        if self.role is not Role.ACTIVE:
            raise LocalProtocolError(f"send_user_event while {self.role.value}")
        self._event_counter += 1
        invariant(self._event_counter < EVENT_ID_STRIDE, "user event ids exhausted for this boot")
        event = UserEvent(origin=self.node,
                          event_id=self.boot_incarnation * EVENT_ID_STRIDE + self._event_counter,
                          name=name, payload=payload)
        self._on_user_event(now_ms, event)
        return self._take()

    def restore_snapshot(self, now_ms: float, rows: tuple[MemberState, ...]) -> Effects:
        """Learn members from a saved membership snapshot (as Serf's ``-snapshot``
        does on restart, and as the simulator does to start a converged cluster).
        Unknown alive rows are added quietly: they are not news to anyone, so they
        are neither broadcast nor reported as events. Everything else is ignored;
        probing and push-pull then correct whatever the snapshot got wrong."""
        if self.role is not Role.ACTIVE:
            raise LocalProtocolError(f"restore_snapshot while {self.role.value}")
        cfg = self.config
        for row in rows:
            if (row.status is not ALIVE or row.node == self.node
                    or self.table.get(row.node) is not None
                    or len(row.meta) > cfg.meta_bytes_max or len(self.table) >= cfg.members_max):
                continue
            self.table.join(row.node, row.address, row.incarnation, row.meta, now_ms, self.rng)
        if len(self.table) > 1:
            self._note_joined()
        return self._take()

    def view(self, now_ms: float) -> MembershipView:
        members = tuple(
            MemberInfo(node=m.node, address=m.address, incarnation=m.incarnation,
                       status=m.status, meta=m.meta, status_ms=m.status_ms)
            for m in sorted(self.table.members(), key=lambda m: m.node))
        return MembershipView(local=self.node, at_ms=now_ms, members=members)

    def status_of(self, node: NodeId) -> MemberStatus | None:
        """Our belief about ``node`` (None: unknown), in O(1)."""
        member = self.table.get(node)
        return member.status if member is not None else None

    def drain_events(self) -> list[MemberEvent]:
        """Every membership event since the last drain, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def statistics(self) -> GossipStatistics:
        c = self._counts.get
        return GossipStatistics(
            node=self.node, incarnation=self.local.incarnation, awareness=self.awareness.score,
            members_alive=self.table.count(ALIVE), members_suspect=self.table.count(SUSPECT),
            members_dead=self.table.count(DEAD), members_left=self.table.count(LEFT),
            broadcast_queue=len(self.queue), messages_sent=c("messages_sent", 0),
            updates_sent=self.queue.sent, probes=c("probes", 0),
            probes_failed=c("probes_failed", 0), indirect_probes=c("indirect_probes", 0),
            suspicions=c("suspicions", 0), refutations=c("refutations", 0),
            events_dropped=c("events_dropped", 0),
            ignored=tuple(sorted(self._ignored.items())))

    # ================================================================ probing

    def _on_probe_tick(self, now_ms: float) -> None:
        if self.role is not Role.ACTIVE:
            return
        self._conclude_probe(now_ms)
        cfg = self.config
        self._out.append(SetTimer(key=TIMER_PROBE,
                                  delay_ms=self.awareness.scale_ms(cfg.probe_interval_ms)))
        target, _reaped = self.table.next_probe_target(now_ms, cfg.tombstone_ms, self.rng)
        if target is None:
            return
        self._seq += 1
        probe = _Probe(self._seq, target.node, target.incarnation)
        self._probe = probe
        self._count("probes")
        first: tuple[Update, ...] = ()
        if target.status is SUSPECT and cfg.lifeguard:
            # Buddy system: tell the suspect first, so it can refute at once.
            first = (Suspect(node=target.node, incarnation=target.incarnation, source=self.node),)
        updates = first + tuple(self._piggyback(self.config.packet_bytes_max - 96))
        self._send_raw(target.node, Ping(seq=probe.seq, target=target.node, updates=updates))
        self._out.append(SetTimer(key=TIMER_PROBE_TIMEOUT,
                                  delay_ms=self.awareness.scale_ms(cfg.probe_timeout_ms)))

    def _on_probe_timeout(self) -> None:
        probe = self._probe
        if probe is None or probe.acked or self.role is not Role.ACTIVE:
            return
        helpers = self.table.random_members(
            self.rng, self.config.indirect_checks,
            lambda m: m.status is ALIVE and m.node != probe.target)
        for helper in helpers:
            self._send(helper.node, PingReq(seq=probe.seq, target=probe.target))
        self._count("indirect_probes", len(helpers))
        if self.config.lifeguard:
            probe.expected_nacks = len(helpers)

    def _conclude_probe(self, now_ms: float) -> None:
        probe = self._probe
        self._probe = None
        if probe is None or probe.acked:
            return
        self._count("probes_failed")
        if self.config.lifeguard:
            if probe.expected_nacks > 0:
                self.awareness.apply_delta(max(0, probe.expected_nacks - probe.nacks))
            else:
                self.awareness.apply_delta(1)
        self._on_suspect(now_ms, Suspect(node=probe.target, incarnation=probe.incarnation,
                                               source=self.node))

    def _on_ping(self, source: NodeId, ping: Ping) -> None:
        if ping.target != self.node:
            self._ignore("ping_for_another_member")
            return
        self._send(source, Ack(seq=ping.seq))

    def _on_ack(self, now_ms: float, ack: Ack) -> None:
        probe = self._probe
        if probe is not None and probe.seq == ack.seq:
            if not probe.acked:
                probe.acked = True
                if self.config.lifeguard:
                    self.awareness.apply_delta(-1)
                self._out.append(CancelTimer(key=TIMER_PROBE_TIMEOUT))
            return
        indirect = self._indirect.pop(ack.seq, None)
        if indirect is not None:
            self._send(indirect.requester, Ack(seq=indirect.requester_seq))
            self._out.append(CancelTimer(key=f"{TIMER_INDIRECT_PREFIX}{ack.seq}"))
            return
        self._ignore("stale_ack")

    def _on_ping_req(self, source: NodeId, request: PingReq) -> None:
        if request.target == self.node or self.role is not Role.ACTIVE:
            self._ignore("ping_req_not_applicable")
            return
        if len(self._indirect) >= self.config.indirect_pending_max:
            self._ignore("indirect_probes_full")
            return
        self._seq += 1
        self._indirect[self._seq] = _Indirect(source, request.seq, request.target)
        self._send(request.target, Ping(seq=self._seq, target=request.target))
        # Nack a little before the requester's interval ends so the nack still counts.
        self._out.append(SetTimer(key=f"{TIMER_INDIRECT_PREFIX}{self._seq}",
                                  delay_ms=0.8 * self.config.probe_timeout_ms))

    def _on_indirect_timeout(self, seq: int) -> None:
        indirect = self._indirect.get(seq)
        if indirect is None:
            return
        if not indirect.nacked:
            indirect.nacked = True
            self._send(indirect.requester, Nack(seq=indirect.requester_seq))
            # Keep forwarding a late ack until the requester's probe is over.
            self._out.append(SetTimer(key=f"{TIMER_INDIRECT_PREFIX}{seq}",
                                      delay_ms=self.config.probe_timeout_ms))
            return
        del self._indirect[seq]

    # ================================================================ suspicion

    def _start_suspicion(self, now_ms: float, member: Member, incarnation: int,
                         accuser: NodeId) -> None:
        cfg = self.config
        members = self.table.live_count()
        min_ms = suspicion_timeout_min_ms(cfg.suspicion_mult, members, cfg.probe_interval_ms,
                                          cfg.suspicion_timeout_min_floor_ms)
        if cfg.lifeguard:
            k = confirmations_wanted(cfg.suspicion_mult, members)
            max_ms = cfg.suspicion_max_timeout_mult * min_ms
        else:
            k, max_ms = 0, min_ms
        suspicion = Suspicion(accuser=accuser, incarnation=incarnation, k=k, min_ms=min_ms,
                              max_ms=max_ms, start_ms=now_ms)
        self._suspicions[member.node] = suspicion
        self._count("suspicions")
        self._arm_suspicion(now_ms, member.node, suspicion)

    def _arm_suspicion(self, now_ms: float, node: NodeId, suspicion: Suspicion) -> None:
        delay = max(0.0, suspicion.deadline_ms() - now_ms)
        self._out.append(SetTimer(key=f"{TIMER_SUSPECT_PREFIX}{node}", delay_ms=delay))

    def _end_suspicion(self, node: NodeId) -> None:
        if self._suspicions.pop(node, None) is not None:
            self._out.append(CancelTimer(key=f"{TIMER_SUSPECT_PREFIX}{node}"))

    def _on_suspicion_timeout(self, now_ms: float, node: NodeId) -> None:
        suspicion = self._suspicions.get(node)
        member = self.table.get(node)
        if suspicion is None or member is None or member.status is not SUSPECT:
            return
        invariant(member.incarnation == suspicion.incarnation,
                  "suspicion and member incarnation disagree")
        self._on_dead(now_ms, Dead(node=node, incarnation=member.incarnation, source=self.node))

    # ================================================================ updates

    def _apply_updates(self, now_ms: float, updates: tuple[Update, ...]) -> None:
        for update in updates:
            self._apply_update(now_ms, update)

    def _apply_update(self, now_ms: float, update: Update) -> None:
        match update:
            case Alive():
                self._on_alive(now_ms, update)
            case Suspect():
                self._on_suspect(now_ms, update)
            case Dead():
                self._on_dead(now_ms, update)
            case Left():
                self._on_left(now_ms, update)
            case UserEvent():
                self._on_user_event(now_ms, update)
            case _:
                assert_never(update)

    def _on_alive(self, now_ms: float, alive: Alive) -> None:
        cfg = self.config
        if alive.node == self.node:
            local = self.local
            if self.role is Role.ACTIVE and (
                    alive.incarnation > local.incarnation
                    or (alive.incarnation == local.incarnation
                        and (alive.meta != local.meta or alive.address != local.address))):
                # Someone holds another "alive" of ours (our previous life, or a forgery).
                self._refute(now_ms, alive.incarnation)
            return
        if len(alive.meta) > cfg.meta_bytes_max:
            self._ignore("meta_too_large")
            return
        member = self.table.get(alive.node)
        if member is None:
            if len(self.table) >= cfg.members_max:
                self._ignore("members_full")
                return
            self.table.join(alive.node, alive.address, alive.incarnation, alive.meta, now_ms,
                            self.rng)
            self._emit(EventKind.JOINED, alive.node, now_ms, incarnation=alive.incarnation,
                       meta=alive.meta)
            self.queue.enqueue(alive.node, alive)
            return
        if alive.incarnation <= member.incarnation:
            self._ignore("stale_alive")
            return
        if alive.incarnation > member.incarnation + cfg.incarnation_jump_max:
            self._ignore("incarnation_jump")
            return
        before = self.table.move(member, Transition.REFRESH, alive.incarnation, now_ms)
        changed = alive.meta != member.meta or alive.address != member.address
        member.meta = alive.meta
        member.address = alive.address
        self._end_suspicion(member.node)
        if before is SUSPECT:
            self._emit(EventKind.ALIVE, member.node, now_ms, meta=member.meta)
        elif before in (DEAD, LEFT):
            self._emit(EventKind.JOINED, member.node, now_ms, meta=member.meta)
        if changed and before in (ALIVE, SUSPECT):
            self._emit(EventKind.UPDATED, member.node, now_ms, meta=member.meta)
        self.queue.enqueue(alive.node, alive)

    def _on_suspect(self, now_ms: float, suspect: Suspect) -> None:
        cfg = self.config
        if suspect.node == self.node:
            if self.role is not Role.ACTIVE:
                return
            if suspect.incarnation < self.local.incarnation:
                self._ignore("stale_suspicion_of_us")
                self._correct(self.local)
                return
            self._refute(now_ms, suspect.incarnation)
            return
        member = self.table.get(suspect.node)
        if member is None:
            self._ignore("suspicion_of_unknown")
            return
        if member.status in (DEAD, LEFT):
            self._ignore("suspicion_of_dead")
            return
        if suspect.incarnation < member.incarnation and not mutant(ACCEPT_OLDER_SUSPICION):
            self._ignore("stale_suspicion")
            if member.status is ALIVE:
                self._correct(member)
            return
        if suspect.incarnation > member.incarnation + cfg.incarnation_jump_max:
            self._ignore("incarnation_jump")
            return
        incarnation = max(suspect.incarnation, member.incarnation)
        suspicion = self._suspicions.get(member.node)
        if suspicion is not None and suspicion.incarnation == incarnation:
            # Lifeguard: an independent confirmation shortens the timeout.
            if suspicion.confirm(suspect.source):
                self._arm_suspicion(now_ms, member.node, suspicion)
                self.queue.enqueue(member.node, Suspect(node=member.node, incarnation=incarnation,
                                                        source=suspect.source))
            return
        before = self.table.move(member, Transition.SUSPECT, incarnation, now_ms)
        self._end_suspicion(member.node)
        self._start_suspicion(now_ms, member, incarnation, suspect.source)
        if before is ALIVE:
            self._emit(EventKind.SUSPECT, member.node, now_ms)
        self.queue.enqueue(member.node, Suspect(node=member.node, incarnation=incarnation,
                                                source=suspect.source))

    def _on_dead(self, now_ms: float, dead: Dead) -> None:
        if dead.node == self.node:
            if self.role is not Role.ACTIVE:
                return
            if dead.incarnation >= self.local.incarnation:
                self._refute(now_ms, dead.incarnation)  # never accept our own death
            else:
                self._correct(self.local)  # the sender missed our refutation
            return
        member = self.table.get(dead.node)
        if member is None:
            self._ignore("death_of_unknown")
            return
        if member.status in (DEAD, LEFT):
            self._ignore("already_dead")  # dead is final for an incarnation
            return
        if dead.incarnation < member.incarnation:
            self._ignore("stale_death")
            if member.status is ALIVE:
                self._correct(member)
            return
        if dead.incarnation > member.incarnation + self.config.incarnation_jump_max:
            self._ignore("incarnation_jump")
            return
        self.table.move(member, Transition.DEAD, dead.incarnation, now_ms)
        self._end_suspicion(member.node)
        self._emit(EventKind.FAILED, member.node, now_ms)
        self.queue.enqueue(member.node, dead)

    def _on_left(self, now_ms: float, left: Left) -> None:
        if left.node == self.node:
            if self.role is Role.ACTIVE and left.incarnation >= self.local.incarnation:
                self._refute(now_ms, left.incarnation)  # a forged leave
            return
        member = self.table.get(left.node)
        if member is None or member.status in (DEAD, LEFT):
            self._ignore("leave_not_applicable")
            return
        if left.incarnation < member.incarnation:
            self._ignore("stale_leave")
            return
        if left.incarnation > member.incarnation + self.config.incarnation_jump_max:
            self._ignore("incarnation_jump")
            return
        self.table.move(member, Transition.LEAVE, left.incarnation, now_ms)
        self._end_suspicion(member.node)
        self._emit(EventKind.LEFT, member.node, now_ms)
        self.queue.enqueue(member.node, left)

    def _on_user_event(self, now_ms: float, event: UserEvent) -> None:
        if len(event.name.encode()) + len(event.payload) > self.config.user_event_bytes_max:
            self._ignore("user_event_too_large")
            return
        key = (event.origin, event.event_id)
        if key in self._events_seen:
            return
        self._events_seen[key] = None
        if len(self._events_seen) > self.config.user_event_seen_max:
            self._events_seen.popitem(last=False)
        self._emit(EventKind.USER, event.origin, now_ms, name=event.name, payload=event.payload)
        self.queue.enqueue(key, event)

    def _refute(self, now_ms: float, accused_incarnation: int) -> None:
        local = self.local
        self._count("refutations")
        if self.config.lifeguard:
            self.awareness.apply_delta(1)  # others cannot hear us well: slow down
        if not mutant(REFUTE_WITHOUT_INCARNATION):
            bounded = min(accused_incarnation, local.incarnation + self.config.incarnation_jump_max)
            local.incarnation = max(local.incarnation, bounded) + 1
        self._enqueue_self_alive()

    def _enqueue_self_alive(self) -> None:
        local = self.local
        self.queue.enqueue(self.node, Alive(node=self.node, incarnation=local.incarnation,
                                            address=local.address, meta=local.meta))

    # ================================================================ gossip, push-pull, join

    def _on_gossip_tick(self, now_ms: float) -> None:
        self._gossip_round(now_ms)
        if self.role is Role.ACTIVE or (self.role is Role.LEFT and not self.leave_spread()):
            self._out.append(SetTimer(key=TIMER_GOSSIP, delay_ms=self.config.gossip_interval_ms))

    def _gossip_round(self, now_ms: float) -> None:
        if not len(self.queue):
            return
        dead_window_ms = self.config.gossip_to_the_dead_ms

        def reachable(member: Member) -> bool:
            if member.status in (ALIVE, SUSPECT):
                return True
            return member.status is DEAD and now_ms - member.status_ms < dead_window_ms

        for peer in self.table.random_members(self.rng, self.config.gossip_nodes, reachable):
            updates = self._piggyback(self.config.packet_bytes_max - PRIMARY_BYTES)
            if not updates:
                break
            self._send_raw(peer.node, Gossip(updates=tuple(updates)))

    def _on_push_pull_tick(self, now_ms: float) -> None:
        if self.role is not Role.ACTIVE:
            return
        cfg = self.config
        members = self.table.live_count()
        scale = 1
        if members > 32:
            scale = math.ceil(math.log2(members) - math.log2(32)) + 1
        self._out.append(SetTimer(key=TIMER_PUSH_PULL, delay_ms=cfg.push_pull_interval_ms * scale))
        peers = self.table.random_members(self.rng, 1, lambda m: m.status is ALIVE)
        for peer in peers:
            self._start_push_pull(now_ms, peer.node, join=False)

    def _on_reconnect_tick(self, now_ms: float) -> None:
        """Serf's reconnect: push-pull with a member we hold dead; if it is alive
        after all (a healed partition), the exchange makes both sides refute."""
        if self.role is not Role.ACTIVE:
            return
        self._out.append(SetTimer(key=TIMER_RECONNECT, delay_ms=self.config.reconnect_interval_ms))
        if self.table.count(DEAD):
            for peer in self.table.random_members(self.rng, 1, lambda m: m.status is DEAD):
                self._start_push_pull(now_ms, peer.node, join=False)
        elif self.table.live_count() == 1 and self.seeds:
            self._joined = False  # alone again: go back to the seeds
            self._join_round(now_ms)

    def _pull_if_stranger(self, now_ms: float, source: NodeId, message: Message) -> None:
        """A datagram from a member we do not know alive (never heard of, or hold
        dead) means our view is behind: we missed its alive, or it missed its own
        death. Push-pull with it at once instead of waiting for anti-entropy; at most
        one such pull per ``STRANGER_PULL_MS`` and one outstanding per member."""
        if self.role is not Role.ACTIVE or isinstance(message, PushPull | PushPullReply):
            return
        member = self.table.get(source)
        if member is not None and member.status is not DEAD:
            return
        if source == self.node or source in self._push_pull_pending:
            return
        if now_ms - self._stranger_pull_ms < STRANGER_PULL_MS:
            return
        self._stranger_pull_ms = now_ms
        self._count("stranger_pulls")
        self._start_push_pull(now_ms, source, join=False)

    def _start_push_pull(self, now_ms: float, peer: NodeId, *, join: bool) -> None:
        self._push_pull_pending[peer] = now_ms
        self._push_pull_pending.move_to_end(peer)
        while len(self._push_pull_pending) > PUSH_PULL_PENDING_MAX:
            self._push_pull_pending.popitem(last=False)
        self._send(peer, PushPull(join=join, members=self._state_rows()), piggyback=False)

    def _join_round(self, now_ms: float) -> None:
        if not self.seeds or self._joined:
            return
        self._join_attempts += 1
        for seed in self.seeds:
            self._start_push_pull(now_ms, seed, join=True)
        if self._join_attempts < self.config.join_attempts_max:
            self._out.append(SetTimer(key=TIMER_JOIN, delay_ms=self.config.join_retry_ms))

    def _note_joined(self) -> None:
        if not self._joined:
            self._joined = True
            self._out.append(CancelTimer(key=TIMER_JOIN))

    def _state_rows(self) -> tuple[MemberState, ...]:
        return tuple(member.to_state() for member in self.table.members())

    def _merge_own_row(self, now_ms: float, peer: NodeId, rows: tuple[MemberState, ...]) -> None:
        for row in rows:
            if row.node == self.node:
                self._merge(now_ms, peer, (row,))
                return

    def _merge(self, now_ms: float, peer: NodeId, rows: tuple[MemberState, ...]) -> None:
        """memberlist's mergeState: dead rows become suspicions, never instant deaths."""
        for row in rows[: self.config.members_max]:
            match row.status:
                case MemberStatus.ALIVE:
                    self._on_alive(now_ms, Alive(node=row.node, incarnation=row.incarnation,
                                                 address=row.address, meta=row.meta))
                case MemberStatus.LEFT:
                    self._on_left(now_ms, Left(node=row.node, incarnation=row.incarnation))
                case MemberStatus.SUSPECT | MemberStatus.DEAD:
                    self._on_suspect(now_ms, Suspect(node=row.node, incarnation=row.incarnation,
                                                     source=peer))
                case _:
                    assert_never(row.status)

    # ================================================================ plumbing

    def _piggyback(self, bytes_max: int) -> list[Update]:
        return self.queue.select(self.table.live_count(), bytes_max)

    def _send(self, to: NodeId, message: Ping | Ack | PingReq | Nack | PushPull | PushPullReply,
              *, piggyback: bool = True) -> None:
        if piggyback and len(self.queue):
            updates = tuple(self._piggyback(self.config.packet_bytes_max - PRIMARY_BYTES))
            if updates:
                match message:
                    case Ack():
                        message = Ack(seq=message.seq, updates=updates)
                    case PingReq():
                        message = PingReq(seq=message.seq, target=message.target, updates=updates)
                    case Nack():
                        message = Nack(seq=message.seq, updates=updates)
                    case Ping():
                        message = Ping(seq=message.seq, target=message.target, updates=updates)
                    case PushPull() | PushPullReply():
                        pass
                    case _:
                        assert_never(message)
        self._send_raw(to, message)

    def _correct(self, member: Member) -> None:
        """Remember to tell the sender of a stale suspicion or death the newer alive
        we hold: it missed a refutation, and would otherwise act on the old rumour
        (declare a live member failed) until the next push-pull."""
        if len(self._corrections) < CORRECTIONS_MAX:
            self._corrections[member.node] = Alive(node=member.node,
                                                   incarnation=member.incarnation,
                                                   address=member.address, meta=member.meta)

    def _send_corrections(self, to: NodeId) -> None:
        if self._corrections:
            updates = tuple(self._corrections.values())
            self._corrections.clear()
            if to != self.node:
                self._count("corrections")
                self._send_raw(to, Gossip(updates=updates))

    def _send_raw(self, to: NodeId, message: Message) -> None:
        self._count("messages_sent")
        self._out.append(Send(to=to, message=message))

    def _emit(self, kind: EventKind, node: NodeId, now_ms: float, *, incarnation: int | None = None,
              meta: bytes = b"", name: str = "", payload: bytes = b"") -> None:
        if len(self._events) >= self.config.event_queue_max:
            self._events.popleft()
            self._count("events_dropped")
        member = self.table.get(node)
        if incarnation is None:
            incarnation = member.incarnation if member is not None else 0
        self._events.append(MemberEvent(kind=kind, node=node, incarnation=incarnation,
                                        at_ms=now_ms, meta=meta, name=name, payload=payload))

    def _count(self, name: str, amount: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + amount

    def _ignore(self, reason: str) -> None:
        self._ignored[reason] = self._ignored.get(reason, 0) + 1

    def _take(self) -> Effects:
        out, self._out = self._out, []
        return out
