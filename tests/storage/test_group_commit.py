"""Group commit: persists are batched into fsyncs, one in flight, released in
submission order, with bounded memory."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core.errors import ConfigError, LocalProtocolError
from synod.storage import (
    GroupCommit,
    GroupCommitConfig,
    RecordTooLarge,
    SimDisk,
    StorageFull,
    WriteAheadLog,
)


def test_persists_queued_together_share_one_batch() -> None:
    commit: GroupCommit[str] = GroupCommit()
    commit.submit([b"a", b"b"], "first")
    commit.submit([b"c"], "second")
    batch = commit.next_batch()
    assert batch is not None
    assert batch.records == (b"a", b"b", b"c") and batch.tokens == ("first", "second")
    assert batch.record_bytes == 3
    assert commit.batch_durable(batch) == ("first", "second")
    assert commit.next_batch() is None


def test_at_most_one_fsync_in_flight_and_the_next_group_grows_meanwhile() -> None:
    commit: GroupCommit[int] = GroupCommit()
    commit.submit([b"x"], 1)
    first = commit.next_batch()
    assert first is not None and commit.in_flight is first
    for token in (2, 3, 4):
        commit.submit([b"y"], token)
    assert commit.next_batch() is None  # one in flight
    assert commit.batch_durable(first) == (1,)
    second = commit.next_batch()
    assert second is not None and second.tokens == (2, 3, 4)
    commit.batch_durable(second)
    stats = commit.statistics()
    assert (stats.submitted, stats.batches, stats.records, stats.largest_batch_persists) == (4, 2, 4, 3)
    assert not stats.in_flight and stats.pending_persists == 0


def test_a_persist_without_records_still_waits_its_turn() -> None:
    commit: GroupCommit[str] = GroupCommit()
    commit.submit([b"promise"], "send promise")
    first = commit.next_batch()
    assert first is not None
    commit.submit([], "reply to client")
    assert commit.next_batch() is None
    commit.batch_durable(first)
    second = commit.next_batch()
    assert second is not None and second.records == () and second.tokens == ("reply to client",)


def test_batches_are_cut_at_batch_bytes_max_but_never_empty() -> None:
    commit: GroupCommit[int] = GroupCommit(GroupCommitConfig(batch_bytes_max=10))
    commit.submit([bytes(4)], 1)
    commit.submit([bytes(4)], 2)
    commit.submit([bytes(4)], 3)
    commit.submit([bytes(50)], 4)
    sizes = []
    while (batch := commit.next_batch()) is not None:
        sizes.append(batch.tokens)
        commit.batch_durable(batch)
    assert sizes == [(1, 2), (3,), (4,)]


def test_queued_bytes_are_bounded() -> None:
    commit: GroupCommit[int] = GroupCommit(GroupCommitConfig(pending_bytes_max=100))
    commit.submit([bytes(60)], 1)
    assert not commit.has_room(41)
    with pytest.raises(StorageFull):
        commit.submit([bytes(41)], 2)
    with pytest.raises(RecordTooLarge):
        commit.submit([bytes(101)], 3)
    batch = commit.next_batch()
    assert batch is not None and commit.pending_bytes == 0
    commit.submit([bytes(100)], 4)  # the in-flight batch no longer counts
    assert commit.statistics().refused_full == 1
    commit.check_invariants()


def test_completing_a_batch_that_is_not_in_flight_is_refused() -> None:
    commit: GroupCommit[int] = GroupCommit()
    commit.submit([b"a"], 1)
    batch = commit.next_batch()
    assert batch is not None
    commit.batch_durable(batch)
    with pytest.raises(LocalProtocolError):
        commit.batch_durable(batch)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        GroupCommitConfig(pending_bytes_max=0)
    with pytest.raises(ConfigError):
        GroupCommitConfig(batch_bytes_max=0)


@settings(max_examples=200, deadline=None, database=None)
@given(steps=st.lists(st.one_of(st.integers(0, 40), st.none()), max_size=80))
def test_tokens_are_released_once_in_submission_order(steps: list[int | None]) -> None:
    """Against a naive model: whatever the interleaving of submissions (an int:
    its size) and fsync completions (None), every accepted token is released
    exactly once, in order, and queued bytes never pass the bound."""
    commit: GroupCommit[int] = GroupCommit(
        GroupCommitConfig(pending_bytes_max=100, batch_bytes_max=30)
    )
    accepted: list[int] = []
    released: list[int] = []
    for token, step in enumerate(steps):
        if step is None:
            if commit.in_flight is not None:
                released.extend(commit.batch_durable(commit.in_flight))
        elif commit.has_room(step):
            commit.submit([bytes(step)], token)
            accepted.append(token)
        commit.next_batch()
        commit.check_invariants()
        assert commit.pending_bytes <= 100
    while commit.in_flight is not None:
        released.extend(commit.batch_durable(commit.in_flight))
        commit.next_batch()
    assert released == accepted


def test_a_driver_releases_nothing_before_the_wal_made_it_durable() -> None:
    """The loop a driver runs (module docstring), on a SimDisk write-ahead log:
    each token is released only once the log's durable index covers its records."""
    rng = random.Random(5)
    disk = SimDisk()
    log, _ = WriteAheadLog.open(disk, "wal")
    commit: GroupCommit[int] = GroupCommit()
    last_index_of: dict[int, int] = {}
    released: list[int] = []
    in_sync = None
    for token in range(200):
        commit.submit([f"{token}.{i}".encode() for i in range(rng.randint(0, 3))], token)
        if in_sync is None:
            in_sync = commit.next_batch()
            if in_sync is not None:
                index = log.last_index
                for record in in_sync.records:
                    index = log.append(record)
                for batch_token in in_sync.tokens:
                    last_index_of[batch_token] = index
        if in_sync is not None and rng.random() < 0.3:  # the fsync completes
            log.sync()
            for done in commit.batch_durable(in_sync):
                assert log.durable_index >= last_index_of[done]
                released.append(done)
            in_sync = None
    assert released == sorted(released) and len(released) > 20
    assert commit.statistics().largest_batch_persists > 1
