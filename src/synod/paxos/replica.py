"""The Multi-Paxos replica core: acceptor, proposer and learner in one sans-IO object.

Theory of operation
-------------------
Follows Lamport's *Paxos Made Simple* (section 3, "Implementing a State Machine")
and Chandra, Griesemer and Redstone's *Paxos Made Live* (sections 5.1-5.5: master
leases, epoch numbers, group membership, snapshots).

*Log.* Slots 1, 2, 3, ... each choose one ``Value``: a batch of client commands, a
no-op, or a new member set. ``chosen_index`` is the longest prefix known chosen;
it is applied to the state machine in order as soon as it grows, so applied and
chosen indexes are the same number.

*Ballots* are ``(round, node id)``. A replica that suspects the leader is gone
first asks for pre-votes (nothing is promised); with a majority it raises its
ballot and runs **Phase 1 once for every unchosen slot** (``Prepare(from_slot)``);
acceptors answer with every entry they accepted from that slot on. The new leader
re-proposes, in each slot, the value of the highest ballot it heard of, **fills
every gap with a no-op**, and then proposes one more no-op (the *barrier*): when
that is applied, every value a previous leader could have acknowledged is applied
here too. From then on it runs **Phase 2 only**, pipelined: at most
``window_slots_max`` slots beyond the chosen prefix, each slot a batch of client
commands bounded by count and bytes.

*Durability.* An acceptor makes its promise or accepted entries durable before it
answers: every answer is inside ``Persist(records, then=(Send(...),))``. The
leader's own acceptor persists its proposals the same way; its own vote counts
only when a zero-delay timer placed in the ``then`` of that persist fires
(``durable/<n>``), i.e. once the record is on disk.

*Snapshots.* Every ``snapshot_interval_slots`` chosen slots the replica returns a
``SaveSnapshot`` whose chunks are WAL-style records (the state as of the chosen
index, the promise, the entries held above it, the learned index); the driver
stores it durably and drops the WAL records persisted before it, and ``start``
replays ``Recovered.snapshot`` before the records after it.

*Learning.* Every ``Accept`` (an empty one is the heartbeat) carries the leader's
chosen index. A learner marks a slot chosen when it holds that slot's value at the
leader's ballot (a leader proposes one value per slot per ballot) or when the
value came from a catch-up reply; otherwise it asks for catch-up: chosen entries,
or a snapshot sent in chunks when the log no longer reaches back that far.

*Leases* (Paxos Made Live 5.2). An acceptor that accepts a round from the leader
grants it a lease of ``lease_ms`` on its own clock from when it received the round,
and while that holds it promises no other proposer. The leader counts each
acceptor's lease from when it SENT the round, minus ``clock_drift_bound_ms``, so its
lease ends before any grant it relies on. Promises and leases in memory are lost in
a crash, so an acceptor makes no promise until ``lease_ms + clock_drift_bound_ms``
after it started. The leader serves reads locally while its lease holds and after
its barrier no-op is applied; otherwise a read waits for a round of
acknowledgements from a majority sent after the read arrived (quorum read); stale
reads are a separate, named mode served by any replica.

*Membership* (Lamport's alpha): a member set chosen in slot ``s`` governs slots from
``s + window_slots_max`` on; the leader never has more slots in flight than that,
so it always knows which members decide a slot. One change at a time. Once a
change is chosen the leader fills the slots up to where it governs with no-ops,
so it takes effect without waiting for client commands. A replica outside the
member set is a *learner* (a node added before the change that makes it a member,
or one removed): it is sent no Accepts, counts in no quorum and never campaigns;
it pulls the chosen log from the members every heartbeat interval instead.

Roles change only in ``become_follower`` / ``become_candidate`` / ``become_leader``.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgpack

from synod.codec.kernel import ClientRequest, ErrorReply
from synod.codec.registry import Message, decode, encode
from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Effect,
    Effects,
    Persist,
    Recovered,
    SaveSnapshot,
    Send,
    SetTimer,
)
from synod.core.errors import RemoteProtocolError, invariant
from synod.core.faults import buggify, declare_mutant, mutant
from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.paxos.messages import (
    BALLOT_CHOSEN,
    BALLOT_ZERO,
    NOOP,
    Accept,
    Accepted,
    AcceptRecord,
    Ballot,
    CatchupReply,
    CatchupRequest,
    ChangeMembers,
    Command,
    CommandResult,
    Done,
    Entry,
    LearnedRecord,
    LeaseRelease,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    PromiseRecord,
    Read,
    ReadMode,
    ReadResult,
    Reject,
    SnapshotChunk,
    SnapshotRecord,
    TimeoutNow,
    TransferLeader,
    Value,
    ValueKind,
)
from synod.paxos.statemachine import ClientTable, Outcome, ReplicatedState, StateMachine

MUTANT_ANSWER_BEFORE_PERSIST = declare_mutant(
    "paxos.answer_before_persist",
    "an acceptor sends its promise / accepted answer before the record is durable",
)
MUTANT_PROMISE_EQUAL_BALLOT = declare_mutant(
    "paxos.promise_equal_ballot",
    "an acceptor promises a ballot whose round equals its promise's (ignoring the node tie-break)",
)
MUTANT_SKIP_GAP_FILL = declare_mutant(
    "paxos.skip_gap_fill",
    "a new leader does not fill the gaps of its log with no-ops",
)
MUTANT_LEASE_IGNORES_DRIFT = declare_mutant(
    "paxos.lease_ignores_drift",
    "the leader's lease is not shortened by the clock-drift bound",
)

#: A ballot round above this is forged ("from the future") and ignored.
ROUND_MAX = 1 << 40
#: The exactly-once table evicts idle clients every this many slots.
EVICTION_INTERVAL_SLOTS = 1024
#: Snapshot transfer: at most this many chunks (bounds a hostile sender).
SNAPSHOT_CHUNKS_MAX = 1 << 20


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaStatistics:
    """A snapshot of one replica's state and counters (``statistics()``)."""

    node: NodeId
    role: Role
    ballot: Ballot
    promised: Ballot
    leader: NodeId | None
    chosen_index: int
    snapshot_index: int
    log_entries: int
    proposals_in_flight: int
    pending_commands: int
    pending_reads: int
    members: tuple[NodeId, ...]
    commands_applied: int
    commands_duplicate: int
    slots_proposed: int
    reads_lease: int
    reads_quorum: int
    reads_stale: int
    elections_started: int
    leaderships: int
    snapshots_taken: int
    snapshots_installed: int
    catchup_requests: int
    ignored: tuple[tuple[str, int], ...]
    digest: str


@dataclass(slots=True)
class _Proposal:
    value: Value
    acks: set[NodeId]
    sent_ms: float


@dataclass(slots=True)
class _PendingRead:
    client: NodeId
    request_id: int
    op: bytes
    read_index: int
    mode: ReadMode


@dataclass(slots=True)
class _Assembly:
    index: int
    chunk_count: int
    chunks: list[bytes]
    previous_members: tuple[NodeId, ...]
    members: tuple[NodeId, ...]
    members_from_slot: int


def _majority(members: Iterable[NodeId], votes: set[NodeId]) -> bool:
    group = set(members)
    return len(group & votes) * 2 > len(group)


