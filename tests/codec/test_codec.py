"""The codec: every registered message round-trips; bad bytes raise only
RemoteProtocolError; tags are append-only and unique per block range."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synod.codec import (
    ClientReply,
    ClientRequest,
    ErrorReply,
    FrameDecoder,
    Message,
    decode,
    encode,
    frame,
    message,
    registered_messages,
)
from synod.codec.registry import PROTOCOL_VERSION, TAG_RANGES
from synod.core import LocalProtocolError, NodeId, RemoteProtocolError
from tests.codec.strategies import import_all_synod_modules, message_strategy

import_all_synod_modules()


@message(1)
@dataclass(frozen=True, slots=True, kw_only=True)
class Sample(Message):
    node: NodeId
    count: int
    ratio: float
    payload: bytes
    tags: tuple[str, ...] = ()
    table: dict[str, int] | None = None
    inner: Sample | None = None


ALL_TYPES = sorted(registered_messages().items())


@pytest.mark.parametrize("tag,cls", ALL_TYPES, ids=[c.__name__ for _, c in ALL_TYPES])
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_registered_message_round_trips(tag: int, cls: type[Message], data: st.DataObject) -> None:
    value = data.draw(message_strategy(cls))
    assert decode(encode(value)) == value


def test_tags_lie_in_their_block_range() -> None:
    for tag, cls in registered_messages().items():
        owners = [name for name, tags in TAG_RANGES.items() if tag in tags]
        assert len(owners) == 1, f"{cls.__name__} tag {tag} outside every block range"


def test_nested_message_round_trips() -> None:
    inner = Sample(node=NodeId("a"), count=-1, ratio=0.5, payload=b"\x00")
    outer = Sample(node=NodeId("b"), count=2**63, ratio=1e300, payload=b"", tags=("x",),
                   table={"k": 1}, inner=inner)
    assert decode(encode(outer)) == outer
    envelope = ClientRequest(request_id=7, body=outer)
    assert decode(encode(envelope)) == envelope


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncated_message_raises_remote_protocol_error(data: st.DataObject) -> None:
    value = data.draw(message_strategy(Sample))
    wire = encode(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    with pytest.raises(RemoteProtocolError):
        decode(wire[:cut])


@settings(max_examples=300)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=5) | st.binary(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=20,
))
def test_well_formed_msgpack_of_wrong_shape_is_refused(value: object) -> None:
    for candidate in (value, [PROTOCOL_VERSION, 1, value], [PROTOCOL_VERSION, 100, value]):
        with contextlib.suppress(RemoteProtocolError):
            decode(msgpack.packb(candidate))


def test_unknown_type_tag_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown message tag"):
        decode(msgpack.packb([PROTOCOL_VERSION, 99, []]))


def test_other_protocol_version_is_refused() -> None:
    wire = msgpack.packb([PROTOCOL_VERSION + 1, 102, ["code", "", ""]])
    with pytest.raises(RemoteProtocolError, match="version"):
        decode(wire)


def test_wrong_field_type_is_refused() -> None:
    wire = msgpack.packb([PROTOCOL_VERSION, 102, [5, "", ""]])
    with pytest.raises(RemoteProtocolError):
        decode(wire)
    assert decode(msgpack.packb([PROTOCOL_VERSION, 102, ["c", "d", ""]])) == ErrorReply(code="c", detail="d")


def test_bool_is_not_an_int() -> None:
    wire = msgpack.packb([PROTOCOL_VERSION, 101, [True, [102, ["c", "", ""]]]])
    with pytest.raises(RemoteProtocolError):
        decode(wire)
    assert isinstance(decode(msgpack.packb([PROTOCOL_VERSION, 101, [3, [102, ["c", "", ""]]]])), ClientReply)


def test_deeply_nested_message_is_refused() -> None:
    wire: list[object] = [102, ["c", "", ""]]
    for _ in range(200):
        wire = [100, [1, wire]]
    with pytest.raises(RemoteProtocolError):
        decode(msgpack.packb([PROTOCOL_VERSION, wire[0], wire[1]]))


def test_oversized_message_is_refused() -> None:
    big = encode(Sample(node=NodeId("a"), count=0, ratio=0.0, payload=b"x" * 2000))
    with pytest.raises(RemoteProtocolError, match="over the maximum"):
        decode(big, max_bytes=1000)


def test_unregistered_message_cannot_be_encoded() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Stray(Message):
        x: int

    with pytest.raises(LocalProtocolError):
        encode(Stray(x=1))


def test_a_tag_cannot_be_reused_by_another_class() -> None:
    with pytest.raises(LocalProtocolError, match="already used"):

        @message(1)
        @dataclass(frozen=True, slots=True, kw_only=True)
        class Impostor(Message):
            y: int


def test_pickle_is_never_used() -> None:
    import pathlib

    import synod.codec

    for path in pathlib.Path(synod.codec.__file__).parent.glob("*.py"):
        assert "pickle" not in path.read_text().replace("no pickle", "")


# ---------------------------------------------------------------- frames


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=1, max_value=50))
def test_frames_reassemble_across_any_chunking(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(frame(p) for p in payloads)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for start in range(0, len(stream), chunk):
        out.extend(decoder.feed(stream[start : start + chunk]))
    assert out == payloads
    assert decoder.buffered_bytes == 0


def test_frame_over_maximum_is_refused_before_buffering() -> None:
    decoder = FrameDecoder(frame_bytes_max=1024)
    with pytest.raises(RemoteProtocolError, match="over the maximum"):
        decoder.feed((10**9).to_bytes(4, "big"))
    with pytest.raises(LocalProtocolError):
        frame(b"x" * 2000, frame_bytes_max=1024)


def test_truncated_frame_yields_nothing() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(frame(b"hello")[:-1]) == []
    assert decoder.buffered_bytes == 8


def test_unknown_type_is_its_own_error_class() -> None:
    from synod.codec import UnknownMessageType

    with pytest.raises(UnknownMessageType):
        decode(msgpack.packb([PROTOCOL_VERSION, 99, []]))
    with pytest.raises(UnknownMessageType):
        decode(msgpack.packb([PROTOCOL_VERSION, 100, [1, [99, []]]]))


def test_optional_primitive_fields_are_checked() -> None:
    wire = msgpack.packb([PROTOCOL_VERSION, 1, ["n", 1, 0.5, b"", [], None, None]])
    assert decode(wire) == Sample(node=NodeId("n"), count=1, ratio=0.5, payload=b"")
    bad = msgpack.packb([PROTOCOL_VERSION, 1, ["n", 1, 0.5, b"", [], None, 7]])
    with pytest.raises(RemoteProtocolError):
        decode(bad)
