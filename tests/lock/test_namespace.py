"""The namespace state machine, one test per claim of the issue (items 1-4, 6)
and one per kind of bad input (each a typed error, nothing changed)."""

from __future__ import annotations

import pytest

from synod.codec.registry import decode, encode
from synod.core.faults import disable_mutants, enable_mutant
from synod.lock.config import LockConfig
from synod.lock.errors import error_from_code
from synod.lock.messages import (
    Acquire,
    Acquired,
    CheckSequencer,
    Children,
    CloseSession,
    Contents,
    Create,
    Delete,
    EventKind,
    ExpireSession,
    GetContents,
    ListChildren,
    NodeMeta,
    OpenSession,
    OpenSessions,
    OpError,
    Release,
    SequencerValidity,
    SessionOpened,
    SessionsOpened,
    SetAcl,
    Stat,
    Write,
)
from synod.lock.namespace import Namespace, checksum_of
from synod.lock.sequencer import Fence, LockMode, Sequencer, StaleSequencerError

ROOT = "/ls/sim"


def fresh() -> Namespace:
    return Namespace(LockConfig.sim())


def open_session(ns: Namespace, principal: str = "alice", now_ms: float = 0.0) -> int:
    result = ns.execute(OpenSession(principal=principal, now_ms=now_ms))
    assert isinstance(result, SessionOpened)
    return result.session


def ok(ns: Namespace, op: object) -> object:
    result = ns.execute(op)  # type: ignore[arg-type]
    assert not isinstance(result, OpError), result
    return result


def refused(ns: Namespace, op: object, code: str) -> None:
    """The op is refused with ``code`` and the namespace is unchanged."""
    before = ns.digest()
    events = len(ns.events)
    result = ns.execute(op)  # type: ignore[arg-type]
    assert isinstance(result, OpError), result
    assert result.code == code, result
    assert ns.digest() == before
    assert len(ns.events) == events
    ns.check_invariants()


# ---------------------------------------------------------------- files and directories


def test_create_write_read_with_metadata() -> None:
    ns = fresh()
    s = open_session(ns)
    ok(ns, Create(session=s, path=f"{ROOT}/dir", directory=True))
    meta = ok(ns, Create(session=s, path=f"{ROOT}/dir/f", contents=b"v1"))
    assert isinstance(meta, NodeMeta)
    assert meta.content_generation == 0 and meta.checksum == checksum_of(b"v1")
    meta2 = ok(ns, Write(session=s, path=f"{ROOT}/dir/f", contents=b"v2"))
    assert isinstance(meta2, NodeMeta)
    assert meta2.content_generation == 1 and meta2.instance == meta.instance
    got = ok(ns, GetContents(session=s, path=f"{ROOT}/dir/f"))
    assert isinstance(got, Contents) and got.contents == b"v2"
    listed = ok(ns, ListChildren(session=s, path=f"{ROOT}/dir"))
    assert isinstance(listed, Children) and listed.names == ("f",)
    ns.check_invariants()


def test_instance_number_tells_a_recreated_node_apart() -> None:
    ns = fresh()
    s = open_session(ns)
    first = ok(ns, Create(session=s, path=f"{ROOT}/f"))
    ok(ns, Delete(session=s, path=f"{ROOT}/f"))
    second = ok(ns, Create(session=s, path=f"{ROOT}/f"))
    assert isinstance(first, NodeMeta) and isinstance(second, NodeMeta)
    assert second.instance > first.instance


def test_compare_and_set_on_content_generation() -> None:
    ns = fresh()
    s = open_session(ns)
    ok(ns, Create(session=s, path=f"{ROOT}/f", contents=b"a"))
    ok(ns, Write(session=s, path=f"{ROOT}/f", contents=b"b", expected_generation=0))
    refused(ns, Write(session=s, path=f"{ROOT}/f", contents=b"c", expected_generation=0), "generation_mismatch")
    refused(ns, Delete(session=s, path=f"{ROOT}/f", expected_generation=0), "generation_mismatch")
    ok(ns, Delete(session=s, path=f"{ROOT}/f", expected_generation=1))
    assert not ns.exists(f"{ROOT}/f")


