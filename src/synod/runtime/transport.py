"""TCP transport: authenticated, framed connections with bounded send queues.

Theory of operation
-------------------
A connection is a byte stream cut into length-prefixed frames
(``synod.codec.frames``), each frame one ``synod.codec.encode``d message.

* Every connection first runs the handshake of ``auth.py``, with frames capped at
  ``handshake_frame_bytes_max`` and a deadline of ``handshake_timeout_s``; only
  then is the cap raised to ``frame_bytes_max`` and are messages delivered.
* Bad input closes that one connection and is counted by reason: undecodable
  bytes (``frames_garbage``), an unknown message tag (``frames_unknown_type``), a
  declared frame length over the cap (``frames_too_large``, refused before any of
  it is buffered), a stream that ends inside a frame (``frames_truncated``), a
  message that has no business on this connection (``frames_unexpected_message``).
  Nothing from such a connection reaches the core after the bad frame.
* Outbound messages go through a ``SendQueue`` bounded in messages and bytes. A
  best-effort ``offer`` on a full queue is refused and counted
  (``send_queue_full``): protocol messages may be lost anyway and the core
  retries. ``wait_writable`` lets a client wait for room instead. Towards a node
  (``PeerLink``) the OLDEST queued frames are dropped to make room instead
  (``send_queue_dropped_oldest``): a peer that was down or slow gets the newest
  protocol messages (a current heartbeat, the latest round) when it is back, not
  stale ones while fresh ones are refused.
* ``PeerLink`` is the outbound side towards one node: it owns its queue across
  reconnections and reconnects with exponential back-off and full jitter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable

from synod.codec.frames import FrameDecoder, frame
from synod.codec.registry import Message, UnknownMessageType, decode, encode
from synod.core.errors import LocalProtocolError, RemoteProtocolError
from synod.runtime.auth import (
    AcceptorHandshake,
    Authenticated,
    AuthenticationError,
    InitiatorHandshake,
    tls_principal,
)
from synod.runtime.config import RuntimeConfig
from synod.runtime.stats import Counters, RuntimeStatistics

log = logging.getLogger("synod.runtime.transport")

MessageHandler = Callable[["Connection", Message], None]


def classify_decode_error(error: RemoteProtocolError) -> str:
    """The counter a decoding failure is filed under."""
    if isinstance(error, UnknownMessageType):
        return "frames_unknown_type"
    return "frames_garbage"


class ConnectionClosed(LocalProtocolError):
    """A send on a connection that is closed."""


# ---------------------------------------------------------------- send queue


class SendQueue:
    """A bounded FIFO of encoded frames waiting for one socket."""

    __slots__ = ("_bytes", "_frames", "_nonempty", "_room", "bytes_max", "messages_max")

    def __init__(self, *, messages_max: int, bytes_max: int) -> None:
        self.messages_max = messages_max
        self.bytes_max = bytes_max
        self._frames: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._nonempty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def has_room(self, size: int) -> bool:
        if not self._frames:
            return True  # one frame always fits an empty queue (size <= frame max)
        return len(self._frames) < self.messages_max and self._bytes + size <= self.bytes_max

    def offer(self, data: bytes) -> bool:
        """Queue ``data``; False (nothing queued) when the queue is full."""
        if not self.has_room(len(data)):
            self._room.clear()
            return False
        self._frames.append(data)
        self._bytes += len(data)
        self._nonempty.set()
        if not self.has_room(1):
            self._room.clear()
        return True

    async def wait_writable(self, size: int = 1) -> None:
        """Wait until a frame of ``size`` bytes would be accepted."""
        while not self.has_room(size):
            self._room.clear()
            await self._room.wait()

    async def take(self, bytes_max: int) -> list[bytes]:
        """Wait for at least one frame; remove and return frames up to ``bytes_max``."""
        while not self._frames:
            self._nonempty.clear()
            await self._nonempty.wait()
        batch: list[bytes] = []
        taken = 0
        while self._frames and (not batch or taken + len(self._frames[0]) <= bytes_max):
            data = self._frames.popleft()
            batch.append(data)
            taken += len(data)
        self._bytes -= taken
        if not self._frames:
            self._nonempty.clear()
        self._room.set()
        return batch

    def drop_oldest_for(self, size: int) -> int:
        """Drop frames from the front until a frame of ``size`` bytes fits; how
        many were dropped. Only whole frames are ever dropped: the writer task
        takes frames out before it writes them."""
        dropped = 0
        while self._frames and not self.has_room(size):
            self._bytes -= len(self._frames.popleft())
            dropped += 1
        if self.has_room(1):
            self._room.set()
        return dropped

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0
        self._nonempty.clear()
        self._room.set()


# ---------------------------------------------------------------- connection


class Connection:
    """One authenticated TCP connection: a reader task delivering messages to a
    handler and a writer task draining a ``SendQueue``."""

    _WRITE_BATCH_BYTES = 1024 * 1024

    def __init__(
        self,
        *,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: FrameDecoder,
        peer: Authenticated,
        config: RuntimeConfig,
        counters: Counters[RuntimeStatistics],
        queue: SendQueue | None = None,
        initial_frames: list[bytes] | None = None,
        label: str = "",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = decoder
        self.peer = peer
        self.config = config
        self.counters = counters
        # ``is None``, not ``or``: an empty SendQueue is falsy (it has __len__), and
        # a reconnecting PeerLink whose queue happened to be empty would otherwise
        # get a private queue that nothing it offers ever reaches.
        self.queue = queue if queue is not None else SendQueue(
            messages_max=config.send_queue_messages_max, bytes_max=config.send_queue_bytes_max
        )
        self.label = label or f"{peer.kind} {peer.principal}"
        self._initial_frames = list(initial_frames or ())
        self.close_reason: str | None = None
        #: The client id the host gave a client connection (None for nodes).
        self.client_id: str | None = None
        self._closed = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        #: A frame went out directly in this loop iteration (see ``write_now``).
        self._corked = False

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    # -- sending

    def _frame(self, msg: Message) -> bytes:
        return frame(encode(msg), frame_bytes_max=self.config.frame_bytes_max)

    def offer(self, msg: Message) -> bool:
        """Best effort: queue ``msg``, or count and refuse it if the queue is full."""
        if self.closed:
            return False
        data = self._frame(msg)
        if self.write_now(data) or self.queue.offer(data):
            return True
        self.counters.add("send_queue_full")
        return False

    def write_now(self, data: bytes) -> bool:
        """Hand ``data`` to the socket at once, if that keeps the order and costs
        no extra system calls; False means "queue it" (nothing was written).

        The first frame of a loop iteration on an idle connection goes straight
        out, which saves the writer task's wake-up on the latency path (one
        request in flight). Later frames of the same iteration are queued, so the
        writer task sends them together in one call, as before. Nothing goes out
        directly while frames wait in the queue or in the socket's buffer."""
        if (self._corked or self.closed or self._writer_task is None or self.queue
                or self.writer.transport.get_write_buffer_size() > 0):
            return False
        self.writer.write(data)
        self.counters.add("messages_sent")
        self.counters.add("bytes_sent", len(data))
        self._corked = True
        asyncio.get_running_loop().call_soon(self._uncork)
        return True

    def _uncork(self) -> None:
        self._corked = False

    async def send(self, msg: Message) -> None:
        """Queue ``msg``, waiting for room (back-pressure for clients)."""
        data = self._frame(msg)
        while True:
            if self.closed:
                raise ConnectionClosed(f"connection to {self.label} closed: {self.close_reason}")
            if self.write_now(data) or self.queue.offer(data):
                return
            waiter = asyncio.ensure_future(self.queue.wait_writable(len(data)))
            closed = asyncio.ensure_future(self._closed.wait())
            _done, pending = await asyncio.wait((waiter, closed), return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()

    async def wait_writable(self) -> None:
        """Wait until the send queue has room (or the connection closed)."""
        if not self.closed:
            await self.queue.wait_writable()

    async def _write_loop(self) -> None:
        while True:
            batch = await self.queue.take(self._WRITE_BATCH_BYTES)
            self.writer.writelines(batch)
            self.counters.add("messages_sent", len(batch))
            self.counters.add("bytes_sent", sum(len(b) for b in batch))
            await self.writer.drain()

    # -- receiving

    async def run(self, handler: MessageHandler, read_gate: asyncio.Event | None = None) -> None:
        """Serve the connection until it closes: write queued frames, read frames
        and hand each decoded message to ``handler``. Returns when closed.

        While ``read_gate`` is clear, no further frame is delivered and nothing
        more is read (the host's back-pressure when its fsyncs fall behind)."""
        self._writer_task = asyncio.create_task(self._write_loop())
        self._writer_task.add_done_callback(self._on_writer_done)
        try:
            # Frames that arrived together with the end of the handshake.
            initial, self._initial_frames = self._initial_frames, []
            if not await self._deliver(initial, handler, read_gate):
                return
            while not self.closed:
                if read_gate is not None and not read_gate.is_set():
                    await read_gate.wait()
                data = await self.reader.read(self.config.read_chunk_bytes)
                if not data:
                    if self.decoder.buffered_bytes:
                        self._refuse("frames_truncated", "stream ended inside a frame")
                    else:
                        self.close("peer closed")
                    return
                self.counters.add("bytes_received", len(data))
                try:
                    frames = self.decoder.feed(data)
                except RemoteProtocolError as error:
                    self._refuse("frames_too_large", str(error))
                    return
                if not await self._deliver(frames, handler, read_gate):
                    return
        except (ConnectionError, OSError, ssl.SSLError) as error:
            self.close(f"i/o error: {error}")
        finally:
            self.close(self.close_reason or "reader stopped")

    async def _deliver(
        self, frames: list[bytes], handler: MessageHandler, read_gate: asyncio.Event | None
    ) -> bool:
        for payload in frames:
            if read_gate is not None and not read_gate.is_set():
                await read_gate.wait()
            if self.closed:
                return False
            try:
                msg = decode(payload, max_bytes=self.config.frame_bytes_max)
            except RemoteProtocolError as error:
                self._refuse(classify_decode_error(error), str(error))
                return False
            self.counters.add("messages_received")
            handler(self, msg)
        return not self.closed

    def _refuse(self, counter: str, detail: str) -> None:
        self.counters.add(counter)
        log.warning("closing connection from %s: %s (%s)", self.label, detail, counter)
        self.close(f"{counter}: {detail}")

    def refuse(self, counter: str, detail: str) -> None:
        """Close because the peer broke the protocol; counted under ``counter``."""
        if not self.closed:
            self._refuse(counter, detail)

    def _on_writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.close(f"write failed: {task.exception()}")

    def close(self, reason: str) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self.counters.add("connections_closed")
        if self._writer_task is not None:
            self._writer_task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        if self._writer_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer_task
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# ---------------------------------------------------------------- handshakes


async def _read_handshake_message(
    reader: asyncio.StreamReader, decoder: FrameDecoder, buffered: list[bytes]
) -> Message:
    while not buffered:
        data = await reader.read(4096)
        if not data:
            raise AuthenticationError("handshake_malformed", "peer closed during handshake")
        buffered.extend(decoder.feed(data))
    try:
        return decode(buffered.pop(0), max_bytes=decoder.frame_bytes_max)
    except RemoteProtocolError as error:
        raise AuthenticationError("handshake_malformed", str(error)) from None


async def run_acceptor_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handshake: AcceptorHandshake,
    config: RuntimeConfig,
) -> tuple[Authenticated, FrameDecoder, list[bytes]]:
    """Authenticate the peer that connected to us; raises ``AuthenticationError``."""
    decoder = FrameDecoder(frame_bytes_max=config.handshake_frame_bytes_max)
    buffered: list[bytes] = []

    async def exchange() -> Authenticated:
        while handshake.result is None:
            msg = await _read_handshake_message(reader, decoder, buffered)
            for reply in handshake.receive(msg):
                writer.write(frame(encode(reply)))
            await writer.drain()
        return handshake.result

    try:
        result = await asyncio.wait_for(exchange(), config.handshake_timeout_s)
    except TimeoutError:
        raise AuthenticationError("handshake_timeout", "handshake not finished in time") from None
    except RemoteProtocolError as error:
        if isinstance(error, AuthenticationError):
            raise
        raise AuthenticationError("handshake_malformed", str(error)) from None
    # Frames already read past the handshake are handed to the connection.
    decoder.frame_bytes_max = config.frame_bytes_max
    return result, decoder, buffered


