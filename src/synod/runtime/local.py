"""Node processes on this machine, started and stopped by PID.

``LocalProcesses`` is what ``synod cluster up`` (``synod.cli.cluster.LocalCluster``,
one core per process) and ``synod.node.LocalNodeCluster`` (whole nodes) share:
spawn each node with its log in ``DIR/<node>.log``, wait for the ``READY`` line
it prints, kill -9 / SIGTERM / restart one, stop them all. A subclass says how a
node is started (``command``), which nodes there are (``node_names``), how to lay
the cluster out the first time (``init``) and what to write after every change
(``save_layout``). Every process is stopped by its PID, never by name.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from synod.core.errors import ConfigError, SynodError
from synod.runtime.auth import new_secret

LOOPBACK = "127.0.0.1"


def free_ports(count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 (TCP, or UDP with SOCK_DGRAM).

    A UDP port is also free on TCP: the gossip agent listens on both at one port
    number (UDP for gossip, TCP for push-pull)."""
    sockets: list[socket.socket] = []  # all held until the end, so none is offered twice
    ports: list[int] = []
    try:
        for _ in range(count * 20):
            if len(ports) == count:
                break
            sock = socket.socket(socket.AF_INET, kind)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
            port = int(sock.getsockname()[1])
            if kind == socket.SOCK_DGRAM:
                twin = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(twin)
                try:
                    twin.bind((LOOPBACK, port))
                except OSError:
                    continue
            ports.append(port)
        if len(ports) < count:
            raise OSError(f"found {len(ports)} of {count} free ports")
        return ports
    finally:
        for sock in sockets:
            sock.close()


def write_secret(path: Path) -> None:
    """Write a fresh random secret to ``path`` (mode 0600) unless it exists."""
    if path.exists():
        return
    path.write_bytes(new_secret().hex().encode())
    path.chmod(0o600)


class LocalProcesses:
    """Node processes sharing ``data_dir`` (see the module comment)."""

    #: Seconds a stopped node may take to exit before it is SIGKILLed.
    stop_timeout_s = 10.0

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None,
                 ready_timeout_s: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.env = env or {}
        self.ready_timeout_s = ready_timeout_s
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------ what subclasses say

    def node_names(self) -> list[str]:
        raise NotImplementedError

    def init(self) -> None:
        raise NotImplementedError

    def command(self, node: str) -> list[str]:
        raise NotImplementedError

    def save_layout(self) -> None:
        """Write what clients read (addresses, PIDs) after every change."""

    # ------------------------------------------------------------ processes

    def start(self) -> Self:
        """Start every node not running and wait until each is READY."""
        if not self.node_names():
            self.init()
        started = [node for node in self.node_names() if not self.is_running(node)]
        for node in started:
            self._spawn(node)
        for node in started:
            self._wait_ready(node)
        self.save_layout()
        return self

    def _spawn(self, node: str) -> None:
        log_file = open(self.data_dir / f"{node}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.processes[node] = subprocess.Popen(
                self.command(node), stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True,
            )
        finally:
            log_file.close()

    def _wait_ready(self, node: str) -> None:
        process = self.processes[node]
        assert process.stdout is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SynodError(f"node {node} exited with {process.returncode} before READY; "
                                 f"see {self.data_dir / f'{node}.log'}")
            readable, _, _ = select.select([process.stdout], [], [], 0.1)
            if readable and process.stdout.readline().startswith(b"READY"):
                return
        self._signal(node, signal.SIGKILL)
        raise SynodError(f"node {node} not READY within {self.ready_timeout_s} s")

    def pid(self, node: str) -> int:
        return self.processes[node].pid

    def is_running(self, node: str) -> bool:
        process = self.processes.get(node)
        return process is not None and process.poll() is None

    def _signal(self, node: str, signum: int | None) -> int | None:
        """Send ``signum`` (None: none, it was already sent) and wait, SIGKILL
        after ``stop_timeout_s``; the exit status (None if not started)."""
        process = self.processes.pop(node, None)
        if process is None:
            return None
        if signum is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def kill(self, node: str) -> None:
        """SIGKILL ``node`` (by PID): a crash, no clean shutdown."""
        self._signal(node, signal.SIGKILL)
        self.save_layout()

    def stop_node(self, node: str) -> int | None:
        """SIGTERM ``node`` (graceful) and wait; its exit status."""
        code = self._signal(node, signal.SIGTERM)
        self.save_layout()
        return code

    def restart(self, node: str) -> None:
        """Start ``node`` again (same addresses, same data) and wait for READY."""
        if self.is_running(node):
            raise ConfigError(f"node {node} is running")
        self.processes.pop(node, None)
        self._spawn(node)
        self._wait_ready(node)
        self.save_layout()

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every node at once, wait for each; their exit statuses."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        # One SIGTERM each: a second one could land after the node's handler is
        # gone, at the very end of its graceful exit, and kill it.
        codes = {node: self._signal(node, None) for node in list(self.processes)}
        if self.data_dir.exists():
            self.save_layout()
        return codes

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