def test_sequential_children_are_numbered_in_order() -> None:
    ns = fresh()
    s = open_session(ns)
    ok(ns, Create(session=s, path=f"{ROOT}/q", directory=True))
    names = []
    for _ in range(3):
        meta = ok(ns, Create(session=s, path=f"{ROOT}/q/job-", sequential=True))
        assert isinstance(meta, NodeMeta)
        names.append(meta.path.rsplit("/", 1)[1])
    ok(ns, Delete(session=s, path=f"{ROOT}/q/{names[-1]}"))
    meta = ok(ns, Create(session=s, path=f"{ROOT}/q/job-", sequential=True))
    assert isinstance(meta, NodeMeta)
    names.append(meta.path.rsplit("/", 1)[1])
    assert names == ["job-0000000000", "job-0000000001", "job-0000000002", "job-0000000003"]


def test_ephemeral_nodes_go_with_their_session() -> None:
    ns = fresh()
    s = open_session(ns)
    other = open_session(ns, "bob")
    ok(ns, Create(session=s, path=f"{ROOT}/svc", directory=True))
    ok(ns, Create(session=s, path=f"{ROOT}/svc/a", ephemeral=True))
    ok(ns, Create(session=other, path=f"{ROOT}/svc/b", ephemeral=True))
    ok(ns, ExpireSession(session=s, now_ms=10.0))
    assert not ns.exists(f"{ROOT}/svc/a") and ns.exists(f"{ROOT}/svc/b")
    ok(ns, CloseSession(session=other, now_ms=11.0))
    assert not ns.exists(f"{ROOT}/svc/b") and ns.exists(f"{ROOT}/svc")
    ns.check_invariants()


def test_directory_must_be_empty_to_delete() -> None:
    ns = fresh()
    s = open_session(ns)
    ok(ns, Create(session=s, path=f"{ROOT}/d", directory=True))
    ok(ns, Create(session=s, path=f"{ROOT}/d/f"))
    refused(ns, Delete(session=s, path=f"{ROOT}/d"), "not_empty")


# ---------------------------------------------------------------- locks and sequencers


def test_exclusive_lock_excludes_and_bumps_generation() -> None:
    ns = fresh()
    a, b = open_session(ns), open_session(ns, "bob")
    ok(ns, Create(session=a, path=f"{ROOT}/l"))
    got = ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0))
    assert isinstance(got, Acquired) and got.sequencer.lock_generation == 1
    busy = ns.execute(Acquire(session=b, path=f"{ROOT}/l", mode=LockMode.SHARED, now_ms=2.0))
    assert isinstance(busy, OpError) and busy.code == "lock_busy"
    ok(ns, Release(session=a, path=f"{ROOT}/l"))
    got2 = ok(ns, Acquire(session=b, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=3.0))
    assert isinstance(got2, Acquired) and got2.sequencer.lock_generation == 2


def test_shared_locks_coexist_and_exclude_writers() -> None:
    ns = fresh()
    a, b, c = open_session(ns), open_session(ns, "b"), open_session(ns, "c")
    ok(ns, Create(session=a, path=f"{ROOT}/l"))
    s1 = ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.SHARED, now_ms=1.0))
    s2 = ok(ns, Acquire(session=b, path=f"{ROOT}/l", mode=LockMode.SHARED, now_ms=1.0))
    assert isinstance(s1, Acquired) and isinstance(s2, Acquired)
    assert s1.sequencer == s2.sequencer
    busy = ns.execute(Acquire(session=c, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0))
    assert isinstance(busy, OpError) and busy.code == "lock_busy"
    ok(ns, Release(session=a, path=f"{ROOT}/l"))
    ok(ns, Release(session=b, path=f"{ROOT}/l"))
    ok(ns, Acquire(session=c, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0))


def test_check_sequencer_only_the_current_holding_is_valid() -> None:
    ns = fresh()
    a, b = open_session(ns), open_session(ns, "b")
    ok(ns, Create(session=a, path=f"{ROOT}/l"))
    first = ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0))
    assert isinstance(first, Acquired)
    assert ok(ns, CheckSequencer(sequencer=first.sequencer)) == SequencerValidity(valid=True)
    ok(ns, Release(session=a, path=f"{ROOT}/l"))
    assert ok(ns, CheckSequencer(sequencer=first.sequencer)) == SequencerValidity(valid=False)
    second = ok(ns, Acquire(session=b, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0))
    assert isinstance(second, Acquired)
    assert not ns.sequencer_valid(first.sequencer) and ns.sequencer_valid(second.sequencer)


