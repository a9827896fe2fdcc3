"""Reference systems for the benchmarks: install, start on 127.0.0.1, stop by PID.

These are benchmark tools, never dependencies of synod. ``ensure_apt(pkg)`` installs
a Debian package when its binary is missing (etcd-server, serf, zookeeper).

Usage from a bench script::

    with EtcdCluster(members=3, base_port=23790) as etcd:
        endpoints = etcd.client_endpoints   # ["127.0.0.1:23790", ...]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


def ensure_apt(binary: str, package: str) -> str:
    """Return the path of ``binary``, installing Debian ``package`` if needed."""
    path = shutil.which(binary)
    if path:
        return path
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
    path = shutil.which(binary)
    if not path:
        raise RuntimeError(f"{binary} not found after installing {package}")
    return path


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout_s} s")


def stop_pids(pids: list[int], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Stop the processes we started, by PID (never by name)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if finished:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


@dataclass
class EtcdCluster:
    """A 3-member (by default) etcd 3.4 cluster on loopback, fsync on (etcd's default)."""

    members: int = 3
    base_port: int = 23790
    data_root: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def client_endpoints(self) -> list[str]:
        return [f"{LOOPBACK}:{self.base_port + 2 * i}" for i in range(self.members)]

    def _name(self, i: int) -> str:
        return f"etcd{i}"

    def _command(self, i: int) -> list[str]:
        binary = ensure_apt("etcd", "etcd-server")
        assert self.data_root is not None
        client = self.base_port + 2 * i
        peer = client + 1
        initial = ",".join(
            f"{self._name(j)}=http://{LOOPBACK}:{self.base_port + 2 * j + 1}" for j in range(self.members)
        )
        return [
            binary,
            "--name", self._name(i),
            "--data-dir", str(self.data_root / self._name(i)),
            "--listen-client-urls", f"http://{LOOPBACK}:{client}",
            "--advertise-client-urls", f"http://{LOOPBACK}:{client}",
            "--listen-peer-urls", f"http://{LOOPBACK}:{peer}",
            "--initial-advertise-peer-urls", f"http://{LOOPBACK}:{peer}",
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "synod-bench",
            "--log-level", "error",
            "--logger", "zap",
        ]

    def start(self) -> EtcdCluster:
        if self.data_root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="synod-bench-etcd-")
            self.data_root = Path(self._tmp.name)
        for i in range(self.members):
            self.start_member(i)
        for i in range(self.members):
            wait_port(self.base_port + 2 * i)
        return self

    def start_member(self, i: int) -> None:
        env = dict(os.environ, ETCD_UNSUPPORTED_ARCH=os.environ.get("ETCD_UNSUPPORTED_ARCH", ""))
        self.processes[self._name(i)] = subprocess.Popen(
            self._command(i), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )

    def kill_member(self, i: int) -> None:
        process = self.processes.pop(self._name(i))
        stop_pids([process.pid], signal.SIGKILL)

    def stop(self) -> None:
        stop_pids([p.pid for p in self.processes.values()])
        self.processes.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
