"""Claims of Chubby sections 2.5, 2.8 and 2.9 about the master glue and the
client session, on a calm simulated cell."""

from __future__ import annotations

from synod.codec.kernel import ClientRequest
from synod.codec.registry import Message
from synod.core.effects import Send
from synod.core.ids import NodeId
from synod.lock.messages import (
    Acquire,
    Acquired,
    Contents,
    Create,
    EventKind,
    ExpireSession,
    GetContents,
    LockCall,
    LockCallBatch,
    LockCallBatchReply,
    LockReply,
    NodeMeta,
    OpenSessions,
    OpError,
    SessionsOpened,
    Write,
)
from synod.lock.sequencer import LockMode
from synod.lock.session import SessionState
from tests.lock.cell import Cell

C1, C2 = NodeId("c1"), NodeId("c2")
ROOT = "/ls/sim"


def test_a_session_stays_safe_through_held_keepalives() -> None:
    cell = Cell()
    cell.open(C1)
    master = cell.wait_master()
    cell.simulation.run_for(5 * cell.config.lease_ms)
    session = cell.client(C1).session
    assert session.state is SessionState.SAFE
    # KeepAlives are held open: far fewer than one per tick.
    assert master.statistics().keepalives < 5 * cell.config.lease_ms / (cell.config.lease_ms - cell.config.keepalive_early_ms) + 3


def test_cached_read_needs_no_round_trip_and_write_invalidates_first() -> None:
    cell = Cell()
    s1, s2 = cell.open(C1), cell.open(C2)
    path = f"{ROOT}/cfg"
    assert isinstance(cell.call(C1, lambda s, now, done: s.call(now, Create(session=s1, path=path, contents=b"v1"), done)), NodeMeta)
    once = cell.call(C2, lambda s, now, done: s.read(now, path, done))
    assert isinstance(once, Contents) and once.contents == b"v1"
    assert path not in cell.client(C2).session.cache.entries, "cached on its first read"
    first = cell.call(C2, lambda s, now, done: s.read(now, path, done))
    assert isinstance(first, Contents) and first.contents == b"v1"
    assert path in cell.client(C2).session.cache.entries
    before = cell.master().statistics().calls  # type: ignore[union-attr]
    again = cell.call(C2, lambda s, now, done: s.read(now, path, done))
    assert again == first
    assert cell.master().statistics().calls == before  # type: ignore[union-attr]
    assert cell.client(C2).session.statistics().cache_hits == 1
    # The write waits for c2's cache to drop the entry, then is chosen.
    wrote = cell.call(C1, lambda s, now, done: s.call(now, Write(session=s1, path=path, contents=b"v2"), done))
    assert isinstance(wrote, NodeMeta)
    assert cell.master().statistics().invalidations_sent >= 1  # type: ignore[union-attr]
    assert path not in cell.client(C2).session.cache.entries
    fresh = cell.call(C2, lambda s, now, done: s.read(now, path, done))
    assert isinstance(fresh, Contents) and fresh.contents == b"v2"
    assert s2 > 0


def test_a_write_waits_for_a_silent_cache_holder_until_its_lease_ends() -> None:
    cell = Cell()
    s1, _s2 = cell.open(C1), cell.open(C2)
    path = f"{ROOT}/cfg"
    cell.call(C1, lambda s, now, done: s.call(now, Create(session=s1, path=path, contents=b"v1"), done))
    for _ in range(cell.config.cache_admission_reads):
        cell.call(C2, lambda s, now, done: s.read(now, path, done))
    assert path in cell.client(C2).session.cache.entries
    # c2 goes silent: it gets nothing and its KeepAlives do not arrive.
    cell.simulation.partition([C2], ["n1", "n2", "n3"], 10_000.0)
    start = cell.simulation.now_ms
    wrote = cell.call(C1, lambda s, now, done: s.call(now, Write(session=s1, path=path, contents=b"v2"), done))
    assert isinstance(wrote, NodeMeta)
    waited = cell.simulation.now_ms - start
    assert waited >= cell.config.keepalive_early_ms, "the write did not wait for the cache holder"
    assert waited <= 2 * cell.config.lease_ms + 200


def _cache(cell: Cell, node: NodeId, path: str) -> None:
    for _ in range(cell.config.cache_admission_reads):
        cell.call(node, lambda s, now, done: s.read(now, path, done))
    assert path in cell.client(node).session.cache.entries