def test_fence_rejects_an_older_sequencer() -> None:
    fence = Fence()
    old = Sequencer(path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, lock_generation=1, instance=2)
    new = Sequencer(path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, lock_generation=2, instance=2)
    fence.admit(old)
    fence.admit(new)
    with pytest.raises(StaleSequencerError):
        fence.admit(old)
    assert fence.highest(f"{ROOT}/l") == 2
    assert decode(encode(new)) == new


def test_lock_delay_after_expiry_but_not_after_release() -> None:
    ns = fresh()
    a, b = open_session(ns), open_session(ns, "b")
    ok(ns, Create(session=a, path=f"{ROOT}/l"))
    ok(ns, Create(session=a, path=f"{ROOT}/m"))
    ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=100.0))
    ok(ns, Acquire(session=b, path=f"{ROOT}/m", mode=LockMode.EXCLUSIVE, now_ms=100.0))
    ok(ns, ExpireSession(session=a, now_ms=1000.0))
    delay = LockConfig.sim().lock_delay_ms
    c = open_session(ns, "c", now_ms=1000.0)
    refused(ns, Acquire(session=c, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1000.0 + delay - 1), "lock_delay")
    ok(ns, Acquire(session=c, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1000.0 + delay))
    # A clean close frees at once.
    ok(ns, CloseSession(session=b, now_ms=1001.0 + delay))
    ok(ns, Acquire(session=c, path=f"{ROOT}/m", mode=LockMode.EXCLUSIVE, now_ms=1001.0 + delay))


def test_per_lock_delay_is_bounded() -> None:
    ns = fresh()
    a = open_session(ns)
    ok(ns, Create(session=a, path=f"{ROOT}/l"))
    too_long = LockConfig.sim().lock_delay_ms_max + 1
    refused(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0, lock_delay_ms=too_long), "bad_request")
    ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0, lock_delay_ms=0.0))
    ok(ns, ExpireSession(session=a, now_ms=5.0))
    b = open_session(ns, "b")
    ok(ns, Acquire(session=b, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=5.0))


def test_the_log_clock_never_goes_back() -> None:
    """A new master with a slower clock cannot shorten a lock-delay."""
    ns = fresh()
    a = open_session(ns)
    ok(ns, Create(session=a, path=f"{ROOT}/l"))
    ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=5000.0))
    ok(ns, ExpireSession(session=a, now_ms=5000.0))
    b = open_session(ns, "b", now_ms=0.0)
    refused(ns, Acquire(session=b, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=0.0), "lock_delay")


def test_skip_lock_delay_mutant_frees_at_once() -> None:
    enable_mutant("lock.skip_lock_delay")
    try:
        ns = fresh()
        a = open_session(ns)
        ok(ns, Create(session=a, path=f"{ROOT}/l"))
        ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0))
        ok(ns, ExpireSession(session=a, now_ms=2.0))
        b = open_session(ns, "b")
        ok(ns, Acquire(session=b, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=2.0))
    finally:
        disable_mutants()


def test_expired_session_releases_locks() -> None:
    ns = fresh()
    a = open_session(ns)
    ok(ns, Create(session=a, path=f"{ROOT}/l"))
    ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0))
    ok(ns, ExpireSession(session=a, now_ms=2.0))
    assert ns.holders(f"{ROOT}/l") == ()
    assert a not in ns.session_ids()


# ---------------------------------------------------------------- events


