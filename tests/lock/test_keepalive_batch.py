"""KeepAlives of many sessions in one request (``KeepAliveBatch``): the master
holds the batch as one, answers every entry as a single KeepAlive of that
session would be answered, and answers at once when any entry needs it."""

from __future__ import annotations

from synod.codec.kernel import ClientRequest, ErrorReply
from synod.codec.registry import Message
from synod.core.effects import ClientResult, Effects, SetTimer
from synod.core.ids import NodeId
from synod.lock.messages import (
    Contents,
    Create,
    KeepAlive,
    KeepAliveBatch,
    KeepAliveBatchReply,
    KeepAliveReply,
    LockCall,
    NodeMeta,
    Write,
)
from synod.lock.server import TIMER_PREFIX, LockServer
from tests.lock.cell import REPLICAS, Cell

C1, C2 = NodeId("c1"), NodeId("c2")


def _results(effects: Effects, request_id: int) -> list[Message]:
    return [e.result for e in effects if isinstance(e, ClientResult) and e.request_id == request_id]


def _batch(master: LockServer, source: NodeId, request_id: int, *keepalives: KeepAlive) -> Effects:
    now = master._now_ms
    return master.on_message(now, source, ClientRequest(request_id=request_id,
                                                        body=KeepAliveBatch(keepalives=keepalives)))


def test_an_idle_batch_is_held_then_every_entry_gets_its_lease() -> None:
    cell = Cell()
    s1 = cell.open(C1)
    master = cell.wait_master()
    effects = _batch(master, C1, 900_001, KeepAlive(session=s1, epoch=master.epoch))
    assert _results(effects, 900_001) == [], "an idle batch is answered at once"
    timers = [e for e in effects if isinstance(e, SetTimer) and e.key.startswith(f"{TIMER_PREFIX}kab/")]
    assert len(timers) == 1
    assert timers[0].delay_ms <= cell.config.lease_ms - cell.config.keepalive_early_ms
    lease_end_before = master.sessions[s1].lease_end_ms
    answered = master.on_timer(master._now_ms + timers[0].delay_ms, timers[0].key)
    [reply] = _results(answered, 900_001)
    assert isinstance(reply, KeepAliveBatchReply) and len(reply.replies) == 1
    entry = reply.replies[0]
    assert isinstance(entry, KeepAliveReply) and not entry.failover and entry.epoch == master.epoch
    assert entry.lease_ms >= cell.config.lease_ms
    assert master.sessions[s1].lease_end_ms > lease_end_before
    # Answered once: the timer firing again finds nothing to answer.
    assert _results(master.on_timer(master._now_ms, timers[0].key), 900_001) == []


def test_a_refused_entry_answers_the_batch_at_once_and_the_others_get_leases() -> None:
    cell = Cell()
    s1, s2 = cell.open(C1), cell.open(C2)
    master = cell.wait_master()
    effects = _batch(master, C1, 900_002, KeepAlive(session=s1, epoch=master.epoch),
                     KeepAlive(session=s2, epoch=master.epoch))
    [reply] = _results(effects, 900_002)
    assert isinstance(reply, KeepAliveBatchReply)
    mine, theirs = reply.replies
    assert isinstance(mine, KeepAliveReply) and mine.lease_ms > 0
    assert isinstance(theirs, ErrorReply) and theirs.code == "permission_denied"


def test_an_entry_from_an_older_epoch_gets_the_failover_notice() -> None:
    cell = Cell()
    s1 = cell.open(C1)
    master = cell.wait_master()
    [reply] = _results(_batch(master, C1, 900_003, KeepAlive(session=s1, epoch=master.epoch - 1)), 900_003)
    assert isinstance(reply, KeepAliveBatchReply)
    [entry] = reply.replies
    assert isinstance(entry, KeepAliveReply) and entry.failover and entry.epoch == master.epoch


def test_a_follower_refuses_the_whole_batch_and_an_empty_batch_is_bad() -> None:
    cell = Cell()
    s1 = cell.open(C1)
    master = cell.wait_master()
    follower = next(cell.server(n) for n in REPLICAS if n != master.node)
    [refused] = _results(_batch(follower, C1, 900_004, KeepAlive(session=s1, epoch=master.epoch)), 900_004)
    assert isinstance(refused, ErrorReply) and refused.code == "not_master"
    [bad] = _results(_batch(master, C1, 900_005), 900_005)
    assert isinstance(bad, ErrorReply) and bad.code == "bad_request"


def test_a_held_batch_is_answered_when_an_invalidation_waits_for_one_of_its_sessions() -> None:
    cell = Cell()
    s1, s2 = cell.open(C1), cell.open(C2)
    path = "/ls/sim/cfg"
    assert isinstance(cell.call(C1, lambda s, now, done: s.call(now, Create(session=s1, path=path, contents=b"v1"), done)), NodeMeta)
    for _ in range(cell.config.cache_admission_reads):
        assert isinstance(cell.call(C2, lambda s, now, done: s.read(now, path, done)), Contents)
    master = cell.wait_master()
    assert s2 in master.cached_by[path]
    # c2's KeepAlive now travels in a batch held by the master.
    held = _batch(master, C2, 900_006, KeepAlive(session=s2, epoch=master.epoch))
    assert _results(held, 900_006) == []
    # c1 writes the file c2 caches: the master answers the batch at once with the invalidation.
    flushed = master.on_message(master._now_ms, C1, ClientRequest(request_id=900_007, body=_write_call(cell, s1, path)))
    [reply] = _results(flushed, 900_006)
    assert isinstance(reply, KeepAliveBatchReply)
    [entry] = reply.replies
    assert isinstance(entry, KeepAliveReply) and [i.path for i in entry.invalidations] == [path]


def _write_call(cell: Cell, session: int, path: str) -> Message:
    core = cell.client(C1).session
    return LockCall(epoch=core.epoch, incarnation=core.incarnation + 1, seq=1, seen_below=1,
                    op=Write(session=session, path=path, contents=b"v2"))