async def run_initiator_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handshake: InitiatorHandshake,
    config: RuntimeConfig,
) -> tuple[Authenticated, FrameDecoder, list[bytes]]:
    """Authenticate ourselves to, and the acceptor to us."""
    decoder = FrameDecoder(frame_bytes_max=config.handshake_frame_bytes_max)
    buffered: list[bytes] = []

    async def exchange() -> Authenticated:
        writer.write(frame(encode(handshake.start())))
        await writer.drain()
        while handshake.result is None:
            msg = await _read_handshake_message(reader, decoder, buffered)
            for reply in handshake.receive(msg):
                writer.write(frame(encode(reply)))
            await writer.drain()
        return handshake.result

    try:
        result = await asyncio.wait_for(exchange(), config.handshake_timeout_s)
    except TimeoutError:
        raise AuthenticationError("handshake_timeout", "handshake not finished in time") from None
    except RemoteProtocolError as error:
        if isinstance(error, AuthenticationError):
            raise
        raise AuthenticationError("handshake_malformed", str(error)) from None
    # Frames already read past the handshake are handed to the connection.
    decoder.frame_bytes_max = config.frame_bytes_max
    return result, decoder, buffered


async def open_connection(
    address: tuple[str, int],
    *,
    handshake: InitiatorHandshake,
    config: RuntimeConfig,
    counters: Counters[RuntimeStatistics],
    ssl_context: ssl.SSLContext | None,
    queue: SendQueue | None = None,
) -> Connection:
    """Connect to ``address``, authenticate, and return the connection (not yet
    running: call ``run``). Raises ``OSError``/``TimeoutError`` if unreachable and
    ``AuthenticationError`` if the handshake fails."""
    host, port = address
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ssl_context, limit=config.read_chunk_bytes),
        config.connect_timeout_s,
    )
    try:
        if ssl_context is not None:
            handshake.tls_peer_principal = tls_principal(writer.get_extra_info("ssl_object"))
        peer, decoder, leftover = await run_initiator_handshake(reader, writer, handshake, config)
    except BaseException:
        writer.close()
        raise
    return Connection(
        reader=reader,
        writer=writer,
        decoder=decoder,
        peer=peer,
        config=config,
        counters=counters,
        queue=queue,
        initial_frames=leftover,
        label=f"node {peer.principal} at {host}:{port}",
    )


