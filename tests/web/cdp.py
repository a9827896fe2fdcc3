"""A minimal Chrome DevTools Protocol client (stdlib only) for the browser tests:
starts headless Chromium on a page and evaluates JavaScript in it, over one
WebSocket (RFC 6455: masked client frames, text frames only)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any


class Browser:
    """``with Browser(chromium, url, profile) as page: page.evaluate("1 + 1")``."""

    def __init__(self, chromium: str, url: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.sock: socket.socket | None = None
        self.next_id = 1
        self.url = url

    def __enter__(self) -> Browser:
        port = self._devtools_port()
        deadline = time.monotonic() + 30
        target = None
        while target is None and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                pages = [t for t in json.loads(response.read()) if t.get("type") == "page"]
            target = next((t for t in pages if t.get("url", "").startswith(self.url)), None)
            if target is None:
                time.sleep(0.2)
        assert target is not None, "the page never opened"
        self._connect(target["webSocketDebuggerUrl"])
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.sock is not None:
            self.sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)   # chromium's own process group, by its PID
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()

    def _devtools_port(self) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([self.process.stderr], [], [], 0.2)[0]:
                line = self.process.stderr.readline().decode(errors="replace")
                found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
                if found:
                    return int(found.group(1))
            if self.process.poll() is not None:
                break
        raise AssertionError("chromium did not open its DevTools port")

    def _connect(self, ws_url: str) -> None:
        found = re.match(r"ws://([^/:]+):(\d+)(/.*)", ws_url)
        assert found is not None
        host, port, path = found.group(1), int(found.group(2)), found.group(3)
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "DevTools closed the WebSocket handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:200]

    def _send(self, text: str) -> None:
        assert self.sock is not None
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x81, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _recv_exact(self, count: int) -> bytes:
        assert self.sock is not None
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            assert chunk, "DevTools closed the WebSocket"
            data += chunk
        return data

    def _recv(self) -> dict[str, Any]:
        first, second = self._recv_exact(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._recv_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._recv_exact(8))[0]
        payload = self._recv_exact(length)
        if first & 0x0F != 1:          # not a text frame (a ping, say): skip it
            return {}
        message: dict[str, Any] = json.loads(payload)
        return message

    def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (JSON-serialisable values)."""
        request_id = self.next_id
        self.next_id += 1
        self._send(json.dumps({"id": request_id, "method": "Runtime.evaluate",
                               "params": {"expression": expression, "returnByValue": True}}))
        while True:
            message = self._recv()
            if message.get("id") == request_id:
                result = message["result"]
                assert "exceptionDetails" not in result, result
                return result["result"].get("value")
