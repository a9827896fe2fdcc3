"""Property tests: any sequence of operations (valid or not) keeps the
namespace's invariants, a refused operation changes nothing, and a snapshot
restores to the same state; the session lifecycle refuses illegal moves."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core.errors import LocalProtocolError
from synod.core.ids import NodeId
from synod.lock.config import LockConfig
from synod.lock.messages import (
    Acquire,
    CloseSession,
    Create,
    Delete,
    ExpireSession,
    OpenSession,
    OpError,
    Release,
    SetAcl,
    Write,
)
from synod.lock.namespace import Namespace
from synod.lock.sequencer import LockMode
from synod.lock.session import TRANSITIONS, ClientSession, SessionState

ROOT = "/ls/sim"
PATHS = [ROOT, f"{ROOT}/a", f"{ROOT}/a/b", f"{ROOT}/c", f"{ROOT}/../x", "relative", f"{ROOT}/q/"]

operation = st.one_of(
    st.builds(OpenSession, principal=st.sampled_from(["alice", "bob", ""]), now_ms=st.floats(0, 1e6)),
    st.builds(CloseSession, session=st.integers(0, 5), now_ms=st.floats(0, 1e6)),
    st.builds(ExpireSession, session=st.integers(0, 5), now_ms=st.floats(0, 1e6)),
    st.builds(Create, session=st.integers(0, 5), path=st.sampled_from(PATHS), directory=st.booleans(),
              ephemeral=st.booleans(), sequential=st.booleans(), contents=st.binary(max_size=8)),
    st.builds(Write, session=st.integers(0, 5), path=st.sampled_from(PATHS), contents=st.binary(max_size=8),
              expected_generation=st.integers(-1, 3)),
    st.builds(Delete, session=st.integers(0, 5), path=st.sampled_from(PATHS), expected_generation=st.integers(-1, 3)),
    st.builds(Acquire, session=st.integers(0, 5), path=st.sampled_from(PATHS),
              mode=st.sampled_from(list(LockMode)), now_ms=st.floats(0, 1e6)),
    st.builds(Release, session=st.integers(0, 5), path=st.sampled_from(PATHS)),
    st.builds(SetAcl, session=st.integers(0, 5), path=st.sampled_from(PATHS),
              read=st.sampled_from([("*",), ("alice",), ()]), write=st.sampled_from([("*",), ("bob",)]),
              change=st.sampled_from([("*",), ("alice",)])),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(operation, max_size=40))
def test_any_operations_keep_the_invariants_and_snapshots_restore(operations: list[object]) -> None:
    namespace = Namespace(LockConfig.sim())
    for op in operations:
        before = namespace.digest()
        result = namespace.execute(op)  # type: ignore[arg-type]
        if isinstance(result, OpError) and result.code != "lock_busy":
            assert namespace.digest() == before, f"refused {op} changed the state"
        namespace.check_invariants()
    copy = Namespace(LockConfig.sim())
    copy.restore(namespace.snapshot())
    copy.check_invariants()
    assert copy.digest() == namespace.digest()


def test_session_lifecycle_refuses_illegal_moves() -> None:
    session = ClientSession(NodeId("c1"), random.Random(1), servers=(NodeId("n1"),), config=LockConfig.sim())
    assert session.state is SessionState.NEW
    with pytest.raises(LocalProtocolError):
        session.become(SessionState.SAFE)
    for state, allowed in TRANSITIONS.items():
        assert state not in allowed, f"{state} may move to itself"
    assert TRANSITIONS[SessionState.EXPIRED] == frozenset() and TRANSITIONS[SessionState.CLOSED] == frozenset()


def test_a_session_in_jeopardy_does_not_use_its_cache() -> None:
    session = ClientSession(NodeId("c1"), random.Random(1), servers=(NodeId("n1"),), config=LockConfig.sim())
    session.open(0.0)
    session.state = SessionState.SAFE  # as if the open succeeded
    session.lease_end_ms = 100.0
    assert session.lease_safe(50.0) and not session.lease_safe(100.0)
    session.on_timer(150.0, "ls/tick")
    assert session.state is SessionState.JEOPARDY
    answered: list[object] = []
    effects = session.read(150.0, f"{ROOT}/f", answered.append)
    assert not answered and effects, "a read in jeopardy goes to the cell, not to the cache"
    session.on_timer(150.0 + LockConfig.sim().grace_ms, "ls/tick")
    assert session.state is SessionState.EXPIRED