def test_events_for_each_change_in_order() -> None:
    ns = fresh()
    a, b = open_session(ns), open_session(ns, "b")
    ok(ns, Create(session=a, path=f"{ROOT}/d", directory=True))
    ok(ns, Create(session=a, path=f"{ROOT}/d/f"))
    ok(ns, Write(session=a, path=f"{ROOT}/d/f", contents=b"x"))
    ok(ns, Acquire(session=a, path=f"{ROOT}/d/f", mode=LockMode.EXCLUSIVE, now_ms=1.0))
    ns.execute(Acquire(session=b, path=f"{ROOT}/d/f", mode=LockMode.EXCLUSIVE, now_ms=1.0))
    ok(ns, Release(session=a, path=f"{ROOT}/d/f"))
    ok(ns, Delete(session=a, path=f"{ROOT}/d/f"))
    kinds = [(e.kind, e.path, e.name) for e in ns.take_events()]
    assert kinds == [
        (EventKind.CHILD_ADDED, ROOT, "d"),
        (EventKind.CHILD_ADDED, f"{ROOT}/d", "f"),
        (EventKind.CONTENTS_MODIFIED, f"{ROOT}/d/f", ""),
        (EventKind.CHILD_MODIFIED, f"{ROOT}/d", "f"),
        (EventKind.LOCK_ACQUIRED, f"{ROOT}/d/f", ""),
        (EventKind.CONFLICTING_LOCK_REQUEST, f"{ROOT}/d/f", ""),
        (EventKind.LOCK_RELEASED, f"{ROOT}/d/f", ""),
        (EventKind.HANDLE_INVALID, f"{ROOT}/d/f", ""),
        (EventKind.CHILD_REMOVED, f"{ROOT}/d", "f"),
    ]
    assert ns.take_events() == []


def test_listener_hears_events_of_applied_operations() -> None:
    ns = fresh()
    heard: list[EventKind] = []
    ns.listener = lambda events: heard.extend(e.kind for e in events)
    a = open_session(ns)
    ns.apply(encode(Create(session=a, path=f"{ROOT}/f")))
    ns.apply(encode(Create(session=a, path=f"{ROOT}/f")))  # refused: no event
    assert heard == [EventKind.CHILD_ADDED]


# ---------------------------------------------------------------- ACLs


def test_acls_are_inherited_and_checked() -> None:
    ns = fresh()
    owner, stranger = open_session(ns, "owner"), open_session(ns, "stranger")
    ok(ns, Create(session=owner, path=f"{ROOT}/private", directory=True))
    meta = ok(ns, SetAcl(session=owner, path=f"{ROOT}/private", read=("owner",), write=("owner",), change=("owner",)))
    assert isinstance(meta, NodeMeta) and meta.acl_generation == 1
    child = ok(ns, Create(session=owner, path=f"{ROOT}/private/f", contents=b"secret"))
    assert isinstance(child, NodeMeta) and child.read_acl == ("owner",)
    refused(ns, GetContents(session=stranger, path=f"{ROOT}/private/f"), "permission_denied")
    refused(ns, Write(session=stranger, path=f"{ROOT}/private/f", contents=b"x"), "permission_denied")
    refused(ns, Create(session=stranger, path=f"{ROOT}/private/g"), "permission_denied")
    refused(ns, Acquire(session=stranger, path=f"{ROOT}/private/f", mode=LockMode.EXCLUSIVE, now_ms=1.0), "permission_denied")
    refused(ns, Delete(session=stranger, path=f"{ROOT}/private/f"), "permission_denied")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("path", [
    "", "relative/path", "/ls/other/x", f"{ROOT}/a/../b", f"{ROOT}/a/./b", f"{ROOT}/a//b",
    f"{ROOT}/nul\x00", f"{ROOT}/" + "x" * 256, f"{ROOT}/", "/ls/simx",
])
def test_bad_paths_are_typed_errors(path: str) -> None:
    ns = fresh()
    s = open_session(ns)
    refused(ns, Create(session=s, path=path), "bad_path")
    refused(ns, GetContents(session=s, path=path), "bad_path")


def test_contents_over_the_limit() -> None:
    ns = fresh()
    s = open_session(ns)
    limit = LockConfig.sim().contents_bytes_max
    refused(ns, Create(session=s, path=f"{ROOT}/big", contents=b"x" * (limit + 1)), "too_large")
    ok(ns, Create(session=s, path=f"{ROOT}/big", contents=b"x" * limit))
    refused(ns, Write(session=s, path=f"{ROOT}/big", contents=b"x" * (limit + 1)), "too_large")


def test_operations_of_an_expired_session() -> None:
    ns = fresh()
    s = open_session(ns)
    ok(ns, Create(session=s, path=f"{ROOT}/f"))
    ok(ns, ExpireSession(session=s, now_ms=1.0))
    for op in (GetContents(session=s, path=f"{ROOT}/f"), Write(session=s, path=f"{ROOT}/f", contents=b"x"),
               Acquire(session=s, path=f"{ROOT}/f", mode=LockMode.EXCLUSIVE, now_ms=2.0),
               Create(session=s, path=f"{ROOT}/g"), ExpireSession(session=s, now_ms=3.0),
               CloseSession(session=s, now_ms=3.0)):
        refused(ns, op, "session_expired")
    assert isinstance(error_from_code("session_expired", "x"), Exception)


