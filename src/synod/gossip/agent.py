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

Push-pull (the full-state exchange, anti-entropy and join) goes over TCP, as in
memberlist: the agent listens on TCP at the same port number as its UDP socket.
When the member emits ``Send(PushPull)`` the agent dials the peer's address,
runs the runtime's HMAC challenge-response handshake (``synod.runtime.auth``:
both sides prove the cluster key, and the initiator checks that it reached the
node it dialled), sends the one ``PushPull`` frame, reads the one
``PushPullReply`` frame, hands it to the member and closes. The accepting side
gives the ``PushPull`` to the member as coming from the *authenticated*
principal and writes the member's ``PushPullReply`` back on the same connection;
every other effect goes out as usual. Bounds: frames at most
``push_pull_bytes_max`` (a longer declared length closes the connection before
anything is buffered), ``PUSH_PULL_OUTBOUND_MAX`` exchanges of ours in flight,
``PUSH_PULL_INBOUND_MAX`` served at once, ``push_pull_timeout_s`` per exchange
from connect to reply. Bad input (a failed handshake, garbage, an oversized
frame, a second message or anything but a ``PushPull``) closes that connection
and is counted (``tcp_statistics()``), never reaching the member; a
``PushPull``/``PushPullReply`` arriving by UDP is dropped and counted
(``push_pull_over_udp``).

The write-ahead log in ``data_dir`` keeps the member's incarnation records, so a
restarted agent comes back with a higher incarnation.

``MembersQuery`` datagrams (``synod members``) are answered by the agent itself
with its current view.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import random
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from synod.core.errors import LocalProtocolError, RemoteProtocolError
from synod.core.ids import NodeId
from synod.gossip.config import GossipConfig
from synod.gossip.member import GossipMember
from synod.gossip.messages import MembersQuery, MembersReply, PushPull, PushPullReply
from synod.gossip.view import MemberEvent
from synod.runtime.auth import (
    KIND_NODE,
    MODE_HMAC,
    AcceptorHandshake,
    AuthenticationError,
    InitiatorHandshake,
    Keyring,
    ReplayCache,
)
from synod.runtime.config import RuntimeConfig
from synod.runtime.datagram import MessageDatagrams
from synod.runtime.host import open_durable_log
from synod.runtime.stats import Counters, DatagramStatistics, RuntimeStatistics
from synod.runtime.transport import Connection, Listener, MessageHandler, open_connection
from synod.storage.wal import WriteAheadLog

log = logging.getLogger("synod.gossip.agent")