# ---------------------------------------------------------------- peer links


def backoff_delay_ms(failures: int, config: RuntimeConfig, rng: random.Random) -> float:
    """Full-jitter exponential back-off: uniform in [min, min(max, min * 2^failures)]."""
    ceiling = min(config.reconnect_delay_ms_max, config.reconnect_delay_ms_min * 2.0 ** min(failures, 30))
    return rng.uniform(config.reconnect_delay_ms_min, max(config.reconnect_delay_ms_min, ceiling))


class PeerLink:
    """Our outbound connection to one node, opened on the first message and kept
    up from then on (reconnecting after any loss).

    Messages are offered to a queue owned by the link (bounded, survives
    reconnection); a task connects (with back-off between failures), authenticates
    and drains the queue; messages the peer sends back on it go to ``handler``.
    """

    def __init__(
        self,
        *,
        peer: str,
        address: tuple[str, int],
        make_handshake: Callable[[], InitiatorHandshake],
        config: RuntimeConfig,
        counters: Counters[RuntimeStatistics],
        ssl_context: ssl.SSLContext | None,
        handler: MessageHandler,
        rng: random.Random,
    ) -> None:
        self.peer = peer
        self.address = address
        self.make_handshake = make_handshake
        self.config = config
        self.counters = counters
        self.ssl_context = ssl_context
        self.handler = handler
        self.rng = rng
        self.queue = SendQueue(
            messages_max=config.send_queue_messages_max, bytes_max=config.send_queue_bytes_max
        )
        self.connection: Connection | None = None
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def offer(self, msg: Message) -> bool:
        data = frame(encode(msg), frame_bytes_max=self.config.frame_bytes_max)
        connection = self.connection
        if connection is not None and connection.write_now(data):
            return True
        if not self.queue.offer(data):
            self.counters.add("send_queue_dropped_oldest", self.queue.drop_oldest_for(len(data)))
            if not self.queue.offer(data):   # pragma: no cover - an empty queue takes any frame
                self.counters.add("send_queue_full")
                return False
        if self._task is None and not self._stopping:
            self._task = asyncio.create_task(self._run(), name=f"peer-link-{self.peer}")
        return True

    async def _run(self) -> None:
        while not self._stopping:
            try:
                connection = await open_connection(
                    self.address,
                    handshake=self.make_handshake(),
                    config=self.config,
                    counters=self.counters,
                    ssl_context=self.ssl_context,
                    queue=self.queue,
                )
            except (OSError, TimeoutError, ssl.SSLError, RemoteProtocolError) as error:
                self.failures += 1
                self.counters.add("peer_connect_failures")
                if isinstance(error, AuthenticationError):
                    self.counters.add(f"auth_{error.reason}")
                    log.warning("peer %s refused authentication: %s", self.peer, error)
                delay_ms = backoff_delay_ms(self.failures, self.config, self.rng)
                log.debug("connect to %s failed (%s); retry in %.0f ms", self.peer, error, delay_ms)
                await asyncio.sleep(delay_ms / 1000.0)
                continue
            self.failures = 0
            self.connection = connection
            await connection.run(self.handler)
            self.connection = None
            if not self._stopping:
                await asyncio.sleep(backoff_delay_ms(0, self.config, self.rng) / 1000.0)

    async def stop(self) -> None:
        self._stopping = True
        if self.connection is not None:
            self.connection.close("stopping")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.queue.clear()