def test_release_by_a_non_holder() -> None:
    ns = fresh()
    a, b = open_session(ns), open_session(ns, "b")
    ok(ns, Create(session=a, path=f"{ROOT}/l"))
    ok(ns, Acquire(session=a, path=f"{ROOT}/l", mode=LockMode.EXCLUSIVE, now_ms=1.0))
    refused(ns, Release(session=b, path=f"{ROOT}/l"), "not_holder")
    assert ns.holders(f"{ROOT}/l") == (a,)


def test_acl_change_by_a_non_owner() -> None:
    ns = fresh()
    owner, stranger = open_session(ns, "owner"), open_session(ns, "stranger")
    ok(ns, Create(session=owner, path=f"{ROOT}/f"))
    ok(ns, SetAcl(session=owner, path=f"{ROOT}/f", read=("*",), write=("*",), change=("owner",)))
    refused(ns, SetAcl(session=stranger, path=f"{ROOT}/f", read=("stranger",), write=("stranger",), change=("stranger",)), "permission_denied")
    refused(ns, SetAcl(session=owner, path=f"{ROOT}/f", read=(), write=("a",), change=("a",)), "limit")


def test_undecodable_operation_bytes() -> None:
    ns = fresh()
    before = ns.digest()
    result = decode(ns.apply(b"\xff\x00garbage"))
    assert isinstance(result, OpError) and result.code == "bad_request"
    assert isinstance(decode(ns.query(encode(Write(session=1, path=ROOT, contents=b"")))), OpError)
    assert ns.digest() == before


def test_bad_times_are_refused() -> None:
    ns = fresh()
    refused(ns, OpenSession(principal="a", now_ms=float("nan")), "bad_request")
    refused(ns, OpenSession(principal="", now_ms=0.0), "bad_request")


# ---------------------------------------------------------------- snapshots


def test_snapshot_restore_round_trip() -> None:
    ns = fresh()
    a = open_session(ns)
    ok(ns, Create(session=a, path=f"{ROOT}/d", directory=True))
    for i in range(300):
        ok(ns, Create(session=a, path=f"{ROOT}/d/f{i}", contents=bytes([i % 256]), ephemeral=i % 2 == 0))
    ok(ns, Acquire(session=a, path=f"{ROOT}/d/f1", mode=LockMode.SHARED, now_ms=7.0))
    copy = fresh()
    copy.restore(ns.snapshot())
    copy.check_invariants()
    assert copy.digest() == ns.digest()
    stat = ok(copy, Stat(session=a, path=f"{ROOT}/d/f1"))
    assert isinstance(stat, NodeMeta) and stat.lock_mode is LockMode.SHARED
    ok(copy, ExpireSession(session=a, now_ms=9.0))
    assert not copy.exists(f"{ROOT}/d/f0") and copy.exists(f"{ROOT}/d/f1")
    assert isinstance(ok(copy, Stat(session=open_session(copy), path=ROOT)), NodeMeta)


def test_a_batched_open_numbers_its_sessions_in_a_row_all_or_none() -> None:
    ns = fresh()
    before = open_session(ns)
    opened = ok(ns, OpenSessions(principal="bob", count=5, now_ms=10.0))
    assert isinstance(opened, SessionsOpened)
    assert (opened.first, opened.count) == (before + 1, 5)
    assert all(ns.principal_of(s) == "bob" for s in range(opened.first, opened.first + 5))
    assert open_session(ns) == opened.first + 5
    refused(ns, OpenSessions(principal="bob", count=0, now_ms=10.0), "bad_request")
    refused(ns, OpenSessions(principal="", count=1, now_ms=10.0), "bad_request")
    room = LockConfig.sim().sessions_max - len(ns.session_ids())
    refused(ns, OpenSessions(principal="bob", count=room + 1, now_ms=10.0), "limit")
    ok(ns, ExpireSession(session=opened.first + 2, now_ms=20.0))
    assert ns.principal_of(opened.first + 2) is None and ns.principal_of(opened.first + 3) == "bob"
