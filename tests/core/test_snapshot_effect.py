"""SaveSnapshot in the kernel: chunk framing and the mux's per-group snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synod.codec.registry import Message
from synod.core.effects import (
    Effects,
    Persist,
    Recovered,
    SaveSnapshot,
    frame_chunks,
    unframe_chunks,
)
from synod.core.errors import InvariantViolation
from synod.core.ids import NodeId
from synod.core.mux import Mux


@given(st.lists(st.binary(max_size=50), max_size=8), st.integers(min_value=1, max_value=7))
def test_framing_survives_any_rechunking(chunks: list[bytes], step: int) -> None:
    data = b"".join(frame_chunks(chunks))
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    assert unframe_chunks(pieces) == tuple(chunks)


def test_unframe_rejects_a_truncated_stream() -> None:
    data = b"".join(frame_chunks([b"abcdef"]))
    with pytest.raises(ValueError):
        unframe_chunks([data[:-1]])


class _Recorder:
    """A core that snapshots on any timer and remembers what it recovered."""

    def __init__(self) -> None:
        self.recovered: Recovered | None = None

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        self.recovered = recovered
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        return []

    def on_timer(self, now_ms: float, key: str) -> Effects:
        return [Persist(records=(b"before",)), SaveSnapshot(chunks=(key.encode(), b"\x00x")),
                Persist(records=(b"after",))]

    def check_invariants(self) -> None:
        pass


def _drive(mux: Mux, keys: tuple[str, ...]) -> tuple[tuple[bytes, ...] | None, list[bytes]]:
    """Run ``keys`` as timers and do what a driver does with the effects: append
    Persist records; on SaveSnapshot keep its chunks and drop every record before
    it. Returns (snapshot, records after it)."""
    snapshot: tuple[bytes, ...] | None = None
    log: list[bytes] = []
    for key in keys:
        for effect in mux.on_timer(0.0, key):
            if isinstance(effect, SaveSnapshot):
                snapshot, log = effect.chunks, []
            else:
                assert isinstance(effect, Persist)
                log.extend(effect.records)
    return snapshot, log


def test_mux_compacts_the_shared_log_to_each_groups_newest_snapshot_and_the_records_after_it() -> None:
    a, b = _Recorder(), _Recorder()
    mux = Mux({"a": a, "b": b})
    mux.start(0.0, Recovered())
    snapshot, log = _drive(mux, ("a/s1", "a/s2", "b/only"))
    assert mux.snapshots_saved == 3
    # The mux snapshot holds a's newest snapshot and a's record after it, b's
    # snapshot; the log after it b's record after its snapshot.
    assert snapshot is not None and len(snapshot) == 3 and log == [b"b\x00after"]
    a2, b2 = _Recorder(), _Recorder()
    mux2 = Mux({"a": a2, "b": b2})
    mux2.start(0.0, Recovered(snapshot=snapshot, records=tuple(log)))
    assert a2.recovered == Recovered(snapshot=(b"s2", b"\x00x"), records=(b"after",))
    assert b2.recovered == Recovered(snapshot=(b"only", b"\x00x"), records=(b"after",))
    # ... and a restarted mux compacts from what it recovered: a's next snapshot
    # carries b's state along.
    snapshot, log = _drive(mux2, ("a/s3",))
    a3, b3 = _Recorder(), _Recorder()
    Mux({"a": a3, "b": b3}).start(0.0, Recovered(snapshot=snapshot, records=tuple(log)))
    assert a3.recovered == Recovered(snapshot=(b"s3", b"\x00x"), records=(b"after",))
    assert b3.recovered == Recovered(snapshot=(b"only", b"\x00x"), records=(b"after",))


def test_a_log_written_before_compaction_holds_child_snapshots_as_records() -> None:
    log = [b"a\x00old", b"\x00a\x00" + b"".join(frame_chunks([b"s", b"t"])), b"a\x00after", b"b\x00one"]
    a, b = _Recorder(), _Recorder()
    Mux({"a": a, "b": b}).start(0.0, Recovered(records=tuple(log)))
    assert a.recovered == Recovered(snapshot=(b"s", b"t"), records=(b"after",))
    assert b.recovered == Recovered(records=(b"one",))


def test_a_durability_effect_inside_a_then_is_refused() -> None:
    class Nested(_Recorder):
        def on_timer(self, now_ms: float, key: str) -> Effects:
            return [Persist(records=(b"x",), then=(Persist(records=(b"y",)),))]

    mux = Mux({"a": Nested()})
    mux.start(0.0, Recovered())
    with pytest.raises(InvariantViolation):
        mux.on_timer(0.0, "a/t")