class PaxosReplica:
    """One replica of a Multi-Paxos group (a ``synod.core.Core``)."""

    def __init__(
        self,
        node: NodeId,
        rng: random.Random,
        *,
        members: tuple[NodeId, ...],
        machine: StateMachine,
        config: PaxosConfig | None = None,
        observer: Callable[[NodeId, int, Value], None] | None = None,
    ) -> None:
        self.node = node
        #: Called with (node, slot, value) as each slot is applied: a hook for
        #: checkers (the simulator records what every replica learned).
        self.observer = observer
        self.rng = rng
        self.config = config or PaxosConfig()
        self.role = Role.FOLLOWER
        # Acceptor (durable).
        self.promised = BALLOT_ZERO
        self.log: dict[int, Entry] = {}
        # Learner.
        self.chosen_index = 0
        self.snapshot_index = 0
        self.learned_persisted = 0
        self.state = ReplicatedState(machine, ClientTable(
            client_window_max=self.config.client_window_max,
            clients_max=self.config.clients_max,
            client_retention_slots=self.config.client_retention_slots,
        ))
        self._snapshot: SnapshotRecord | None = None
        self._snapshot_blob: tuple[int, tuple[bytes, ...]] | None = None
        self._assembly: _Assembly | None = None
        # Membership history: (first slot governed, members), ascending.
        self.members_history: list[tuple[int, tuple[NodeId, ...]]] = [(1, tuple(sorted(members)))]
        # Elections.
        self.ballot = BALLOT_ZERO           # my ballot when candidate or leader
        self.leader: NodeId | None = None
        self.leader_ballot = BALLOT_ZERO
        self.round_seen = 0
        self.leader_contact_ms = float("-inf")
        self.promise_allowed_ms = 0.0
        self.lease_granted_until_ms = float("-inf")
        self.lease_holder = BALLOT_ZERO
        self._prevotes: set[NodeId] = set()
        self._prevote_ballot = BALLOT_ZERO
        self._promises: set[NodeId] = set()
        self._phase1: dict[int, Entry] = {}
        self._phase1_from = 0
        self._retry_prepare = False
        self._retry_prepare_ms = float("inf")
        # Leader.
        self.next_slot = 1
        self.barrier_slot = 0
        self._proposals: dict[int, _Proposal] = {}
        self._pending: list[tuple[Command, int]] = []
        self._pending_bytes = 0
        self._waiting: dict[tuple[str, int], list[tuple[NodeId, int]]] = {}
        self._admin_waiting: dict[int, tuple[NodeId, int]] = {}
        self._round = 0
        self._round_sent_ms: dict[int, float] = {}
        self._peer_round: dict[NodeId, int] = {}
        self._peer_round_sent_ms: dict[NodeId, float] = {}
        self._peer_ack_ms: dict[NodeId, float] = {}
        self._reads_next: list[_PendingRead] = []
        self._reads_round = 0
        self._reads_in_round: list[_PendingRead] = []
        self._reads_apply: list[_PendingRead] = []
        self._transfer_to: NodeId | None = None
        # Membership: the leader proposes no-ops up to this slot so that a
        # chosen member set governs (from its slot + window_slots_max) without
        # waiting for client writes.
        self._activate_until = 0
        self._learner_turn = 0
        # Durability callbacks: persist number -> what became durable.
        self._persist_seq = 0
        self._durable: dict[int, tuple[str, Ballot, tuple[int, ...]]] = {}
        # Catch-up.
        self._catchup_next_ms = float("-inf")
        self._leader_chosen_hint = 0
        # Counters.
        self._ignored: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()

    # ================================================================ Core API

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        """Rebuild durable state from the WAL records, then wait as a follower.

        A restarted acceptor has forgotten the leases it granted, so it promises
        nothing until a full lease plus the drift bound has passed."""
        for raw in (recovered.snapshot or ()) + recovered.records:
            self._replay(decode(raw))
        if self._snapshot is not None:
            self._install_snapshot_state(self._snapshot)
        learned = self.learned_persisted
        self.learned_persisted = self.chosen_index
        out: Effects = []
        for slot in range(self.chosen_index + 1, learned + 1):
            entry = self.log.get(slot)
            if entry is None:
                break   # cannot happen with an in-order log; relearn from peers
            self.log[slot] = Entry(slot=slot, ballot=BALLOT_CHOSEN, value=entry.value)
        self._advance_chosen(now_ms, out)
        self.learned_persisted = self.chosen_index
        self.round_seen = max(self.round_seen, self.promised.round)
        self.promise_allowed_ms = now_ms + self.config.lease_ms + self.config.clock_drift_bound_ms
        out.append(SetTimer(key="election", delay_ms=self._election_delay_ms()))
        return out

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        out: Effects = []
        match message:
            case ClientRequest(request_id=request_id, body=body):
                self._on_client(now_ms, source, request_id, body, out)
            case Accept():
                self._on_accept(now_ms, source, message, out)
            case Accepted():
                self._on_accepted(now_ms, source, message, out)
            case Prepare():
                self._on_prepare(now_ms, source, message, out)
            case Promise():
                self._on_promise(now_ms, source, message, out)
            case Reject():
                self._on_reject(now_ms, source, message, out)
            case PreVote():
                self._on_prevote(now_ms, source, message, out)
            case PreVoteReply():
                self._on_prevote_reply(now_ms, source, message, out)
            case CatchupRequest():
                self._on_catchup_request(now_ms, source, message, out)
            case CatchupReply():
                self._on_catchup_reply(now_ms, source, message, out)
            case SnapshotChunk():
                self._on_snapshot_chunk(now_ms, source, message, out)
            case TimeoutNow():
                self._on_timeout_now(now_ms, source, message, out)
            case LeaseRelease():
                if self.lease_holder == message.ballot and message.ballot.node == source:
                    self.lease_granted_until_ms = float("-inf")
            case _:
                self._ignore("unknown_message")
        return out

    def on_timer(self, now_ms: float, key: str) -> Effects:
        out: Effects = []
        if key.startswith("durable/"):
            self._on_durable(now_ms, int(key[len("durable/"):]), out)
        elif key == "election":
            self._on_election_timer(now_ms, out)
        elif key == "heartbeat":
            if self.role is Role.LEADER:
                self._send_round(now_ms, out, retransmit=True)
                out.append(SetTimer(key="heartbeat", delay_ms=self.config.heartbeat_interval_ms))
        elif key == "check_quorum" and self.role is Role.LEADER:
            self._check_quorum(now_ms, out)
        return out

    # ================================================================ roles

    def become_follower(self, now_ms: float, leader: NodeId | None, ballot: Ballot, out: Effects) -> None:
        """Follow ``leader`` at ``ballot`` (``None``: leader unknown)."""
        was_leader = self.role is Role.LEADER
        self.role = Role.FOLLOWER
        self.leader = leader
        self.leader_ballot = ballot
        self._prevotes.clear()
        self._promises.clear()
        self._phase1.clear()
        if was_leader:
            self._abandon_leadership(out)
        out.append(SetTimer(key="election", delay_ms=self._election_delay_ms()))

    def become_candidate(self, now_ms: float, out: Effects) -> None:
        """Raise the ballot and run Phase 1 for every slot after the chosen prefix."""
        invariant(self.role is not Role.LEADER, "a leader does not campaign")
        if not self._may_promise(now_ms, self.node):
            # My own acceptor still honours a lease (or its restart wait): campaign
            # the moment it may promise, skipping the pre-vote already won.
            wait_ms = max(self.promise_allowed_ms, self.lease_granted_until_ms) - now_ms
            self._retry_prepare = True
            out.append(SetTimer(key="election", delay_ms=min(wait_ms + 0.5, self.config.election_timeout_ms)))
            return
        self.role = Role.CANDIDATE
        top = max(self.round_seen, self.promised.round)
        if top == self.promised.round and self.promised.node < self.node and buggify(self.rng, "paxos.ballot_tie"):
            # Simulation only: tie the round of the ballot I promised (still a
            # higher ballot, by node id), so that rival candidates share a round.
            self.round_seen = top
        else:
            self.round_seen = top + 1
        self.ballot = Ballot(round=self.round_seen, node=self.node)
        invariant(self.ballot > self.promised, "a new ballot exceeds every ballot promised here")
        self.promised = self.ballot
        self.leader = None
        self._counts["elections_started"] += 1
        self._promises = set()
        self._retry_prepare = False
        self._retry_prepare_ms = float("inf")
        self._phase1_from = self.chosen_index + 1
        self._phase1 = {s: e for s, e in self.log.items() if s >= self._phase1_from}
        self._persist(out, (PromiseRecord(ballot=self.ballot),), durable=("promise", self.ballot, ()))
        prepare = Prepare(ballot=self.ballot, from_slot=self._phase1_from)
        for peer in self._phase1_peers():
            out.append(Send(to=peer, message=prepare))
        out.append(SetTimer(key="election", delay_ms=self._election_delay_ms()))

    def become_leader(self, now_ms: float, out: Effects) -> None:
        """Phase 1 succeeded: re-propose what was accepted, fill gaps with no-ops,
        propose the barrier no-op, and start heartbeats and check-quorum."""
        invariant(self.role is Role.CANDIDATE, "only a candidate becomes leader")
        invariant(self.promised == self.ballot, "a leader holds its own promise")
        self.role = Role.LEADER
        self.leader = self.node
        self.leader_ballot = self.ballot
        self._counts["leaderships"] += 1
        self._proposals.clear()
        self._round_sent_ms.clear()
        self._peer_round.clear()
        self._peer_round_sent_ms.clear()
        self._peer_ack_ms = {peer: now_ms for peer in self._all_peers()}
        self._transfer_to = None
        top = max(max(self._phase1, default=0), self.chosen_index)
        entries: list[Entry] = []
        for slot in range(self.chosen_index + 1, top + 1):
            found = self._phase1.get(slot)
            if found is None and mutant(MUTANT_SKIP_GAP_FILL):
                continue
            value = found.value if found is not None else NOOP
            entries.append(Entry(slot=slot, ballot=self.ballot, value=value))
        self.next_slot = top + 1
        self.barrier_slot = self.next_slot
        entries.append(Entry(slot=self.barrier_slot, ballot=self.ballot, value=NOOP))
        self.next_slot += 1
        self._phase1.clear()
        self._promises.clear()
        self._propose_entries(now_ms, entries, out)
        self._propose_pending(now_ms, out)
        out.append(SetTimer(key="heartbeat", delay_ms=self.config.heartbeat_interval_ms))
        out.append(SetTimer(key="check_quorum", delay_ms=self.config.check_quorum_ms))

    def _abandon_leadership(self, out: Effects) -> None:
        hint = self.leader or ""
        for waiters in self._waiting.values():
            for client, request_id in waiters:
                out.append(ClientResult(client=client, request_id=request_id,
                                        result=ErrorReply(code="not_leader", hint=hint)))
        for client, request_id in self._admin_waiting.values():
            out.append(ClientResult(client=client, request_id=request_id,
                                    result=ErrorReply(code="not_leader", hint=hint)))
        for read in (*self._reads_next, *self._reads_in_round, *self._reads_apply):
            out.append(ClientResult(client=read.client, request_id=read.request_id,
                                    result=ErrorReply(code="not_leader", hint=hint)))
        self._waiting.clear()
        self._admin_waiting.clear()
        self._reads_next.clear()
        self._reads_in_round.clear()
        self._reads_apply.clear()
        self._pending.clear()
        self._pending_bytes = 0
        self._proposals.clear()
        self._durable.clear()
        out.append(CancelTimer(key="heartbeat"))
        out.append(CancelTimer(key="check_quorum"))

    # ================================================================ elections

    def _on_election_timer(self, now_ms: float, out: Effects) -> None:
        if self.role is Role.LEADER:
            return
        quiet_ms = now_ms - self.leader_contact_ms
        if self.role is Role.FOLLOWER and quiet_ms < self.config.election_timeout_ms:
            self._retry_prepare = False   # a leader spoke up meanwhile
            out.append(SetTimer(key="election", delay_ms=self._election_delay_ms()))
            return
        if self.node not in self._current_members() or self.node not in self.members_history[-1][1]:
            # Not a member, or removed by a change not yet in effect here (the
            # others may be past it and send nothing): learn, never campaign.
            self._pull_as_learner(now_ms, out)
            return
        if self._retry_prepare:
            self._retry_prepare = False
            self.role = Role.FOLLOWER
            self.become_candidate(now_ms, out)
            return
        if self.role is Role.CANDIDATE:
            self.role = Role.FOLLOWER   # the campaign timed out; start over
        if self.config.pre_vote:
            self._start_prevote(now_ms, out)
        else:
            self.become_candidate(now_ms, out)

    def _pull_as_learner(self, now_ms: float, out: Effects) -> None:
        """A replica outside the member set (a learner: added to a node before
        ``ChangeMembers`` makes it a member, or removed) is sent no Accepts, so
        it asks the members in turn for the chosen entries after its prefix,
        every heartbeat interval. It never campaigns, and a leader counts no
        vote of it (``_majority`` counts members only)."""
        members = [m for m in self._current_members() if m != self.node]
        if members:
            self._learner_turn = (self._learner_turn + 1) % len(members)
            target = self.leader if self.leader in members else members[self._learner_turn]
            self._request_catchup(now_ms, target, out, force=True)
        out.append(SetTimer(key="election", delay_ms=self.config.heartbeat_interval_ms))

    def _start_prevote(self, now_ms: float, out: Effects) -> None:
        self._prevote_ballot = Ballot(round=max(self.round_seen, self.promised.round) + 1, node=self.node)
        self._prevotes = {self.node}
        request = PreVote(ballot=self._prevote_ballot, chosen_index=self.chosen_index)
        for peer in self._phase1_peers():
            out.append(Send(to=peer, message=request))
        out.append(SetTimer(key="election", delay_ms=self._election_delay_ms()))
        self._maybe_win_prevote(now_ms, out)

    def _on_prevote(self, now_ms: float, source: NodeId, message: PreVote, out: Effects) -> None:
        recent_leader = (
            self.role is Role.LEADER
            or now_ms - self.leader_contact_ms < self.config.election_timeout_ms
        )
        # The ballot is not compared with my promise: a refused Prepare teaches the
        # candidate the round to beat, a pre-vote does not.
        granted = (
            message.ballot.node == source
            and message.ballot.round < ROUND_MAX
            and message.chosen_index >= self.chosen_index
            and not recent_leader
        )
        if not granted:
            self._ignore("prevote_denied")
        out.append(Send(to=source, message=PreVoteReply(ballot=message.ballot, granted=granted)))

    def _on_prevote_reply(self, now_ms: float, source: NodeId, message: PreVoteReply, out: Effects) -> None:
        if self.role is not Role.FOLLOWER or message.ballot != self._prevote_ballot or not message.granted:
            return
        self._prevotes.add(source)
        self._maybe_win_prevote(now_ms, out)

    def _maybe_win_prevote(self, now_ms: float, out: Effects) -> None:
        if self._prevote_ballot.node == self.node and all(
            _majority(group, self._prevotes) for group in self._phase1_groups()
        ):
            self._prevotes.clear()
            self._prevote_ballot = BALLOT_ZERO
            self.become_candidate(now_ms, out)

    def _on_timeout_now(self, now_ms: float, source: NodeId, message: TimeoutNow, out: Effects) -> None:
        if message.ballot != self.leader_ballot or source != message.ballot.node or self.role is Role.LEADER:
            self._ignore("timeout_now_stale")
            return
        if self.lease_holder == message.ballot:
            self.lease_granted_until_ms = float("-inf")
        self.role = Role.FOLLOWER
        self.become_candidate(now_ms, out)

    # ---------------------------------------------------------------- acceptor: Phase 1

    def _may_promise(self, now_ms: float, proposer: NodeId) -> bool:
        if now_ms < self.promise_allowed_ms:
            return False
        return not (now_ms < self.lease_granted_until_ms and self.lease_holder.node != proposer)

    def _on_prepare(self, now_ms: float, source: NodeId, message: Prepare, out: Effects) -> None:
        ballot = message.ballot
        if ballot.node != source or ballot.round >= ROUND_MAX or message.from_slot < 1:
            self._ignore("prepare_forged")
            return
        if mutant(MUTANT_PROMISE_EQUAL_BALLOT):
            stale = ballot.round < self.promised.round
        else:
            stale = ballot <= self.promised
        if stale:
            self._ignore("prepare_stale")
            out.append(Send(to=source, message=Reject(ballot=ballot, promised=self.promised, reason="stale")))
            return
        if now_ms < self.promise_allowed_ms:
            self._ignore("prepare_restart_wait")
            out.append(Send(to=source, message=Reject(ballot=ballot, promised=self.promised, reason="waiting",
                                                      retry_after_ms=self.promise_allowed_ms - now_ms)))
            return
        if not self._may_promise(now_ms, source):
            self._ignore("prepare_lease_held")
            out.append(Send(to=source, message=Reject(ballot=ballot, promised=self.promised, reason="lease",
                                                      retry_after_ms=self.lease_granted_until_ms - now_ms)))
            return
        self.round_seen = max(self.round_seen, ballot.round)
        self.promised = ballot
        if self.role is not Role.FOLLOWER:
            self.become_follower(now_ms, None, BALLOT_ZERO, out)
        from_slot = max(message.from_slot, self.snapshot_index + 1)
        slots = sorted(s for s in self.log if s >= from_slot)
        truncated = message.from_slot <= self.snapshot_index or len(slots) > self.config.promise_entries_max
        entries = tuple(self.log[s] for s in slots[: self.config.promise_entries_max])
        promise = Promise(ballot=ballot, from_slot=message.from_slot, entries=entries,
                          chosen_index=self.chosen_index, truncated=truncated)
        self._answer(out, (PromiseRecord(ballot=ballot),), Send(to=source, message=promise))

    # ---------------------------------------------------------------- proposer: Phase 1

    def _on_promise(self, now_ms: float, source: NodeId, message: Promise, out: Effects) -> None:
        if self.role is not Role.CANDIDATE or message.ballot != self.ballot:
            self._ignore("promise_late")
            return
        if message.from_slot != self._phase1_from:
            self._ignore("promise_forged")
            return
        if message.truncated:
            # Too far behind: this acceptor's log starts after my chosen prefix
            # (or it has more than fits). Catch up from it, then campaign again.
            self._counts["campaigns_behind"] += 1
            self.become_follower(now_ms, None, BALLOT_ZERO, out)
            self._request_catchup(now_ms, source, out, force=True)
            return
        for entry in message.entries:
            if entry.slot < self._phase1_from or not self._valid_value(entry.value):
                self._ignore("promise_entry_bad")
                continue
            known = self._phase1.get(entry.slot)
            if known is None or entry.ballot > known.ballot:
                self._phase1[entry.slot] = entry
        self._promises.add(source)
        self._maybe_win_phase1(now_ms, out)

    def _maybe_win_phase1(self, now_ms: float, out: Effects) -> None:
        if self.node not in self._promises:
            return   # my own promise is not durable yet
        if all(_majority(group, self._promises) for group in self._phase1_groups()):
            self.become_leader(now_ms, out)

    def _on_reject(self, now_ms: float, source: NodeId, message: Reject, out: Effects) -> None:
        if message.promised.round < ROUND_MAX:
            self.round_seen = max(self.round_seen, message.promised.round)
        if self.role is Role.FOLLOWER or message.ballot != self.ballot:
            return
        if message.reason in ("lease", "waiting") and self.role is Role.CANDIDATE:
            # The acceptor will promise once a lease runs out or its restart wait
            # ends: prepare again then (pre-vote already passed), rather than
            # after a whole election timeout. Bounded so a forged value cannot
            # silence the candidate for long.
            delay_ms = min(max(message.retry_after_ms, 0.0) + 0.5, self.config.election_timeout_ms)
            if delay_ms < self._retry_prepare_ms or not self._retry_prepare:
                self._retry_prepare = True
                self._retry_prepare_ms = delay_ms
                out.append(SetTimer(key="election", delay_ms=delay_ms))
            return
        if message.promised > self.ballot and message.promised.round < ROUND_MAX:
            self._counts["preempted"] += 1
            self.become_follower(now_ms, None, BALLOT_ZERO, out)

    # ---------------------------------------------------------------- acceptor: Phase 2

    def _on_accept(self, now_ms: float, source: NodeId, message: Accept, out: Effects) -> None:
        ballot = message.ballot
        if ballot.node != source or ballot.round >= ROUND_MAX:
            self._ignore("accept_forged")
            return
        if ballot < self.promised:
            self._ignore("accept_stale")
            out.append(Send(to=source, message=Reject(ballot=ballot, promised=self.promised, reason="stale")))
            return
        if ballot == self.ballot and self.role is Role.LEADER:
            self._ignore("accept_own")
            return
        if not self._valid_accept(message):
            return
        records: list[Message] = []
        if ballot > self.promised:
            self.promised = ballot
            records.append(PromiseRecord(ballot=ballot))
        self.round_seen = max(self.round_seen, ballot.round)
        if self.role is not Role.FOLLOWER or self.leader != source or self.leader_ballot != ballot:
            self.become_follower(now_ms, source, ballot, out)
        self.leader_contact_ms = now_ms
        self.lease_granted_until_ms = now_ms + self.config.lease_ms
        self.lease_holder = ballot
        accepted: list[Entry] = []
        slots: list[int] = []
        for entry in message.entries:
            slots.append(entry.slot)
            if entry.slot <= self.chosen_index:
                continue   # already chosen here; the value is the same
            known = self.log.get(entry.slot)
            if known is not None and known.ballot == BALLOT_CHOSEN:
                continue
            stored = Entry(slot=entry.slot, ballot=ballot, value=entry.value)
            self.log[entry.slot] = stored
            accepted.append(stored)
        if accepted:
            records.append(AcceptRecord(entries=tuple(accepted)))
        self._learn(now_ms, source, ballot, message.chosen_index, out, records)
        reply = Accepted(ballot=ballot, round=message.round, slots=tuple(slots), chosen_index=self.chosen_index)
        if records:
            self._answer(out, tuple(records), Send(to=source, message=reply))
        else:
            out.append(Send(to=source, message=reply))

    def _valid_accept(self, message: Accept) -> bool:
        if len(message.entries) > self.config.promise_entries_max + self.config.window_slots_max:
            self._ignore("accept_oversized")
            return False
        horizon = max(message.chosen_index, self.chosen_index) + self.config.promise_entries_max + self.config.window_slots_max
        for entry in message.entries:
            if entry.slot < 1 or entry.slot > horizon or entry.ballot != message.ballot:
                self._ignore("accept_forged_slot")
                return False
            if not self._valid_value(entry.value):
                self._ignore("accept_oversized_batch")
                return False
        return True

    def _valid_value(self, value: Value) -> bool:
        if len(value.commands) > self.config.batch_commands_max:
            return False
        total = 0
        for command in value.commands:
            if len(command.op) > self.config.command_bytes_max:
                return False
            total += len(command.op)
        if total > self.config.batch_bytes_max:
            return False
        if value.kind is ValueKind.MEMBERS and not value.members:
            return False
        return not (value.kind is not ValueKind.COMMANDS and value.commands)

    # ---------------------------------------------------------------- proposer: Phase 2

    def _on_accepted(self, now_ms: float, source: NodeId, message: Accepted, out: Effects) -> None:
        if self.role is not Role.LEADER or message.ballot != self.ballot:
            self._ignore("accepted_late")
            return
        self._peer_ack_ms[source] = now_ms
        if message.round > self._peer_round.get(source, 0) and message.round <= self._round:
            sent = self._round_sent_ms.get(message.round)
            if sent is not None:
                self._peer_round[source] = message.round
                self._peer_round_sent_ms[source] = sent
        for slot in message.slots:
            proposal = self._proposals.get(slot)
            if proposal is not None:
                proposal.acks.add(source)
        self._advance_leader(now_ms, out)
        self._serve_confirmed_reads(now_ms, out)

    def _advance_leader(self, now_ms: float, out: Effects) -> None:
        while True:
            slot = self.chosen_index + 1
            proposal = self._proposals.get(slot)
            if proposal is None or not _majority(self._members_for_slot(slot), proposal.acks):
                break
            del self._proposals[slot]
            self.log[slot] = Entry(slot=slot, ballot=BALLOT_CHOSEN, value=proposal.value)
            self._advance_chosen(now_ms, out)
        self._propose_pending(now_ms, out)
        if self._transfer_to is not None:
            self._continue_transfer(now_ms, out)

    def _on_durable(self, now_ms: float, number: int, out: Effects) -> None:
        action = self._durable.pop(number, None)
        if action is None:
            return
        kind, ballot, slots = action
        if kind == "promise":
            if self.role is Role.CANDIDATE and ballot == self.ballot:
                self._promises.add(self.node)
                self._maybe_win_phase1(now_ms, out)
        elif kind == "accept" and self.role is Role.LEADER and ballot == self.ballot:
            for slot in slots:
                proposal = self._proposals.get(slot)
                if proposal is not None:
                    proposal.acks.add(self.node)
            self._advance_leader(now_ms, out)

    def _propose_entries(self, now_ms: float, entries: list[Entry], out: Effects) -> None:
        if not entries:
            return
        held: Entry | None = None
        if buggify(self.rng, "paxos.accept_held_back"):
            # Simulation only: hold the first new slot back from every peer for
            # a few election timeouts, so a leader change in between leaves a gap.
            held = entries[0]
        for entry in entries:
            self.log[entry.slot] = entry
            sent_ms = now_ms + 3 * self.config.election_timeout_ms if entry is held else now_ms
            self._proposals[entry.slot] = _Proposal(value=entry.value, acks=set(), sent_ms=sent_ms)
        self._counts["slots_proposed"] += len(entries)
        self._persist(out, (AcceptRecord(entries=tuple(entries)),),
                      durable=("accept", self.ballot, tuple(e.slot for e in entries)))
        self._send_round(now_ms, out, entries=tuple(e for e in entries if e is not held))

    def _send_round(self, now_ms: float, out: Effects, *, entries: tuple[Entry, ...] = (),
                    retransmit: bool = False) -> None:
        """Send one Accept round to every peer (entries, or a heartbeat)."""
        self._round += 1
        self._round_sent_ms[self._round] = now_ms
        self._prune_rounds(now_ms)
        # My own acceptor grants me the lease too: it will not promise anyone else.
        self.lease_granted_until_ms = now_ms + self.config.lease_ms
        self.lease_holder = self.ballot
        if self._reads_next and self._reads_round == 0:
            self._reads_round = self._round
            self._reads_in_round = self._reads_next
            self._reads_next = []
        stale_ms = now_ms - self.config.heartbeat_interval_ms
        for peer in self._all_peers():
            extra = entries
            if extra and buggify(self.rng, "paxos.accept_lost"):
                # Simulation only: lose a fresh Accept so that a crash of this
                # leader leaves a gap for the next leader to fill.
                continue
            if retransmit:
                missing = [
                    Entry(slot=slot, ballot=self.ballot, value=p.value)
                    for slot, p in self._proposals.items()
                    if peer not in p.acks and p.sent_ms <= stale_ms
                ]
                extra = tuple(missing[: self.config.window_slots_max])
            out.append(Send(to=peer, message=Accept(
                ballot=self.ballot, round=self._round, entries=extra, chosen_index=self.chosen_index,
            )))
        if retransmit:
            for proposal in self._proposals.values():
                if proposal.sent_ms <= stale_ms:
                    proposal.sent_ms = now_ms

    def _prune_rounds(self, now_ms: float) -> None:
        horizon = now_ms - self.config.lease_ms
        while len(self._round_sent_ms) > 64:
            oldest = next(iter(self._round_sent_ms))
            if self._round_sent_ms[oldest] >= horizon:
                break
            del self._round_sent_ms[oldest]

    def _propose_pending(self, now_ms: float, out: Effects) -> None:
        if self.role is not Role.LEADER or self._transfer_to is not None:
            return
        entries: list[Entry] = []
        while self._pending and self.next_slot - self.chosen_index - 1 < self.config.window_slots_max:
            batch: list[Command] = []
            size = 0
            taken = 0
            for command, length in self._pending:
                if len(batch) >= self.config.batch_commands_max or (batch and size + length > self.config.batch_bytes_max):
                    break
                batch.append(command)
                size += length
                taken += 1
            del self._pending[:taken]
            self._pending_bytes -= size
            entries.append(Entry(slot=self.next_slot, ballot=self.ballot,
                                 value=Value(kind=ValueKind.COMMANDS, commands=tuple(batch))))
            self.next_slot += 1
        while self.next_slot <= self._activate_until and self.next_slot - self.chosen_index - 1 < self.config.window_slots_max:
            entries.append(Entry(slot=self.next_slot, ballot=self.ballot, value=NOOP))
            self.next_slot += 1
        self._propose_entries(now_ms, entries, out)

    def _check_quorum(self, now_ms: float, out: Effects) -> None:
        horizon = now_ms - self.config.check_quorum_ms
        heard = {peer for peer, at in self._peer_ack_ms.items() if at >= horizon} | {self.node}
        if not all(_majority(group, heard) for group in self._phase1_groups()):
            self._counts["check_quorum_stepdowns"] += 1
            self.become_follower(now_ms, None, BALLOT_ZERO, out)
            return
        if self.node not in self._members_for_slot(self.chosen_index + 1):
            self._counts["removed_stepdowns"] += 1
            self.become_follower(now_ms, None, BALLOT_ZERO, out)
            return
        out.append(SetTimer(key="check_quorum", delay_ms=self.config.check_quorum_ms))

    # ---------------------------------------------------------------- leases and reads

    def window_open(self) -> bool:
        """Whether a command submitted now would be proposed at once: this replica
        leads, queues nothing, and has a free slot in its Phase 2 window. A core
        above may hold its own commands while it is shut, to submit them together."""
        return (self.role is Role.LEADER and not self._pending
                and self.next_slot - self.chosen_index - 1 < self.config.window_slots_max)

    def lease_expiry_ms(self) -> float:
        """When the leader's lease ends (on its own clock); -inf if it holds none."""
        if self.role is not Role.LEADER or not self._round_sent_ms:
            return float("-inf")
        drift = 0.0 if mutant(MUTANT_LEASE_IGNORES_DRIFT) else self.config.clock_drift_bound_ms
        latest_ms = self._round_sent_ms[self._round] if self._round in self._round_sent_ms else float("-inf")
        expiry = float("inf")
        for group in self._phase1_groups():
            times = sorted(
                (latest_ms if peer == self.node else self._peer_round_sent_ms.get(peer, float("-inf"))
                 for peer in group),
                reverse=True,
            )
            needed = len(times) // 2 + 1
            expiry = min(expiry, times[needed - 1] + self.config.lease_ms - drift)
        return expiry

    def has_read_lease(self, now_ms: float) -> bool:
        """True when a lease read is linearizable here now."""
        return (
            self.role is Role.LEADER
            and self._transfer_to is None
            and self.chosen_index >= self.barrier_slot
            and now_ms < self.lease_expiry_ms()
        )

    def _on_read(self, now_ms: float, client: NodeId, request_id: int, read: Read, out: Effects) -> None:
        if read.mode is ReadMode.STALE:
            self._counts["reads_stale"] += 1
            result = ReadResult(result=self.state.machine.query(read.op), applied_slot=self.chosen_index)
            out.append(ClientResult(client=client, request_id=request_id, result=result))
            return
        if self.role is not Role.LEADER or self._transfer_to is not None:
            out.append(self._not_leader(client, request_id))
            return
        if read.mode is ReadMode.LEASE and self.has_read_lease(now_ms):
            self._counts["reads_lease"] += 1
            result = ReadResult(result=self.state.machine.query(read.op), applied_slot=self.chosen_index)
            out.append(ClientResult(client=client, request_id=request_id, result=result))
            return
        if len(self._reads_next) + len(self._reads_in_round) + len(self._reads_apply) >= self.config.pending_reads_max:
            out.append(ClientResult(client=client, request_id=request_id,
                                    result=ErrorReply(code="overloaded", detail="too many pending reads")))
            return
        read_index = max(self.chosen_index, self.barrier_slot)
        self._reads_next.append(_PendingRead(client=client, request_id=request_id, op=read.op,
                                             read_index=read_index, mode=ReadMode.QUORUM))
        if self._reads_round == 0:
            self._send_round(now_ms, out)

    def _serve_confirmed_reads(self, now_ms: float, out: Effects) -> None:
        if self._reads_round == 0:
            return
        confirmed = {p for p, r in self._peer_round.items() if r >= self._reads_round} | {self.node}
        if not all(_majority(group, confirmed) for group in self._phase1_groups()):
            return
        self._reads_apply.extend(self._reads_in_round)
        self._reads_in_round = []
        self._reads_round = 0
        self._serve_applied_reads(out)
        if self._reads_next:
            self._send_round(now_ms, out)

    def _serve_applied_reads(self, out: Effects) -> None:
        if not self._reads_apply:
            return
        still: list[_PendingRead] = []
        for read in self._reads_apply:
            if read.read_index <= self.chosen_index:
                self._counts["reads_quorum"] += 1
                result = ReadResult(result=self.state.machine.query(read.op), applied_slot=self.chosen_index)
                out.append(ClientResult(client=read.client, request_id=read.request_id, result=result))
            else:
                still.append(read)
        self._reads_apply = still

    # ---------------------------------------------------------------- clients

    def _on_client(self, now_ms: float, client: NodeId, request_id: int, body: Message, out: Effects) -> None:
        match body:
            case Command():
                self._on_command(now_ms, client, request_id, body, out)
            case Read():
                self._on_read(now_ms, client, request_id, body, out)
            case ChangeMembers():
                self._on_change_members(now_ms, client, request_id, body, out)
            case TransferLeader():
                self._on_transfer(now_ms, client, request_id, body, out)
            case _:
                out.append(ClientResult(client=client, request_id=request_id,
                                        result=ErrorReply(code="bad_request", detail=type(body).__name__)))

    def _not_leader(self, client: NodeId, request_id: int) -> ClientResult:
        hint = self.leader if self.leader is not None and self.leader != self.node else ""
        return ClientResult(client=client, request_id=request_id,
                            result=ErrorReply(code="not_leader", detail="ask the leader", hint=hint))

    def _on_command(self, now_ms: float, client: NodeId, request_id: int, command: Command, out: Effects) -> None:
        if len(command.op) > self.config.command_bytes_max:
            self._ignore("command_too_large")
            out.append(ClientResult(client=client, request_id=request_id, result=ErrorReply(
                code="too_large", detail=f"command of {len(command.op)} bytes over {self.config.command_bytes_max}")))
            return
        if command.seq < 0 or command.seen_below < 0 or command.seen_below > command.seq + 1:
            out.append(ClientResult(client=client, request_id=request_id,
                                    result=ErrorReply(code="bad_request", detail="bad sequence numbers")))
            return
        if self.role is not Role.LEADER or self._transfer_to is not None:
            out.append(self._not_leader(client, request_id))
            return
        key = (command.client, command.seq)
        outcome, result, slot = self.state.table.lookup(command.client, command.seq)
        if outcome == Outcome.DUPLICATE:
            out.append(ClientResult(client=client, request_id=request_id,
                                    result=CommandResult(seq=command.seq, result=result, applied_slot=slot)))
            return
        if outcome == Outcome.FORGOTTEN:
            out.append(ClientResult(client=client, request_id=request_id, result=ErrorReply(
                code="result_forgotten", detail="applied; the client reported seeing the answer")))
            return
        waiters = self._waiting.get(key)
        if waiters is not None:
            if len(waiters) < 8:
                waiters.append((client, request_id))
            return
        if len(self._pending) + len(self._waiting) >= self.config.pending_commands_max:
            out.append(ClientResult(client=client, request_id=request_id,
                                    result=ErrorReply(code="overloaded", detail="too many pending commands")))
            return
        self._waiting[key] = [(client, request_id)]
        self._pending.append((command, len(command.op)))
        self._pending_bytes += len(command.op)
        self._propose_pending(now_ms, out)

    def _on_change_members(self, now_ms: float, client: NodeId, request_id: int,
                           change: ChangeMembers, out: Effects) -> None:
        if self.role is not Role.LEADER or self._transfer_to is not None:
            out.append(self._not_leader(client, request_id))
            return
        latest_from, latest = self.members_history[-1]
        new = tuple(sorted(set(change.members)))
        pending = latest_from > self.chosen_index + 1 or bool(self._admin_waiting) or any(
            p.value.kind is ValueKind.MEMBERS for p in self._proposals.values()
        )
        if len(set(new) ^ set(latest)) != 1 or len(new) == 0:
            out.append(ClientResult(client=client, request_id=request_id, result=ErrorReply(
                code="bad_request", detail="add or remove exactly one replica")))
            return
        if pending or self.next_slot - self.chosen_index - 1 >= self.config.window_slots_max:
            out.append(ClientResult(client=client, request_id=request_id, result=ErrorReply(
                code="busy", detail="a membership change is in progress; retry")))
            return
        slot = self.next_slot
        self.next_slot += 1
        self._admin_waiting[slot] = (client, request_id)
        self._propose_entries(now_ms, [Entry(slot=slot, ballot=self.ballot,
                                             value=Value(kind=ValueKind.MEMBERS, members=new))], out)

    def _on_transfer(self, now_ms: float, client: NodeId, request_id: int,
                     transfer: TransferLeader, out: Effects) -> None:
        if self.role is not Role.LEADER or self._transfer_to is not None:
            out.append(self._not_leader(client, request_id))
            return
        if transfer.to == self.node or transfer.to not in self._current_members():
            out.append(ClientResult(client=client, request_id=request_id, result=ErrorReply(
                code="bad_request", detail=f"{transfer.to} is not another member")))
            return
        self._transfer_to = transfer.to
        out.append(ClientResult(client=client, request_id=request_id, result=Done(detail=f"to {transfer.to}")))
        self._continue_transfer(now_ms, out)

    def _continue_transfer(self, now_ms: float, out: Effects) -> None:
        """Once every slot in flight is chosen, release the lease, tell the target
        to campaign, and step down."""
        if self._proposals:
            return
        target = self._transfer_to
        assert target is not None
        ballot = self.ballot
        release = LeaseRelease(ballot=ballot)
        for peer in self._all_peers():
            out.append(Send(to=peer, message=release))
        out.append(Send(to=target, message=TimeoutNow(ballot=ballot)))
        self.lease_granted_until_ms = float("-inf")
        self._transfer_to = None
        self._counts["transfers"] += 1
        self.become_follower(now_ms, target, ballot, out)
        self.leader_contact_ms = now_ms

    # ---------------------------------------------------------------- learning and applying

    def _learn(self, now_ms: float, source: NodeId, ballot: Ballot, leader_chosen: int,
               out: Effects, records: list[Message]) -> None:
        """Mark slots chosen up to the leader's chosen index where my entry holds
        the leader's value; ask for catch-up where it does not."""
        self._leader_chosen_hint = max(self._leader_chosen_hint, leader_chosen)
        before = self.chosen_index
        slot = self.chosen_index + 1
        while slot <= leader_chosen:
            entry = self.log.get(slot)
            if entry is None or (entry.ballot != ballot and entry.ballot != BALLOT_CHOSEN):
                break
            if entry.ballot != BALLOT_CHOSEN:
                self.log[slot] = Entry(slot=slot, ballot=BALLOT_CHOSEN, value=entry.value)
            slot += 1
        if slot - 1 > before:
            self._advance_chosen(now_ms, out)
        if self.chosen_index < leader_chosen:
            self._request_catchup(now_ms, source, out)
        self._note_learned(records)

    def _note_learned(self, records: list[Message]) -> None:
        if self.chosen_index > self.learned_persisted and (
            records or self.chosen_index - self.learned_persisted >= self.config.window_slots_max
        ):
            records.append(LearnedRecord(chosen_index=self.chosen_index))
            self.learned_persisted = self.chosen_index

    def _advance_chosen(self, now_ms: float, out: Effects) -> None:
        """Apply every slot after the chosen prefix whose entry is marked chosen."""
        while True:
            slot = self.chosen_index + 1
            entry = self.log.get(slot)
            if entry is None or entry.ballot != BALLOT_CHOSEN:
                break
            self.chosen_index = slot
            self._apply(slot, entry.value, out)
        self._serve_applied_reads(out)
        if self.chosen_index - self.snapshot_index >= self.config.snapshot_interval_slots:
            self._take_snapshot(out)

    def _apply(self, slot: int, value: Value, out: Effects) -> None:
        if self.observer is not None:
            self.observer(self.node, slot, value)
        match value.kind:
            case ValueKind.NOOP:
                pass
            case ValueKind.COMMANDS:
                for command in value.commands:
                    outcome, result, result_slot = self.state.apply(
                        command.client, command.seq, command.seen_below, command.op, slot)
                    if outcome == Outcome.FRESH:
                        self._counts["commands_applied"] += 1
                    else:
                        self._counts["commands_duplicate"] += 1
                    waiters = self._waiting.pop((command.client, command.seq), None)
                    if waiters is None:
                        continue
                    answer: Message
                    if outcome == Outcome.FORGOTTEN:
                        answer = ErrorReply(code="result_forgotten", detail="applied earlier")
                    else:
                        answer = CommandResult(seq=command.seq, result=result, applied_slot=result_slot)
                    for client, request_id in waiters:
                        out.append(ClientResult(client=client, request_id=request_id, result=answer))
            case ValueKind.MEMBERS:
                self.members_history.append((slot + self.config.window_slots_max, value.members))
                if self.role is Role.LEADER:
                    # No-ops up to the slot before the new set governs: the change
                    # takes effect now, not after window_slots_max client writes.
                    self._activate_until = max(self._activate_until, slot + self.config.window_slots_max - 1)
                self._prune_members_history()
                admin = self._admin_waiting.pop(slot, None)
                if admin is not None:
                    out.append(ClientResult(client=admin[0], request_id=admin[1],
                                            result=Done(detail=f"members {','.join(value.members)}")))
        if slot % EVICTION_INTERVAL_SLOTS == 0:
            self.state.table.evict(slot)

    def _prune_members_history(self) -> None:
        # Keep the configuration governing the slot after the chosen prefix and
        # every later one.
        while len(self.members_history) > 1 and self.members_history[1][0] <= self.chosen_index + 1:
            self.members_history.pop(0)

    # ---------------------------------------------------------------- snapshots and catch-up

    def _take_snapshot(self, out: Effects) -> None:
        index = self.chosen_index
        self._prune_members_history()
        previous, current, current_from = self._members_snapshot_fields()
        record = SnapshotRecord(index=index, chunks=self.state.snapshot_chunks(), previous_members=previous,
                                members=current, members_from_slot=current_from)
        self._snapshot = record
        self._snapshot_blob = None
        self.snapshot_index = index
        for slot in [s for s in self.log if s <= index]:
            del self.log[slot]
        self._counts["snapshots_taken"] += 1
        self.learned_persisted = max(self.learned_persisted, index)
        # The driver drops every WAL record persisted before this effect, so the
        # snapshot carries all the durable state they held: the promise, the
        # entries accepted above the snapshot, the learned index (replayed like
        # WAL records at start).
        records: list[Message] = [record, PromiseRecord(ballot=self.promised)]
        above = tuple(self.log[slot] for slot in sorted(self.log))
        if above:
            records.append(AcceptRecord(entries=above))
        records.append(LearnedRecord(chosen_index=self.learned_persisted))
        out.append(SaveSnapshot(chunks=tuple(encode(r) for r in records)))

    def _members_snapshot_fields(self) -> tuple[tuple[NodeId, ...], tuple[NodeId, ...], int]:
        if len(self.members_history) == 1:
            only = self.members_history[0][1]
            return only, only, 1
        invariant(len(self.members_history) == 2, "at most one pending membership change")
        return self.members_history[0][1], self.members_history[1][1], self.members_history[1][0]

    def _install_snapshot_state(self, record: SnapshotRecord) -> None:
        self.state.restore(record.chunks)
        self.snapshot_index = record.index
        self.chosen_index = record.index
        self._snapshot = record
        self._snapshot_blob = None
        if record.members_from_slot <= record.index + 1:
            self.members_history = [(1, record.members)]
        else:
            self.members_history = [(1, record.previous_members), (record.members_from_slot, record.members)]
        for slot in [s for s in self.log if s <= record.index]:
            del self.log[slot]

    def _request_catchup(self, now_ms: float, source: NodeId, out: Effects, *, force: bool = False) -> None:
        if not force and now_ms < self._catchup_next_ms:
            return
        self._catchup_next_ms = now_ms + self.config.catchup_retry_ms
        self._counts["catchup_requests"] += 1
        if self._assembly is not None and self._assembly.index <= self.chosen_index:
            # Entries carried this replica past the snapshot it was assembling:
            # asking for more of it would be answered with chunks it must ignore
            # as old, forever (lock sim seed 113 with -o window=4).
            self._counts["snapshot_assemblies_abandoned"] += 1
            self._assembly = None
        if self._assembly is not None:
            request = CatchupRequest(from_slot=self.chosen_index + 1, snapshot_index=self._assembly.index,
                                     chunk=len(self._assembly.chunks))
        else:
            request = CatchupRequest(from_slot=self.chosen_index + 1)
        out.append(Send(to=source, message=request))

    def _on_catchup_request(self, now_ms: float, source: NodeId, message: CatchupRequest, out: Effects) -> None:
        if message.from_slot < 1 or message.chunk < 0:
            self._ignore("catchup_forged")
            return
        if message.from_slot <= self.snapshot_index:
            # The log no longer reaches back to from_slot (a requester in the
            # middle of a snapshot is below its index too). Above it, entries
            # serve the requester even if it was assembling an older snapshot.
            self._send_snapshot_chunk(source, message, out)
            return
        entries: list[Entry] = []
        size = 0
        slot = message.from_slot
        while slot <= self.chosen_index and len(entries) < self.config.catchup_entries_max:
            entry = self.log[slot]
            size += sum(len(c.op) for c in entry.value.commands)
            if entries and size > self.config.catchup_bytes_max:
                break
            entries.append(entry)
            slot += 1
        out.append(Send(to=source, message=CatchupReply(entries=tuple(entries), chosen_index=self.chosen_index)))

    def _send_snapshot_chunk(self, source: NodeId, message: CatchupRequest, out: Effects) -> None:
        record = self._snapshot
        if record is None:
            self._ignore("catchup_no_snapshot")
            return
        if self._snapshot_blob is None or self._snapshot_blob[0] != record.index:
            blob: bytes = msgpack.packb(list(record.chunks), use_bin_type=True)
            step = self.config.snapshot_chunk_bytes_max
            pieces = tuple(blob[i : i + step] for i in range(0, len(blob), step)) or (b"",)
            self._snapshot_blob = (record.index, pieces)
        index, pieces = self._snapshot_blob
        chunk = message.chunk if message.snapshot_index == index else 0
        if chunk >= len(pieces):
            self._ignore("catchup_chunk_out_of_range")
            return
        out.append(Send(to=source, message=SnapshotChunk(
            index=index, chunk=chunk, chunk_count=len(pieces), data=pieces[chunk],
            previous_members=record.previous_members, members=record.members,
            members_from_slot=record.members_from_slot,
        )))

    def _on_catchup_reply(self, now_ms: float, source: NodeId, message: CatchupReply, out: Effects) -> None:
        if len(message.entries) > self.config.catchup_entries_max:
            self._ignore("catchup_oversized")
            return
        accepted: list[Entry] = []
        for entry in message.entries:
            if entry.ballot != BALLOT_CHOSEN or not self._valid_value(entry.value):
                self._ignore("catchup_entry_bad")
                return
            if entry.slot <= self.chosen_index:
                continue
            if entry.slot != self.chosen_index + 1 + len(accepted):
                break
            accepted.append(entry)
        if not accepted:
            return
        for entry in accepted:
            self.log[entry.slot] = entry
        self._advance_chosen(now_ms, out)
        records: list[Message] = [AcceptRecord(entries=tuple(accepted))]
        self._note_learned(records)
        self._persist(out, tuple(records))
        self._catchup_next_ms = float("-inf")
        if self.chosen_index < max(message.chosen_index, self._leader_chosen_hint):
            self._request_catchup(now_ms, source, out)

    def _on_snapshot_chunk(self, now_ms: float, source: NodeId, message: SnapshotChunk, out: Effects) -> None:
        if (message.chunk_count < 1 or message.chunk_count > SNAPSHOT_CHUNKS_MAX
                or not 0 <= message.chunk < message.chunk_count
                or len(message.data) > self.config.snapshot_chunk_bytes_max
                or not message.members):
            self._ignore("snapshot_chunk_bad")
            return
        if message.index <= self.chosen_index:
            self._ignore("snapshot_chunk_old")
            return
        if message.chunk == 0:
            self._assembly = _Assembly(index=message.index, chunk_count=message.chunk_count, chunks=[],
                                       previous_members=message.previous_members, members=message.members,
                                       members_from_slot=message.members_from_slot)
        assembly = self._assembly
        if assembly is None or assembly.index != message.index or message.chunk != len(assembly.chunks):
            self._ignore("snapshot_chunk_unexpected")
            return
        assembly.chunks.append(message.data)
        if len(assembly.chunks) < assembly.chunk_count:
            self._catchup_next_ms = float("-inf")
            self._request_catchup(now_ms, source, out)
            return
        self._assembly = None
        try:
            chunks = msgpack.unpackb(b"".join(assembly.chunks), raw=False)
            if not isinstance(chunks, list) or not all(isinstance(c, bytes) for c in chunks):
                raise RemoteProtocolError("snapshot is not a list of chunks")
            record = SnapshotRecord(index=assembly.index, chunks=tuple(chunks),
                                    previous_members=assembly.previous_members, members=assembly.members,
                                    members_from_slot=assembly.members_from_slot)
            self._install_snapshot_state(record)
        except (RemoteProtocolError, ValueError, TypeError, msgpack.UnpackException):
            self._ignore("snapshot_undecodable")
            return
        self._counts["snapshots_installed"] += 1
        self.learned_persisted = max(self.learned_persisted, self.chosen_index)
        self._persist(out, (record,))
        self._advance_chosen(now_ms, out)
        self._catchup_next_ms = float("-inf")
        if self.chosen_index < self._leader_chosen_hint:
            self._request_catchup(now_ms, source, out)

    # ---------------------------------------------------------------- recovery

    def _replay(self, record: Message) -> None:
        match record:
            case PromiseRecord(ballot=ballot):
                self.promised = max(self.promised, ballot)
            case AcceptRecord(entries=entries):
                for entry in entries:
                    if entry.ballot != BALLOT_CHOSEN:
                        self.promised = max(self.promised, entry.ballot)
                    if entry.slot <= self.snapshot_index:
                        continue
                    known = self.log.get(entry.slot)
                    if known is not None and known.ballot == BALLOT_CHOSEN:
                        continue
                    self.log[entry.slot] = entry
            case LearnedRecord(chosen_index=chosen_index):
                self.learned_persisted = max(self.learned_persisted, chosen_index)
            case SnapshotRecord():
                if record.index > self.snapshot_index:
                    self._snapshot = record
                    self.snapshot_index = record.index
                    for slot in [s for s in self.log if s <= record.index]:
                        del self.log[slot]
            case _:
                raise RemoteProtocolError(f"unknown WAL record {type(record).__name__}")

    # ---------------------------------------------------------------- helpers

    def _persist(self, out: Effects, records: tuple[Message, ...],
                 durable: tuple[str, Ballot, tuple[int, ...]] | None = None) -> None:
        then: tuple[Effect, ...] = ()
        if durable is not None:
            self._persist_seq += 1
            self._durable[self._persist_seq] = durable
            then = (SetTimer(key=f"durable/{self._persist_seq}", delay_ms=0.0),)
        out.append(Persist(records=tuple(encode(r) for r in records), then=then))

    def _answer(self, out: Effects, records: tuple[Message, ...], reply: Send) -> None:
        """Persist ``records``, THEN send ``reply`` (the acceptor's rule)."""
        encoded = tuple(encode(r) for r in records)
        if mutant(MUTANT_ANSWER_BEFORE_PERSIST):
            out.append(reply)
            out.append(Persist(records=encoded))
        else:
            out.append(Persist(records=encoded, then=(reply,)))

    def _election_delay_ms(self) -> float:
        timeout = self.config.election_timeout_ms
        return timeout + self.rng.random() * timeout

    def _ignore(self, reason: str) -> None:
        self._ignored[reason] += 1

    def _members_for_slot(self, slot: int) -> tuple[NodeId, ...]:
        members = self.members_history[0][1]
        for first, group in self.members_history:
            if first <= slot:
                members = group
            else:
                break
        return members

    def _current_members(self) -> tuple[NodeId, ...]:
        return self._members_for_slot(self.chosen_index + 1)

    def _phase1_groups(self) -> list[tuple[NodeId, ...]]:
        """Every member set that governs a slot after the chosen prefix."""
        first = self.chosen_index + 1
        groups = [self._members_for_slot(first)]
        groups.extend(group for start, group in self.members_history if start > first)
        return groups

    def _phase1_peers(self) -> list[NodeId]:
        peers: set[NodeId] = set()
        for group in self._phase1_groups():
            peers.update(group)
        peers.discard(self.node)
        return sorted(peers)

    def _all_peers(self) -> list[NodeId]:
        return self._phase1_peers()

    # ================================================================ observability

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def proposals_in_flight(self) -> int:
        return len(self._proposals)

    def digest(self) -> str:
        return self.state.digest()

    def chosen_values(self) -> dict[int, Value]:
        """The chosen entries this replica still holds in its log."""
        return {s: e.value for s, e in self.log.items() if s <= self.chosen_index}

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(
            node=self.node, role=self.role, ballot=self.ballot, promised=self.promised,
            leader=self.leader, chosen_index=self.chosen_index, snapshot_index=self.snapshot_index,
            log_entries=len(self.log), proposals_in_flight=len(self._proposals),
            pending_commands=len(self._pending),
            pending_reads=len(self._reads_next) + len(self._reads_in_round) + len(self._reads_apply),
            members=self._current_members(),
            commands_applied=self._counts["commands_applied"],
            commands_duplicate=self._counts["commands_duplicate"],
            slots_proposed=self._counts["slots_proposed"],
            reads_lease=self._counts["reads_lease"], reads_quorum=self._counts["reads_quorum"],
            reads_stale=self._counts["reads_stale"],
            elections_started=self._counts["elections_started"], leaderships=self._counts["leaderships"],
            snapshots_taken=self._counts["snapshots_taken"],
            snapshots_installed=self._counts["snapshots_installed"],
            catchup_requests=self._counts["catchup_requests"],
            ignored=tuple(sorted(self._ignored.items())), digest=self.digest(),
        )

    def status_line(self) -> str:
        """One line for simulation traces."""
        return (f"{self.node} {self.role.value} b={self.promised} leader={self.leader} "
                f"chosen={self.chosen_index} snap={self.snapshot_index} inflight={len(self._proposals)}")

    def check_invariants(self) -> None:
        invariant(self.snapshot_index <= self.chosen_index, "snapshot beyond the chosen prefix")
        for slot, entry in self.log.items():
            invariant(slot == entry.slot, f"log slot {slot} holds entry for {entry.slot}")
            invariant(slot > self.snapshot_index, f"slot {slot} kept below the snapshot")
            if slot <= self.chosen_index:
                invariant(entry.ballot == BALLOT_CHOSEN, f"slot {slot} applied but not marked chosen")
            elif entry.ballot != BALLOT_CHOSEN:
                invariant(entry.ballot <= self.promised, f"slot {slot} accepted above the promise")
        if self.chosen_index > self.snapshot_index:
            invariant(self.chosen_index in self.log, "chosen prefix has a hole")
        invariant(self.chosen_index + 1 not in self.log or self.log[self.chosen_index + 1].ballot != BALLOT_CHOSEN,
                  "a chosen slot right after the prefix was not applied")
        invariant(self.learned_persisted <= self.chosen_index, "learned beyond the chosen prefix")
        if self.role is Role.LEADER:
            invariant(self.promised == self.ballot, "leader's ballot was superseded but it still leads")
            invariant(self.next_slot > self.chosen_index, "next slot inside the chosen prefix")
            for slot in self._proposals:
                invariant(self.chosen_index < slot < self.next_slot, f"proposal {slot} outside the window")
            invariant(len(self._pending) <= self.config.pending_commands_max, "pending queue over its bound")
        else:
            invariant(not self._proposals, "a non-leader has proposals in flight")
            invariant(not self._waiting, "a non-leader has clients waiting")
        invariant(len(self.members_history) <= 2, "more than one pending membership change")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaFactory:
    """A ``synod.core.CoreFactory`` building replicas of one group."""

    members: tuple[NodeId, ...]
    machine: Callable[[], StateMachine]
    config: PaxosConfig | None = None
    observer: Callable[[NodeId, int, Value], None] | None = None

    def __call__(self, node: NodeId, rng: random.Random) -> PaxosReplica:
        return PaxosReplica(node, rng, members=self.members, machine=self.machine(),
                            config=self.config, observer=self.observer)


def replica_factory(
    members: tuple[NodeId, ...],
    machine: Callable[[], StateMachine],
    config: PaxosConfig | None = None,
    observer: Callable[[NodeId, int, Value], None] | None = None,
) -> ReplicaFactory:
    """A ``synod.core.CoreFactory`` building replicas of one group."""
    return ReplicaFactory(members=members, machine=machine, config=config, observer=observer)
