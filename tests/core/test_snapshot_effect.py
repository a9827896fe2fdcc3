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


def test_mux_keeps_each_groups_newest_snapshot_and_the_records_after_it() -> None:
    a, b = _Recorder(), _Recorder()
    mux = Mux({"a": a, "b": b})
    mux.start(0.0, Recovered())
    log: list[bytes] = []
    for key in ("a/s1", "a/s2", "b/only"):
        for effect in mux.on_timer(0.0, key):
            assert isinstance(effect, Persist)   # the mux never truncates the shared log
            log.extend(effect.records)
    a2, b2 = _Recorder(), _Recorder()
    Mux({"a": a2, "b": b2}).start(0.0, Recovered(records=tuple(log)))
    assert a2.recovered == Recovered(snapshot=(b"s2", b"\x00x"), records=(b"after",))
    assert b2.recovered == Recovered(snapshot=(b"only", b"\x00x"), records=(b"after",))


def test_mux_is_never_given_a_snapshot_of_its_own() -> None:
    with pytest.raises(InvariantViolation):
        Mux({"a": _Recorder()}).start(0.0, Recovered(snapshot=(b"x",)))