# ---------------------------------------------------------------- listener


class Listener:
    """Accepts connections, authenticates them and runs each one.

    ``on_connection(conn)`` is called once a peer is authenticated and returns the
    handler for its messages; ``on_closed(conn)`` when it is gone. A failed
    handshake is logged, counted under ``auth_<reason>`` and closes that socket.
    """

    def __init__(
        self,
        *,
        config: RuntimeConfig,
        counters: Counters[RuntimeStatistics],
        make_handshake: Callable[[str | None], AcceptorHandshake],
        ssl_context: ssl.SSLContext | None,
        on_connection: Callable[[Connection], MessageHandler],
        on_closed: Callable[[Connection], None],
        read_gate: asyncio.Event | None = None,
    ) -> None:
        self.config = config
        self.counters = counters
        self.make_handshake = make_handshake
        self.ssl_context = ssl_context
        self.on_connection = on_connection
        self.on_closed = on_closed
        self.read_gate = read_gate
        self.connections: set[Connection] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._listening_socket: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0 picks a free one); returns the address."""
        if self.ssl_context is None:
            self._server = await asyncio.start_server(
                self._accepted, host, port, limit=self.config.read_chunk_bytes
            )
        else:
            # With TLS we accept sockets ourselves and run the TLS handshake with
            # ``connect_accepted_socket``, so that a failed handshake is ours to
            # count and log (``start_server(ssl=...)`` would only log it).
            listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind((host, port))
            listening.listen(128)
            listening.setblocking(False)
            self._listening_socket = listening
            self._accept_task = asyncio.create_task(self._accept_tls_loop(listening))
            bound = listening.getsockname()
            return str(bound[0]), int(bound[1])
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def _accept_tls_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            accepted, _address = await loop.sock_accept(listening)
            task = loop.create_task(self._accepted_tls(accepted))
            self._pending.add(task)  # the task removes itself when done

    async def _accepted_tls(self, accepted: socket.socket) -> None:
        assert self.ssl_context is not None
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        try:
            where = accepted.getpeername()
            reader = asyncio.StreamReader(limit=self.config.read_chunk_bytes)
            # Keep our own protocol object: uvloop returns its TLS wrapper instead.
            protocol = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    accepted,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.config.handshake_timeout_s,
                )
            except (ssl.SSLError, OSError, TimeoutError) as error:
                self.counters.add("connections_accepted")
                self.counters.add("auth_tls_failure")
                log.warning("refusing connection from %s: TLS failed: %r", where, error)
                accepted.close()
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._serve(reader, writer, tls_done=True)
        finally:
            self._pending.discard(task)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pending.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._pending.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls_done: bool = False
    ) -> None:
        self.counters.add("connections_accepted")
        where = writer.get_extra_info("peername")
        if len(self._pending) > self.config.connections_max:
            self.counters.add("connections_refused_limit")
            log.warning("refusing connection from %s: %d connections open", where, len(self.connections))
            writer.close()
            return
        tls_peer = tls_principal(writer.get_extra_info("ssl_object")) if tls_done else None
        try:
            peer, decoder, leftover = await run_acceptor_handshake(
                reader, writer, self.make_handshake(tls_peer), self.config
            )
        except AuthenticationError as error:
            self.counters.add(f"auth_{error.reason}")
            log.warning("refusing connection from %s: %s", where, error)
            writer.close()
            return
        except (ConnectionError, OSError) as error:
            self.counters.add("auth_handshake_malformed")
            log.warning("connection from %s lost during handshake: %s", where, error)
            writer.close()
            return
        self.counters.add("connections_authenticated")
        connection = Connection(
            reader=reader,
            writer=writer,
            decoder=decoder,
            peer=peer,
            config=self.config,
            counters=self.counters,
            initial_frames=leftover,
            label=f"{peer.kind} {peer.principal} from {where}",
        )
        self.connections.add(connection)
        try:
            handler = self.on_connection(connection)
            await connection.run(handler, self.read_gate)
        finally:
            self.connections.discard(connection)
            self.on_closed(connection)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._accept_task
            self._accept_task = None
        if self._listening_socket is not None:
            self._listening_socket.close()
            self._listening_socket = None
        for connection in list(self.connections):
            connection.close("node stopping")
        # Closed connections end their tasks; cancel only what is still stuck
        # (for example in a handshake) after a grace period.
        if self._pending:
            _done, stuck = await asyncio.wait(list(self._pending), timeout=1.0)
            for task in stuck:
                task.cancel()
            for task in stuck:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None