def test_a_writer_is_not_sent_an_invalidation_of_its_own_copy_and_does_not_keep_it() -> None:
    # The writer dropped its copy before sending the change, so the master does
    # not wait for it. It does not keep what it wrote as a cached copy: a write
    # the previous mastership proposed may still be chosen after it (sim seed
    # 10200: write-through, since removed, served a stale copy that way).
    cell = Cell()
    s1, s2 = cell.open(C1), cell.open(C2)
    path = f"{ROOT}/own"
    cell.call(C1, lambda s, now, done: s.call(now, Create(session=s1, path=path, contents=b"v1"), done))
    _cache(cell, C1, path)
    master = cell.wait_master()
    sent = master.statistics().invalidations_sent
    wrote = cell.call(C1, lambda s, now, done: s.call(now, Write(session=s1, path=path, contents=b"v2"), done))
    assert isinstance(wrote, NodeMeta)
    assert master.statistics().invalidations_sent == sent, "the writer was sent an invalidation of its own copy"
    assert path not in cell.client(C1).session.cache.entries
    calls = master.statistics().calls
    fresh = cell.call(C1, lambda s, now, done: s.read(now, path, done))
    assert isinstance(fresh, Contents) and fresh.contents == b"v2" and fresh.meta == wrote
    assert master.statistics().calls == calls + 1, "the read after the write asks the master"
    wrote = cell.call(C2, lambda s, now, done: s.call(now, Write(session=s2, path=path, contents=b"v3"), done))
    assert isinstance(wrote, NodeMeta)
    fresh = cell.call(C1, lambda s, now, done: s.read(now, path, done))
    assert isinstance(fresh, Contents) and fresh.contents == b"v3"


def test_a_read_answered_before_the_sessions_own_write_is_not_cached() -> None:
    # The master does not wait for the writer's own copy, so the writer must
    # not cache a reply that left before its write was taken.
    cell = Cell()
    s1 = cell.open(C1)
    path = f"{ROOT}/race"
    cell.call(C1, lambda s, now, done: s.call(now, Create(session=s1, path=path, contents=b"v1"), done))
    _cache(cell, C1, path)
    answers: list[Message] = []
    cached_with_the_read: list[bool] = []

    def read_answered(result: Message) -> None:
        answers.append(result)
        cached_with_the_read.append(path in cell.client(C1).session.cache.entries)

    master = cell.wait_master()
    calls = master.statistics().calls
    cell.act(C1, lambda session, now: session.call(now, GetContents(session=s1, path=path), read_answered,
                                                   cache=True))
    while master.statistics().calls == calls:
        cell.simulation.run_for(0.01)
    # The master answered the read; its reply is on the way as the write leaves.
    assert not answers
    cell.act(C1, lambda session, now: session.call(now, Write(session=s1, path=path, contents=b"v2"),
                                                   answers.append))
    while len(answers) < 2:
        cell.simulation.run_for(1.0)
    assert isinstance(answers[0], Contents) and answers[0].contents == b"v1"
    assert cached_with_the_read == [False], "cached a reply older than its own write"
    assert isinstance(answers[1], NodeMeta)
    assert path not in cell.client(C1).session.cache.entries


def test_a_batched_open_starts_many_sessions_in_one_command_and_a_core_adopts_one() -> None:
    cell = Cell()
    master = cell.wait_master()
    call = LockCall(epoch=0, incarnation=7, seq=1, seen_below=1,
                    op=OpenSessions(principal="ignored: the master names it", count=3, now_ms=0.0))
    cell.simulation.execute_for(C1, [Send(to=master.node, message=ClientRequest(request_id=10**9, body=call))])
    cell.simulation.run_for(200.0)
    (reply,) = [r for r in cell.client(C1).replies if r.request_id == 10**9]
    assert isinstance(reply.body, LockReply) and isinstance(reply.body.result, SessionsOpened)
    opened = reply.body.result
    assert opened.count == 3 and opened.principal == "c1"
    sessions = range(opened.first, opened.first + 3)
    assert all(master.namespace.principal_of(s) == "c1" for s in sessions)
    assert all(s in master.sessions for s in sessions)
    # One of them is adopted by a session core, which keeps it alive; the two
    # nobody keeps alive expire when their lease runs out.
    epoch = reply.body.epoch
    cell.act(C1, lambda session, now: session.adopt(now, opened.first, epoch, now))
    cell.simulation.run_for(4 * cell.config.lease_ms)
    session = cell.client(C1).session
    assert session.state is SessionState.SAFE and session.session == opened.first
    assert master.namespace.principal_of(opened.first) == "c1"
    assert master.namespace.principal_of(opened.first + 1) is None
    assert master.namespace.principal_of(opened.first + 2) is None
    path = f"{ROOT}/adopted"
    made = cell.call(C1, lambda s, now, done: s.call(now, Create(session=opened.first, path=path), done))
    assert isinstance(made, NodeMeta)


def test_a_call_batch_is_answered_once_with_each_calls_own_answer_in_order() -> None:
    cell = Cell()
    s1 = cell.open(C1)
    master = cell.wait_master()
    session = cell.client(C1).session
    path = f"{ROOT}/batched"

    def call(seq: int, op: Message) -> LockCall:
        return LockCall(epoch=session.epoch, incarnation=99, seq=seq, seen_below=1, op=op)

    batch = LockCallBatch(calls=(
        call(1, Create(session=s1, path=path, contents=b"a")),
        call(2, Acquire(session=s1, path=path, mode=LockMode.EXCLUSIVE, now_ms=0.0)),
        call(3, Write(session=s1 + 1000, path=path, contents=b"b")),  # not c1's session
        call(4, Create(session=s1, path=path)),  # exists
    ))
    cell.simulation.execute_for(C1, [Send(to=master.node, message=ClientRequest(request_id=10**9, body=batch))])
    cell.simulation.run_for(200.0)
    (reply,) = [r for r in cell.client(C1).replies if r.request_id == 10**9]
    assert isinstance(reply.body, LockCallBatchReply)
    results = [r.result for r in reply.body.replies if isinstance(r, LockReply)]
    assert len(results) == 4
    assert isinstance(results[0], NodeMeta) and isinstance(results[1], Acquired)
    assert isinstance(results[2], OpError) and results[2].code == "session_expired"
    assert isinstance(results[3], OpError) and results[3].code == "exists"
    assert master.namespace.holders(path) == (s1,)


