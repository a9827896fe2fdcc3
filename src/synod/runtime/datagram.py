"""UDP datagrams with an HMAC on every one (for gossip).

Theory of operation
-------------------
A datagram on the wire is::

    version (u8) | key id (u32) | sender length (u8) | sender | payload | tag (32)

where ``tag = HMAC-SHA256(key, everything before the tag)``: the key id, the
sender's node id and the payload are all covered, so a datagram cannot be
re-attributed to another sender or re-keyed. The key is a cluster key from the
``Keyring`` (``auth.py``): the primary key signs; every installed key verifies,
so keys rotate without downtime (install everywhere, use everywhere, remove), as
in memberlist. An encrypting variant (AES-GCM under the same key ids) would slot
in as another ``version``; it needs a dependency (``cryptography``) we do not
have, so it is not here.

Receive rules, each a counted drop (``statistics()``), never an exception:
longer than ``datagram_bytes_max`` (``oversized``), shorter than its own header
or tag (``truncated``), a key id we do not hold (``unknown_key``), a tag that does
not verify (``bad_mac``; compared with ``hmac.compare_digest``). Only a verified
datagram reaches ``on_datagram(sender, payload, address)``.

``MessageDatagrams`` carries codec messages (``synod.codec.encode``) on top:
a verified datagram that does not decode is dropped and counted
(``undecodable``) like the rest.

Replay of a whole datagram is not prevented here: SWIM messages carry sequence
numbers and incarnations, which make a replayed ping or ack harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import struct
from collections.abc import Callable
from typing import Any

from synod.codec.registry import Message, decode, encode
from synod.core.errors import LocalProtocolError, RemoteProtocolError
from synod.runtime.auth import Keyring
from synod.runtime.config import RuntimeConfig
from synod.runtime.stats import Counters, DatagramStatistics

log = logging.getLogger("synod.runtime.datagram")

DATAGRAM_VERSION = 1
TAG_BYTES = 32
_HEAD = struct.Struct(">BIB")
SENDER_BYTES_MAX = 64

DatagramHandler = Callable[[str, bytes, tuple[str, int]], None]


def seal_datagram(keyring: Keyring, sender: str, payload: bytes) -> bytes:
    """The wire bytes of ``payload`` from ``sender``, tagged with the primary key."""
    key = keyring.primary
    name = sender.encode()
    if not 0 < len(name) <= SENDER_BYTES_MAX:
        raise LocalProtocolError(f"sender name {sender!r} must be 1..{SENDER_BYTES_MAX} bytes")
    body = _HEAD.pack(DATAGRAM_VERSION, key.key_id, len(name)) + name + payload
    return body + hmac.new(key.secret, body, hashlib.sha256).digest()


def open_datagram(keyring: Keyring, data: bytes, datagram_bytes_max: int) -> tuple[str, bytes] | str:
    """Verify ``data``: ``(sender, payload)``, or the counter name of why it is dropped."""
    if len(data) > datagram_bytes_max:
        return "datagrams_oversized"
    if len(data) < _HEAD.size + TAG_BYTES:
        return "datagrams_truncated"
    version, key_id, name_length = _HEAD.unpack_from(data)
    if version != DATAGRAM_VERSION or name_length == 0 or name_length > SENDER_BYTES_MAX:
        return "datagrams_truncated"
    if len(data) < _HEAD.size + name_length + TAG_BYTES:
        return "datagrams_truncated"
    key = keyring.cluster_key(key_id)
    if key is None:
        return "datagrams_unknown_key"
    body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    if not hmac.compare_digest(hmac.new(key.secret, body, hashlib.sha256).digest(), tag):
        return "datagrams_bad_mac"
    name = body[_HEAD.size : _HEAD.size + name_length]
    try:
        sender = name.decode()
    except UnicodeDecodeError:
        return "datagrams_truncated"
    return sender, body[_HEAD.size + name_length :]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: DatagramEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.endpoint._received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("datagram error: %s", exc)


class DatagramEndpoint:
    """A UDP socket that signs what it sends and drops what does not verify.

    Swap ``keyring`` to rotate keys (the value is immutable; assignment is atomic
    on the loop)."""

    def __init__(
        self, *, node: str, keyring: Keyring, config: RuntimeConfig, on_datagram: DatagramHandler
    ) -> None:
        self.node = node
        self.keyring = keyring
        self.config = config
        self.on_datagram = on_datagram
        self.counters: Counters[DatagramStatistics] = Counters(DatagramStatistics)
        self.address: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(
        cls,
        *,
        node: str,
        keyring: Keyring,
        on_datagram: DatagramHandler,
        local: tuple[str, int] = ("127.0.0.1", 0),
        config: RuntimeConfig | None = None,
    ) -> DatagramEndpoint:
        """Bind a UDP endpoint on ``local`` (port 0 picks a free one)."""
        endpoint = cls(node=node, keyring=keyring, config=config or RuntimeConfig(), on_datagram=on_datagram)
        loop = asyncio.get_running_loop()
        transport, _protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(endpoint), local_addr=local
        )
        endpoint._transport = transport
        bound = transport.get_extra_info("sockname")
        endpoint.address = (str(bound[0]), int(bound[1]))
        return endpoint

    def send(self, address: tuple[str, int], payload: bytes) -> bool:
        """Send ``payload`` to ``address``; False (counted) if it would be too large
        or the endpoint is closed. Best effort, like UDP."""
        if self._transport is None:
            self.counters.add("datagrams_send_refused")
            return False
        data = seal_datagram(self.keyring, self.node, payload)
        if len(data) > self.config.datagram_bytes_max:
            self.counters.add("datagrams_send_refused")
            return False
        self._transport.sendto(data, address)
        self.counters.add("datagrams_sent")
        return True

    @property
    def payload_bytes_max(self) -> int:
        """Largest payload ``send`` accepts from this node."""
        return self.config.datagram_bytes_max - _HEAD.size - len(self.node.encode()) - TAG_BYTES

    def _received(self, data: bytes, address: tuple[str, int]) -> None:
        self.counters.add("datagrams_received")
        opened = open_datagram(self.keyring, data, self.config.datagram_bytes_max)
        if isinstance(opened, str):
            self.counters.add(opened)
            log.debug("dropped datagram from %s:%d (%s)", *address, opened)
            return
        sender, payload = opened
        self.counters.add("datagrams_delivered")
        self.on_datagram(sender, payload, address)

    def statistics(self) -> DatagramStatistics:
        return self.counters.snapshot()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


MessageHandler = Callable[[str, Message, tuple[str, int]], None]


class MessageDatagrams:
    """Codec messages over a ``DatagramEndpoint`` (what the gossip glue uses)."""

    def __init__(self, endpoint: DatagramEndpoint, on_message: MessageHandler) -> None:
        self.endpoint = endpoint
        self.on_message = on_message
        endpoint.on_datagram = self._on_datagram

    @classmethod
    async def open(
        cls,
        *,
        node: str,
        keyring: Keyring,
        on_message: MessageHandler,
        local: tuple[str, int] = ("127.0.0.1", 0),
        config: RuntimeConfig | None = None,
    ) -> MessageDatagrams:
        endpoint = await DatagramEndpoint.open(
            node=node, keyring=keyring, on_datagram=lambda *_: None, local=local, config=config
        )
        return cls(endpoint, on_message)

    def send(self, address: tuple[str, int], msg: Message) -> bool:
        """Encode and send ``msg``; False (counted) if it does not fit a datagram."""
        return self.endpoint.send(address, encode(msg))

    def _on_datagram(self, sender: str, payload: bytes, address: tuple[str, int]) -> None:
        try:
            msg = decode(payload, max_bytes=self.endpoint.config.datagram_bytes_max)
        except RemoteProtocolError as error:
            self.endpoint.counters.add("datagrams_undecodable")
            log.debug("dropped datagram from %s (%s): %s", sender, address, error)
            return
        self.on_message(sender, msg, address)

    def statistics(self) -> DatagramStatistics:
        return self.endpoint.statistics()

    def close(self) -> None:
        self.endpoint.close()
