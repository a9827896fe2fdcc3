"""The gossip agent: one ``GossipMember`` on real UDP sockets (I/O glue).

Theory of operation
-------------------
The agent drives the sans-IO member exactly as the simulator does, on an asyncio
loop: datagrams in, ``on_message``; ``loop.call_later`` timers, ``on_timer``;
effects carried out in order. Every datagram is authenticated with the cluster
key (HMAC-SHA256, ``synod.runtime.datagram``); one that fails is dropped and
counted by the endpoint, never seen by the member.

Addresses. The member speaks to node ids. The agent maps an id to a UDP address
from, in order: the source address of the last authenticated datagram from that
id, the ``address`` the member advertised in its ``Alive`` (which every member
learns by gossip), and the seeds given as ``id@host:port``. The agent *binds*
``bind`` and *advertises* ``advertise`` (default: the bound address); they differ
behind NAT or in containers.

Push-pull rides on UDP datagrams here, with the datagram bound raised to 64 KiB
(enough for about 1,000 members on loopback). A TCP push-pull is not written yet.

The write-ahead log in ``data_dir`` keeps the member's incarnation records, so a
restarted agent comes back with a higher incarnation.

``MembersQuery`` datagrams (``synod members``) are answered by the agent itself
with its current view.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path

from synod.codec.registry import Message
from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Effect,
    Persist,
    Recovered,
    Send,
    SetTimer,
)
from synod.core.ids import NodeId
from synod.gossip.config import GossipConfig
from synod.gossip.member import GossipMember
from synod.gossip.messages import MembersQuery, MembersReply
from synod.gossip.view import MemberEvent
from synod.runtime.auth import Keyring
from synod.runtime.config import RuntimeConfig
from synod.runtime.datagram import MessageDatagrams
from synod.runtime.host import open_durable_log
from synod.storage.wal import WriteAheadLog

log = logging.getLogger("synod.gossip.agent")

#: Datagram bound for the agent: push-pull tables travel as one datagram.
AGENT_DATAGRAM_BYTES_MAX = 65_507


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address {text!r} is not HOST:PORT")
    return host, int(port)


def parse_seed(text: str) -> tuple[NodeId, tuple[str, int]]:
    """``id@host:port``."""
    name, sep, address = text.partition("@")
    if not sep:
        raise ValueError(f"seed {text!r} is not ID@HOST:PORT")
    return NodeId(name), parse_address(address)


class GossipAgent:
    def __init__(self, node: NodeId, *, keyring: Keyring, bind: tuple[str, int],
                 advertise: str = "", seeds: Sequence[tuple[NodeId, tuple[str, int]]] = (),
                 config: GossipConfig | None = None, meta: bytes = b"",
                 data_dir: Path | None = None) -> None:
        self.node = node
        self.keyring = keyring
        self.bind = bind
        self.advertise = advertise
        self.seeds = list(seeds)
        self.config = config if config is not None else GossipConfig.lan()
        self.meta = meta
        self.data_dir = data_dir
        self.member: GossipMember | None = None
        self.datagrams: MessageDatagrams | None = None
        self.events: asyncio.Queue[MemberEvent] = asyncio.Queue(maxsize=10_000)
        self._addresses: dict[NodeId, tuple[str, int]] = dict(self.seeds)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._log: WriteAheadLog | None = None
        self._stopped = asyncio.Event()

    @staticmethod
    def now_ms() -> float:
        return time.monotonic() * 1000.0

    async def start(self) -> None:
        runtime = RuntimeConfig(datagram_bytes_max=AGENT_DATAGRAM_BYTES_MAX)
        self.datagrams = await MessageDatagrams.open(
            node=self.node, keyring=self.keyring, on_message=self._on_datagram, local=self.bind,
            config=runtime)
        bound = self.datagrams.endpoint.address
        assert bound is not None
        advertise = self.advertise or f"{bound[0]}:{bound[1]}"
        recovered = Recovered()
        if self.data_dir is not None:
            self._log, recovered = open_durable_log(self.data_dir)
        self.member = GossipMember(self.node, random.Random(), self.config, address=advertise,
                                   meta=self.meta, seeds=tuple(seed for seed, _ in self.seeds))
        self._execute(self.member.start(self.now_ms(), recovered))

    @property
    def address(self) -> tuple[str, int] | None:
        return self.datagrams.endpoint.address if self.datagrams is not None else None

    async def leave(self, wait_s: float = 2.0) -> None:
        """Leave gracefully: broadcast the leave, wait (bounded) until it is spread."""
        member = self._member()
        self._execute(member.leave(self.now_ms()))
        deadline = time.monotonic() + wait_s
        while not member.leave_spread() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.datagrams is not None:
            self.datagrams.close()
        if self._log is not None:
            self._log.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ------------------------------------------------------------ driving the member

    def _member(self) -> GossipMember:
        assert self.member is not None, "agent not started"
        return self.member

    def _on_datagram(self, sender: str, message: Message, address: tuple[str, int]) -> None:
        source = NodeId(sender)
        if isinstance(message, MembersQuery):
            self._answer_query(message, address)
            return
        self._addresses[source] = address
        member = self._member()
        self._execute(member.on_message(self.now_ms(), source, message))

    def _answer_query(self, query: MembersQuery, address: tuple[str, int]) -> None:
        assert self.datagrams is not None
        rows = self._member()._state_rows()
        self.datagrams.send(address, MembersReply(request_id=query.request_id, members=rows))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        member = self._member()
        self._execute(member.on_timer(self.now_ms(), key))

    def _execute(self, effects: Sequence[Effect]) -> None:
        loop = asyncio.get_running_loop()
        for effect in effects:
            match effect:
                case Send():
                    self._send(effect.to, effect.message)
                case SetTimer():
                    old = self._timers.pop(effect.key, None)
                    if old is not None:
                        old.cancel()
                    self._timers[effect.key] = loop.call_later(
                        effect.delay_ms / 1000.0, self._fire, effect.key)
                case CancelTimer():
                    handle = self._timers.pop(effect.key, None)
                    if handle is not None:
                        handle.cancel()
                case Persist():
                    if self._log is not None:
                        for record in effect.records:
                            self._log.append(record)
                        self._log.sync()  # small and rare (once per start): inline
                    self._execute(list(effect.then))
                case ClientResult():
                    pass
        self._publish_events()

    def _publish_events(self) -> None:
        member = self.member
        if member is None:
            return
        for event in member.drain_events():
            log.info("%s %s %s incarnation=%d", self.node, event.kind.value, event.node,
                     event.incarnation)
            if self.events.full():
                self.events.get_nowait()
            self.events.put_nowait(event)

    def _send(self, to: NodeId, message: Message) -> None:
        assert self.datagrams is not None
        address = self._address_of(to)
        if address is None:
            log.debug("no address for %s", to)
            return
        self.datagrams.send(address, message)

    def _address_of(self, node: NodeId) -> tuple[str, int] | None:
        known = self._addresses.get(node)
        if known is not None:
            return known
        member = self._member().table.get(node)
        if member is not None and member.address:
            try:
                address = parse_address(member.address)
            except ValueError:
                return None
            self._addresses[node] = address
            return address
        return None


async def query_members(address: tuple[str, int], keyring: Keyring,
                        timeout_s: float = 2.0) -> MembersReply:
    """Ask the agent at ``address`` for its view (what ``synod members`` prints)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[MembersReply] = loop.create_future()
    request_id = random.getrandbits(31)

    def on_message(sender: str, message: Message, source: tuple[str, int]) -> None:
        if (isinstance(message, MembersReply) and message.request_id == request_id
                and not answer.done()):
            answer.set_result(message)

    datagrams = await MessageDatagrams.open(
        node="members-cli", keyring=keyring, on_message=on_message, local=("0.0.0.0", 0),
        config=RuntimeConfig(datagram_bytes_max=AGENT_DATAGRAM_BYTES_MAX))
    try:
        datagrams.send(address, MembersQuery(request_id=request_id))
        return await asyncio.wait_for(answer, timeout_s)
    finally:
        datagrams.close()