def test_events_arrive_after_the_change_in_order() -> None:
    cell = Cell()
    s1, s2 = cell.open(C1), cell.open(C2)
    path = f"{ROOT}/watched"
    cell.call(C1, lambda s, now, done: s.call(now, Create(session=s1, path=path), done))
    cell.call(C2, lambda s, now, done: s.subscribe(now, path, (EventKind.CONTENTS_MODIFIED,), done))
    for value in (b"a", b"b", b"c"):
        cell.call(C1, lambda s, now, done, value=value: s.call(now, Write(session=s1, path=path, contents=value), done))
    cell.simulation.run_for(50.0)
    heard = [e for e in cell.client(C2).events if e.kind is EventKind.CONTENTS_MODIFIED]
    assert len(heard) == 3
    assert [e.index for e in heard] == sorted(e.index for e in heard)
    assert s2 > 0


def test_expiry_is_proposed_by_the_master_and_frees_locks_after_lock_delay() -> None:
    cell = Cell()
    s1, s2 = cell.open(C1), cell.open(C2)
    path = f"{ROOT}/lock"
    cell.call(C1, lambda s, now, done: s.call(now, Create(session=s1, path=path), done))
    got = cell.call(C1, lambda s, now, done: s.call(now, Acquire(session=s1, path=path, mode=LockMode.EXCLUSIVE, now_ms=0.0), done))
    assert isinstance(got, Acquired)
    cell.simulation.partition([C1], ["n1", "n2", "n3"], 100_000.0)
    # A reply held when the cut came still extended the lease once.
    cell.simulation.run_for(2 * cell.config.lease_ms + 50)
    assert s1 not in cell.wait_master().namespace.session_ids()
    busy = cell.call(C2, lambda s, now, done: s.call(now, Acquire(session=s2, path=path, mode=LockMode.EXCLUSIVE, now_ms=0.0), done))
    assert isinstance(busy, OpError) and busy.code == "lock_delay"
    cell.simulation.run_for(cell.config.lock_delay_ms)
    got2 = cell.call(C2, lambda s, now, done: s.call(now, Acquire(session=s2, path=path, mode=LockMode.EXCLUSIVE, now_ms=0.0), done))
    assert isinstance(got2, Acquired) and got2.sequencer.lock_generation == 2
    # The cut-off client's library noticed: jeopardy, then expired after the grace period.
    cell.simulation.run_for(cell.config.grace_ms + cell.config.lease_ms)
    assert cell.client(C1).session.state is SessionState.EXPIRED


def test_clients_may_not_expire_sessions_or_use_others_sessions() -> None:
    cell = Cell()
    s1, s2 = cell.open(C1), cell.open(C2)
    refused = cell.call(C1, lambda s, now, done: s.call(now, ExpireSession(session=s2, now_ms=0.0), done))
    assert isinstance(refused, OpError) and refused.code == "bad_request"
    stolen = cell.call(C1, lambda s, now, done: s.call(now, Create(session=s2, path=f"{ROOT}/x"), done))
    assert isinstance(stolen, OpError) and stolen.code == "permission_denied"
    assert s2 in cell.wait_master().namespace.session_ids() and s1 > 0


def test_failover_bumps_the_epoch_keeps_sessions_and_tells_clients() -> None:
    cell = Cell()
    s1 = cell.open(C1)
    path = f"{ROOT}/cfg"
    cell.call(C1, lambda s, now, done: s.call(now, Create(session=s1, path=path, contents=b"v"), done))
    cell.call(C1, lambda s, now, done: s.read(now, path, done))
    old = cell.wait_master()
    old_epoch = old.epoch
    cell.simulation.crash(old.node)
    cell.simulation.run_for(cell.config.lease_ms)
    new = cell.wait_master()
    assert new.node != old.node and new.epoch > old_epoch
    cell.simulation.run_for(cell.config.lease_ms)
    session = cell.client(C1).session
    assert session.state is SessionState.SAFE, "the session survived the failover"
    assert session.epoch == new.epoch
    assert any(e.kind is EventKind.MASTER_FAILED_OVER for e in cell.client(C1).events)
    assert path not in session.cache.entries or session.statistics().failovers >= 1
    wrote = cell.call(C1, lambda s, now, done: s.call(now, Write(session=s1, path=path, contents=b"w"), done))
    assert isinstance(wrote, NodeMeta)
