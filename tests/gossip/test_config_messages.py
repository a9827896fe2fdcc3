"""Config validation and the wire messages of the gossip range."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from synod.codec.registry import TAG_RANGES, decode, encode, registered_messages
from synod.core.config import config_from_mapping
from synod.core.errors import ConfigError, RemoteProtocolError
from synod.core.ids import NodeId
from synod.gossip import messages as m
from synod.gossip.config import GossipConfig


def test_presets_validate() -> None:
    for preset in (GossipConfig.lan(), GossipConfig.local(), GossipConfig.sim()):
        assert isinstance(preset, GossipConfig)


@pytest.mark.parametrize("change", [
    {"probe_interval_ms": 0.0},
    {"probe_timeout_ms": 1000.0},  # not below the interval
    {"indirect_checks": 0},
    {"suspicion_mult": 1},
    {"tombstone_ms": 1.0},  # below gossip_to_the_dead_ms
    {"meta_bytes_max": 2000},  # does not fit a packet
    {"broadcast_queue_max": 0},
])
def test_bad_values_are_refused_naming_the_field(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(GossipConfig(), **change)  # type: ignore[arg-type]


def test_loads_from_a_mapping_like_toml() -> None:
    config = config_from_mapping(GossipConfig, {"probe-interval-ms": "500", "probe_timeout_ms": 200})
    assert (config.probe_interval_ms, config.probe_timeout_ms) == (500.0, 200.0)


def test_tags_are_in_the_gossip_range() -> None:
    ours = {tag: cls for tag, cls in registered_messages().items()
            if cls.__module__ == "synod.gossip.messages"}
    assert set(ours) == set(range(500, 516))
    assert all(tag in TAG_RANGES["gossip"] for tag in ours)


def test_round_trip_with_piggybacked_updates() -> None:
    updates = (m.Alive(node=NodeId("a"), incarnation=3, address="10.0.0.1:7946", meta=b"t"),
               m.Suspect(node=NodeId("b"), incarnation=2, source=NodeId("a")),
               m.Dead(node=NodeId("c"), incarnation=1, source=NodeId("a")),
               m.Left(node=NodeId("d"), incarnation=9),
               m.UserEvent(origin=NodeId("a"), event_id=5, name="deploy", payload=b"v1"))
    for message in (m.Ping(seq=1, target=NodeId("b"), updates=updates), m.Ack(seq=1),
                    m.PingReq(seq=2, target=NodeId("c")), m.Nack(seq=2),
                    m.Gossip(updates=updates),
                    m.PushPull(join=True, members=(m.MemberState(
                        node=NodeId("a"), address="x", incarnation=1,
                        status=m.MemberStatus.SUSPECT),)),
                    m.PushPullReply(members=()), m.IncarnationRecord(incarnation=4)):
        assert decode(encode(message)) == message


def test_bad_datagrams_raise_only_remote_protocol_error() -> None:
    good = encode(m.Ping(seq=1, target=NodeId("b")))
    for bad in (b"", good[:-1], good + b"x", b"\xff" * 10,
                msgpack.packb([1, 506, ["b", 2**63, "a"]]),  # incarnation out of range
                msgpack.packb([1, 504, [[[505, ["a", 1, "", b""]]] * 600]])):  # too many updates
        with pytest.raises(RemoteProtocolError):
            decode(bad)
