"""The dashboard: a deliberately small HTTP/1.1 server on asyncio.

Theory of operation
-------------------
Each node serves, on its ``http_bind`` address (loopback by default):

``GET /``
    one static page that polls ``/status`` with ``fetch`` every second and
    redraws its tables: no reload, no external assets (the Content-Security-Policy
    allows only the page's own inline script and style; text is inserted with
    ``textContent``, never as HTML).
``GET /status``
    JSON: this node's status (``synod.web.status.node_status``) plus, under
    ``cluster``, every gossip member's status fetched from its own dashboard
    (``/status?local=1``, at most ``peer_timeout_s`` each, concurrently), and the
    per-group view with replica lag. A member whose dashboard does not answer is
    listed with ``null``. ``?local=1`` skips the fan-out.
``GET /metrics``
    Prometheus text format (``prometheus-client``), from the same snapshot.

Safety: only GET and HEAD; the request head is bounded (``REQUEST_BYTES_MAX``)
and must arrive within ``REQUEST_TIMEOUT_S``; every response closes the
connection; at most ``CONNECTIONS_MAX`` are served at once, others are closed at
once. Nothing the server does changes the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from synod.web.metrics import render_metrics
from synod.web.status import cluster_view, node_status

if TYPE_CHECKING:
    from synod.node.process import Node

log = logging.getLogger("synod.web")

REQUEST_BYTES_MAX = 8192
REQUEST_TIMEOUT_S = 5.0
CONNECTIONS_MAX = 64
RESPONSE_BYTES_MAX = 4 * 1024 * 1024
PEER_TIMEOUT_S = 1.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Request Header Fields Too Large", 503: "Service Unavailable"}


def page_html() -> bytes:
    return resources.files("synod.web").joinpath("dashboard.html").read_bytes()


async def http_get(address: str, path: str, timeout_s: float = PEER_TIMEOUT_S) -> bytes | None:
    """GET ``http://address/path``; the body on 200, else None. Bounded in time
    and size; any failure is None."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                data = await reader.read(RESPONSE_BYTES_MAX + 1)
                while data and len(data) <= RESPONSE_BYTES_MAX:
                    more = await reader.read(RESPONSE_BYTES_MAX + 1 - len(data))
                    if not more:
                        break
                    data += more
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or len(data) > RESPONSE_BYTES_MAX or not head.startswith(b"HTTP/1.1 200"):
        return None
    return body


class DashboardServer:
    """The HTTP server of one node (see the module comment)."""

    def __init__(self, node: Node, bind: tuple[str, int]) -> None:
        self.node = node
        self.bind = bind
        self.server: asyncio.Server | None = None
        self.connections = 0
        self.refused = 0

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, self.bind[0], self.bind[1],
                                                 limit=REQUEST_BYTES_MAX)
        address = self.server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.server.wait_closed()

    async def status(self, *, local: bool) -> dict[str, Any]:
        mine = node_status(self.node)
        if local:
            return mine
        statuses: dict[str, dict[str, Any] | None] = {mine["node"]: dict(mine)}
        peers = [m for m in mine["members"] if m["node"] != mine["node"] and m["http"]
                 and m["status"] in ("alive", "suspect")]

        async def fetch(member: dict[str, Any]) -> None:
            body = await http_get(member["http"], "/status?local=1")
            try:
                statuses[member["node"]] = json.loads(body) if body is not None else None
            except ValueError:
                statuses[member["node"]] = None

        await asyncio.gather(*(fetch(m) for m in peers))
        for member in mine["members"]:
            if member["role"] == "node":      # MapReduce workers serve no dashboard
                statuses.setdefault(member["node"], None)
        mine["cluster"] = {"nodes": statuses, "groups": cluster_view(statuses)}
        return mine

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= CONNECTIONS_MAX:
            self.refused += 1
            writer.close()
            return
        self.connections += 1
        try:
            status, content_type, body = await self._respond(reader)
            head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
                    "X-Content-Type-Options: nosniff\r\n"
                    "Content-Security-Policy: default-src 'self'; script-src 'self' 'unsafe-inline'; "
                    "style-src 'unsafe-inline'\r\n\r\n")
            writer.write(head.encode() + body)
            with contextlib.suppress(OSError):
                await writer.drain()
        except Exception:  # a bad request must never stop the node
            log.exception("dashboard request failed")
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return 413, text, b"request head too large\n"
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            return 400, text, b"incomplete request\n"
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, text, b"bad request line\n"
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return 405, text, b"only GET\n"
        path, _, query = target.partition("?")
        if path == "/":
            return 200, "text/html; charset=utf-8", page_html()
        if path == "/status":
            status = await self.status(local="local=1" in query.split("&"))
            return 200, "application/json", json.dumps(status).encode()
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(node_status(self.node))
        return 404, text, b"not found\n"