#: Datagram bound for the agent. Gossip packets are at most ``packet_bytes_max``;
#: the larger bound is for ``MembersReply`` (``synod members``), which carries the
#: whole view in one datagram (about 1,000 members).
AGENT_DATAGRAM_BYTES_MAX = 65_507
#: Largest push-pull frame sent or accepted (memberlist caps remote state at 20 MB).
#: A row is 40-700 bytes (the address and up to ``meta_bytes_max`` of metadata), so
#: 8 MiB holds at least 12,000 members.
PUSH_PULL_BYTES_MAX = 8 * 1024 * 1024
#: Seconds one push-pull may take, connect to reply (memberlist's TCPTimeout is 10 s).
PUSH_PULL_TIMEOUT_S = 10.0
#: Our push-pulls in flight at once; more are refused (counted): the member retries.
PUSH_PULL_OUTBOUND_MAX = 16
#: Push-pull connections served at once; more are closed at accept (counted).
PUSH_PULL_INBOUND_MAX = 64
#: Tries to find a port free for both UDP and TCP when binding port 0.
BIND_ATTEMPTS_MAX = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPullStatistics:
    """The agent's push-pull counters (TCP transport counters: ``tcp_statistics()``)."""

    #: Push-pulls we started (a connection was attempted).
    started: int = 0
    #: ... that ended with the peer's reply handed to the member.
    completed: int = 0
    #: ... that failed: unreachable, handshake refused, closed or bad reply, timed out.
    failed: int = 0
    timed_out: int = 0
    #: Push-pulls not started: too many in flight, or no address for the peer.
    refused: int = 0
    #: Our own table did not fit ``push_pull_bytes_max`` (not sent).
    too_large: int = 0
    #: Push-pulls from peers answered.
    served: int = 0
    #: ``PushPull``/``PushPullReply`` that arrived by UDP (dropped).
    over_udp: int = 0


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
                 data_dir: Path | None = None,
                 push_pull_bytes_max: int = PUSH_PULL_BYTES_MAX,
                 push_pull_timeout_s: float = PUSH_PULL_TIMEOUT_S) -> None:
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
        self.push_pull_timeout_s = push_pull_timeout_s
        self._tcp_config = RuntimeConfig(
            frame_bytes_max=push_pull_bytes_max, send_queue_bytes_max=2 * push_pull_bytes_max,
            send_queue_messages_max=4, connections_max=PUSH_PULL_INBOUND_MAX,
            handshake_timeout_s=min(5.0, push_pull_timeout_s),
            connect_timeout_s=min(3.0, push_pull_timeout_s))
        self._tcp_counters: Counters[RuntimeStatistics] = Counters(RuntimeStatistics)
        self._push_pull_counts = {f.name: 0 for f in dataclasses.fields(PushPullStatistics)}
        self._replay_cache = ReplayCache(self._tcp_config.replay_cache_max)
        self._listener: Listener | None = None
        self._listener_stop: asyncio.Task[None] | None = None
        self._outbound: set[asyncio.Task[None]] = set()
        self._inbound_deadlines: dict[Connection, asyncio.TimerHandle] = {}
        self._served: set[Connection] = set()

    @staticmethod
    def now_ms() -> float:
        return time.monotonic() * 1000.0

    async def start(self) -> None:
        await self._open_sockets()
        assert self.datagrams is not None
        bound = self.datagrams.endpoint.address
        assert bound is not None
        advertise = self.advertise or f"{bound[0]}:{bound[1]}"
        recovered = Recovered()
        if self.data_dir is not None:
            self._log, recovered = open_durable_log(self.data_dir)
        self.member = GossipMember(self.node, random.Random(), self.config, address=advertise,
                                   meta=self.meta, seeds=tuple(seed for seed, _ in self.seeds))
        self._execute(self.member.start(self.now_ms(), recovered))

    async def _open_sockets(self) -> None:
        """UDP on ``bind``, then TCP (push-pull) on the same host and port number.
        With port 0 the kernel's UDP choice may be taken for TCP: try another."""
        runtime = RuntimeConfig(datagram_bytes_max=AGENT_DATAGRAM_BYTES_MAX)
        host, port = self.bind
        for attempt in range(BIND_ATTEMPTS_MAX):
            datagrams = await MessageDatagrams.open(
                node=self.node, keyring=self.keyring, on_message=self._on_datagram,
                local=self.bind, config=runtime)
            bound = datagrams.endpoint.address
            assert bound is not None
            listener = Listener(config=self._tcp_config, counters=self._tcp_counters,
                                make_handshake=self._acceptor_handshake, ssl_context=None,
                                on_connection=self._on_push_pull_connection,
                                on_closed=self._on_push_pull_closed)
            try:
                await listener.start(host, bound[1])
            except OSError as error:
                datagrams.close()
                if port != 0 or error.errno != errno.EADDRINUSE or attempt + 1 == BIND_ATTEMPTS_MAX:
                    raise
                continue
            self.datagrams, self._listener = datagrams, listener
            return

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
        for task in self._outbound:
            task.cancel()
        for handle in self._inbound_deadlines.values():
            handle.cancel()
        if self._listener is not None:
            # Listener.stop is a coroutine; stop() stays synchronous for its callers,
            # and wait_stopped() waits for it.
            self._listener_stop = asyncio.get_running_loop().create_task(self._listener.stop())
            self._listener = None
        if self.datagrams is not None:
            self.datagrams.close()
        if self._log is not None:
            self._log.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._listener_stop is not None:
            await self._listener_stop

    def push_pull_statistics(self) -> PushPullStatistics:
        return PushPullStatistics(**self._push_pull_counts)

    def tcp_statistics(self) -> RuntimeStatistics:
        """The push-pull TCP transport's counters: handshakes refused by reason,
        bad frames by reason, bytes."""
        return self._tcp_counters.snapshot()

    def udp_statistics(self) -> DatagramStatistics:
        assert self.datagrams is not None
        return self.datagrams.statistics()

    # ------------------------------------------------------------ driving the member

    def _member(self) -> GossipMember:
        assert self.member is not None, "agent not started"
        return self.member

    def _on_datagram(self, sender: str, message: Message, address: tuple[str, int]) -> None:
        source = NodeId(sender)
        if isinstance(message, MembersQuery):
            self._answer_query(message, address)
            return
        if isinstance(message, PushPull | PushPullReply):
            self._count("over_udp")
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
            if isinstance(message, PushPull):
                self._count("refused")
            return
        if isinstance(message, PushPull):
            self._start_push_pull(to, address, message)
        elif isinstance(message, PushPullReply):
            # Replies go back on the connection that asked (``_serve_push_pull``);
            # one here answers nobody.
            log.debug("push-pull reply to %s outside a connection, dropped", to)
        else:
            self.datagrams.send(address, message)

    def _count(self, name: str) -> None:
        self._push_pull_counts[name] += 1

    # ------------------------------------------------------------ push-pull over TCP

    def _acceptor_handshake(self, tls_peer: str | None) -> AcceptorHandshake:
        return AcceptorHandshake(mode=MODE_HMAC, principal=self.node, keyring=self.keyring,
                                 replay_cache=self._replay_cache)

    def _start_push_pull(self, peer: NodeId, address: tuple[str, int], message: PushPull) -> None:
        if len(self._outbound) >= PUSH_PULL_OUTBOUND_MAX:
            self._count("refused")
            return
        self._count("started")
        task = asyncio.get_running_loop().create_task(self._push_pull(peer, address, message))
        self._outbound.add(task)
        task.add_done_callback(self._outbound.discard)

    async def _push_pull(self, peer: NodeId, address: tuple[str, int], message: PushPull) -> None:
        """Dial ``peer``, authenticate, send our table, take its table, close."""
        replied = False

        def on_reply(connection: Connection, reply: Message) -> None:
            nonlocal replied
            if replied or not isinstance(reply, PushPullReply):
                connection.refuse("frames_unexpected_message",
                                  f"{type(reply).__name__} on a push-pull connection")
                return
            replied = True
            connection.close("push-pull done")
            self._execute(self._member().on_message(self.now_ms(), peer, reply))

        handshake = InitiatorHandshake(mode=MODE_HMAC, kind=KIND_NODE, principal=self.node,
                                       key=self.keyring.primary, expected_acceptor=peer)
        connection: Connection | None = None
        try:
            async with asyncio.timeout(self.push_pull_timeout_s):
                connection = await open_connection(
                    address, handshake=handshake, config=self._tcp_config,
                    counters=self._tcp_counters, ssl_context=None)
                connection.offer(message)  # a fresh queue: only too large refuses
                await connection.run(on_reply)
        except TimeoutError:
            self._count("timed_out")
        except LocalProtocolError:
            self._count("too_large")  # our table over push_pull_bytes_max
        except AuthenticationError as error:
            self._tcp_counters.add(f"auth_{error.reason}")
            log.warning("push-pull with %s refused: %s", peer, error)
        except (OSError, ssl.SSLError, RemoteProtocolError) as error:
            if connection is None:
                self._tcp_counters.add("peer_connect_failures")
            log.debug("push-pull with %s failed: %s", peer, error)
        finally:
            if connection is not None:
                connection.close("push-pull over")
        self._count("completed" if replied else "failed")

    def _on_push_pull_connection(self, connection: Connection) -> MessageHandler:
        """An authenticated peer dialled us: serve exactly one push-pull, in time."""
        loop = asyncio.get_running_loop()
        self._inbound_deadlines[connection] = loop.call_later(
            self.push_pull_timeout_s, connection.close, "push-pull timed out")
        return self._serve_push_pull

    def _on_push_pull_closed(self, connection: Connection) -> None:
        self._served.discard(connection)
        handle = self._inbound_deadlines.pop(connection, None)
        if handle is not None:
            handle.cancel()

    def _serve_push_pull(self, connection: Connection, message: Message) -> None:
        if connection.peer.kind != KIND_NODE or connection in self._served:
            connection.refuse("frames_unexpected_message", "a second message on a push-pull")
            return
        if not isinstance(message, PushPull):
            connection.refuse("frames_unexpected_message",
                              f"{type(message).__name__} on a push-pull connection")
            return
        self._served.add(connection)  # one exchange per connection
        source = NodeId(connection.peer.principal)
        effects = self._member().on_message(self.now_ms(), source, message)
        rest: list[Effect] = []
        answered = False
        for effect in effects:
            match effect:
                case Send(to=to, message=PushPullReply() as reply) if to == source:
                    answered = self._answer_push_pull(connection, reply)
                case _:
                    rest.append(effect)
        if not answered:
            connection.close("push-pull not answered")  # e.g. we have left
        self._execute(rest)

    def _answer_push_pull(self, connection: Connection, reply: PushPullReply) -> bool:
        try:
            connection.offer(reply)
        except LocalProtocolError:
            self._count("too_large")
            log.warning("push-pull reply to %s over %d bytes, not sent", connection.peer.principal,
                        self._tcp_config.frame_bytes_max)
            return False
        self._count("served")
        return True

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
