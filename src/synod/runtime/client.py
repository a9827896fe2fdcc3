"""The client side of the runtime: ``connect`` and ``ClientConnection.request``.

A client opens one authenticated TCP connection to a node (kind ``"client"``,
its own principal and key), sends ``ClientRequest(request_id, body)`` envelopes
and matches each ``ClientReply`` to its request by ``request_id``. Later blocks'
client libraries (lock, txn, paxos) build on ``request``.

Back-pressure: ``request`` waits for room in the bounded send queue rather than
growing it, and ``requests_in_flight_max`` bounds outstanding requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from synod.codec.kernel import ClientReply, ClientRequest
from synod.codec.registry import Message
from synod.core.errors import LocalProtocolError, TimeoutError_
from synod.runtime.auth import (
    MODE_HMAC,
    MODE_INSECURE,
    MODE_TLS,
    InitiatorHandshake,
    Key,
    Mode,
    client_tls_context,
)
from synod.runtime.config import RuntimeConfig
from synod.runtime.stats import Counters, RuntimeStatistics
from synod.runtime.transport import Connection, ConnectionClosed, open_connection


class ClientConnection:
    """An authenticated connection from a client to one node."""

    def __init__(
        self,
        connection: Connection,
        *,
        counters: Counters[RuntimeStatistics],
        requests_in_flight_max: int,
    ) -> None:
        self.connection = connection
        self.counters = counters
        self.node = connection.peer.principal
        self._next_request_id = 1
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._in_flight = asyncio.Semaphore(requests_in_flight_max)
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            await self.connection.run(self._on_message)
        finally:
            reason = self.connection.close_reason or "closed"
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionClosed(f"connection to {self.node} closed: {reason}"))
            self._waiting.clear()

    def _on_message(self, connection: Connection, msg: Message) -> None:
        if not isinstance(msg, ClientReply):
            connection.refuse("frames_unexpected_message", f"node sent {type(msg).__name__}")
            return
        future = self._waiting.pop(msg.request_id, None)
        if future is not None and not future.done():
            future.set_result(msg.body)

    @property
    def closed(self) -> bool:
        return self.connection.closed

    async def wait_writable(self) -> None:
        """Wait until the bounded send queue has room (``request`` does this itself)."""
        await self.connection.wait_writable()

    async def request(self, body: Message, timeout_s: float) -> Message:
        """Send ``body`` and return the body of its reply (which may be an
        ``ErrorReply``). Raises ``TimeoutError_`` when no reply came in time (the
        request may or may not have been carried out) and ``ConnectionClosed`` when
        the connection is lost."""
        if timeout_s <= 0:
            raise LocalProtocolError("timeout_s must be > 0")
        try:
            async with asyncio.timeout(timeout_s):
                async with self._in_flight:
                    request_id = self._next_request_id
                    self._next_request_id += 1
                    future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
                    self._waiting[request_id] = future
                    try:
                        await self.connection.send(ClientRequest(request_id=request_id, body=body))
                        return await future
                    finally:
                        self._waiting.pop(request_id, None)
        except TimeoutError:
            raise TimeoutError_(f"no reply from {self.node} within {timeout_s} s") from None

    def statistics(self) -> RuntimeStatistics:
        return self.counters.snapshot()

    async def close(self) -> None:
        self.connection.close("client closed")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        await self.connection.wait_closed()

    async def __aenter__(self) -> ClientConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def connect(
    address: tuple[str, int],
    principal: str,
    key: bytes | Key | None,
    *,
    node: str | None = None,
    config: RuntimeConfig | None = None,
    requests_in_flight_max: int = 1024,
) -> ClientConnection:
    """Connect to the node at ``address`` as client ``principal`` with its ``key``.

    ``node``: the node id expected at that address (checked by the handshake when
    given). ``key=None`` requires ``config.insecure`` or TLS (``config.tls_*``).
    Raises ``OSError`` if unreachable and ``AuthenticationError`` if refused.
    """
    config = config or RuntimeConfig()
    if isinstance(key, bytes):
        key = Key(0, key)
    mode: Mode = MODE_INSECURE if config.insecure else MODE_TLS if config.tls_enabled else MODE_HMAC
    if mode == MODE_HMAC and key is None:
        raise LocalProtocolError("connect: a key is needed unless insecure or TLS")
    context: ssl.SSLContext | None = None
    if config.tls_enabled:
        context = client_tls_context(
            str(config.tls_cert_file), str(config.tls_key_file), str(config.tls_ca_file)
        )
    handshake = InitiatorHandshake(
        mode=mode,
        kind="client",
        principal=principal,
        key=key if mode == MODE_HMAC else None,
        expected_acceptor=node,
    )
    counters: Counters[RuntimeStatistics] = Counters(RuntimeStatistics)
    connection = await open_connection(
        address, handshake=handshake, config=config, counters=counters, ssl_context=context
    )
    return ClientConnection(
        connection, counters=counters, requests_in_flight_max=requests_in_flight_max
    )

