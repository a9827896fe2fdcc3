"""UDP datagrams: every one carries an HMAC; bad ones are dropped and counted."""

from __future__ import annotations

import asyncio
import socket

from synod.runtime.auth import Key, Keyring
from synod.runtime.datagram import DatagramEndpoint, open_datagram, seal_datagram
from tests.runtime.helpers import KEYRING, make_config, run, wait_until

Received = list[tuple[str, bytes]]


async def endpoint(node: str, received: Received, keyring: Keyring = KEYRING) -> DatagramEndpoint:
    return await DatagramEndpoint.open(
        node=node,
        keyring=keyring,
        on_datagram=lambda sender, payload, _address: received.append((sender, payload)),
        config=make_config(),
    )


def raw_send(address: tuple[str, int], data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, address)


def test_signed_datagrams_arrive_with_their_sender() -> None:
    async def scenario() -> None:
        got_a: Received = []
        got_b: Received = []
        a, b = await endpoint("a", got_a), await endpoint("b", got_b)
        assert a.address is not None and b.address is not None
        for i in range(10):
            assert a.send(b.address, f"ping {i}".encode())
        b.send(a.address, b"ack")
        await wait_until(lambda: len(got_b) == 10 and len(got_a) == 1, "datagrams")
        assert got_b == [("a", f"ping {i}".encode()) for i in range(10)]
        assert got_a == [("b", b"ack")]
        assert b.statistics().datagrams_delivered == 10
        a.close()
        b.close()

    run(scenario())


def test_bad_mac_truncated_oversized_and_unknown_key_are_dropped_and_counted() -> None:
    async def scenario() -> None:
        got: Received = []
        b = await endpoint("b", got)
        assert b.address is not None
        good = seal_datagram(KEYRING, "a", b"payload")
        tampered = bytearray(good)
        tampered[10] ^= 0x01  # flip a payload bit: the tag no longer verifies
        raw_send(b.address, bytes(tampered))
        raw_send(b.address, good[:20])  # truncated
        raw_send(b.address, b"\x01" + b"z" * (make_config().datagram_bytes_max + 10))  # oversized
        other_ring = Keyring(cluster=(Key(9, b"q" * 32),))
        raw_send(b.address, seal_datagram(other_ring, "a", b"unknown key"))
        # Re-attributing a signed datagram to another sender breaks its tag too.
        raw_send(b.address, good.replace(b"\x01a", b"\x01x", 1))
        raw_send(b.address, good)  # and a good one still gets through afterwards
        await wait_until(lambda: b.statistics().datagrams_received == 6, "six datagrams")
        await wait_until(lambda: len(got) == 1, "the good datagram")
        stats = b.statistics()
        assert got == [("a", b"payload")]
        assert stats.datagrams_bad_mac == 2
        assert stats.datagrams_truncated == 1
        assert stats.datagrams_oversized == 1
        assert stats.datagrams_unknown_key == 1
        assert stats.datagrams_delivered == 1
        b.close()

    run(scenario())


def test_key_rotation_keeps_datagrams_flowing() -> None:
    async def scenario() -> None:
        got: Received = []
        new = Key(5, b"r" * 32)
        a, b = await endpoint("a", []), await endpoint("b", got)
        assert b.address is not None
        b.keyring = b.keyring.install(new)  # install everywhere first
        a.keyring = a.keyring.install(new).use(5)  # a switches early: b accepts both
        a.send(b.address, b"new key")
        await wait_until(lambda: len(got) == 1, "datagram under the new key")
        b.keyring = b.keyring.use(5).remove(0)
        a.keyring = a.keyring.remove(0)
        a.send(b.address, b"after removal")
        await wait_until(lambda: len(got) == 2, "second datagram")
        raw_send(b.address, seal_datagram(KEYRING, "a", b"old key"))
        await wait_until(lambda: b.statistics().datagrams_unknown_key == 1, "old key refused")
        assert [p for _s, p in got] == [b"new key", b"after removal"]
        a.close()
        b.close()

    run(scenario())


def test_send_refuses_a_payload_that_would_exceed_the_datagram_limit() -> None:
    async def scenario() -> None:
        a = await endpoint("a", [])
        assert a.address is not None
        assert not a.send(a.address, b"x" * (a.payload_bytes_max + 1))
        assert a.send(a.address, b"x" * a.payload_bytes_max)
        assert a.statistics().datagrams_send_refused == 1
        await asyncio.sleep(0)
        a.close()

    run(scenario())


def test_open_datagram_never_raises_on_arbitrary_bytes() -> None:
    import random

    rng = random.Random(4)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 200))
        assert isinstance(open_datagram(KEYRING, data, 1400), str)


def test_message_datagrams_carry_codec_messages_and_drop_undecodable_ones() -> None:
    from synod.runtime.datagram import MessageDatagrams
    from tests.runtime.cores import Note

    async def scenario() -> None:
        got: list[tuple[str, object]] = []
        a = await MessageDatagrams.open(node="a", keyring=KEYRING, on_message=lambda *_: None)
        b = await MessageDatagrams.open(
            node="b", keyring=KEYRING, on_message=lambda sender, msg, _addr: got.append((sender, msg)),
        )
        assert b.endpoint.address is not None
        a.send(b.endpoint.address, Note(text="hello"))
        # Authentic (right key) but not a message: verified, then refused.
        raw_send(b.endpoint.address, seal_datagram(KEYRING, "a", b"\xc1 not msgpack"))
        a.send(b.endpoint.address, Note(text="again"))
        await wait_until(lambda: len(got) == 2, "two messages")
        await wait_until(lambda: b.statistics().datagrams_undecodable == 1, "counted drop")
        assert got == [("a", Note(text="hello")), ("a", Note(text="again"))]
        a.close()
        b.close()

    run(scenario())


def test_a_1400_byte_gossip_payload_fits_a_datagram() -> None:
    async def scenario() -> None:
        a = await endpoint("n" * 34, [])  # the longest node id that still fits
        assert a.payload_bytes_max >= 1400
        a.close()

    run(scenario())
