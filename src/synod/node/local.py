"""``LocalNodeCluster``: ``n`` ``synod node`` processes on 127.0.0.1.

Writes, under ``DIR``: the secrets ``cluster.key`` and ``client.key`` (mode
0600), one TOML file per node ``<node>.toml`` (its data in ``DIR/<node>/``, its
log output in ``DIR/<node>.log``), and ``cluster.json`` (the connection file of
``synod.cli.cluster``: node TCP addresses, the client principal and key file,
plus each node's dashboard address and the PIDs). Ports are chosen once and kept,
so a restarted node comes back on the same addresses. Every process is stopped
by its PID, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from synod.core.errors import ConfigError, SynodError
from synod.core.ids import NodeId
from synod.node.groups import place_shards
from synod.runtime.auth import new_secret

LOOPBACK = "127.0.0.1"


def _free_ports(count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, kind)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _write_secret(path: Path) -> None:
    if not path.exists():
        path.write_bytes(new_secret().hex().encode())
        path.chmod(0o600)


class LocalNodeCluster:
    """``n`` node processes sharing ``data_dir`` (a context manager)."""

    def __init__(self, data_dir: Path, n: int = 3, *, shards: int = 2, ready_timeout_s: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
        if not 1 <= n <= 9:
            raise ConfigError("a local cluster has 1 to 9 nodes")
        self.data_dir = Path(data_dir)
        self.n = n
        self.shards = shards
        self.ready_timeout_s = ready_timeout_s
        self.env = env or {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.layout: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------ layout

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _write_secret(self.data_dir / "cluster.key")
        _write_secret(self.data_dir / "client.key")
        path = self.data_dir / "cluster.json"
        if path.exists():
            existing = json.loads(path.read_text()).get("node_layout", {})
            if len(existing) == self.n:
                self.layout = existing
        if not self.layout:
            tcp, http = _free_ports(self.n), _free_ports(self.n)
            udp = _free_ports(self.n, socket.SOCK_DGRAM)
            self.layout = {f"n{i + 1}": {"tcp": f"{LOOPBACK}:{tcp[i]}", "gossip": f"{LOOPBACK}:{udp[i]}",
                                         "http": f"{LOOPBACK}:{http[i]}"} for i in range(self.n)}
        for node in self.layout:
            self.config_path(node).write_text(self.config_text(node))
        self._write_connection()

    def config_path(self, node: str) -> Path:
        return self.data_dir / f"{node}.toml"

    def config_text(self, node: str) -> str:
        addresses = self.layout[node]
        nodes = ", ".join(f'"{n}={a["tcp"]}"' for n, a in self.layout.items())
        seeds = ", ".join(f'"{n}@{a["gossip"]}"' for n, a in self.layout.items() if n != node)
        return "\n".join([
            f'node_id = "{node}"',
            f'data_dir = "{self.data_dir / node}"',
            f'bind = "{addresses["tcp"]}"',
            f'gossip_bind = "{addresses["gossip"]}"',
            f'http_bind = "{addresses["http"]}"',
            f'secret_file = "{self.data_dir / "cluster.key"}"',
            f'users = ["client={self.data_dir / "client.key"}"]',
            f"nodes = [{nodes}]",
            f"seeds = [{seeds}]",
            f"shards = {self.shards}",
            'preset = "local"',
            "stop_wait_s = 2.0",
            "",
        ])

    def _write_connection(self) -> None:
        connection = {
            "nodes": {n: [a["tcp"].rsplit(":", 1)[0], int(a["tcp"].rsplit(":", 1)[1])]
                      for n, a in self.layout.items()},
            "principal": "client", "key_file": "client.key", "insecure": False,
            "core": "synod.node", "node_layout": self.layout,
            # for `synod kv --cluster DIR` (synod.cli.txn): its user and key file,
            # and the placement every node computed (see synod.node.groups).
            "user": "client", "user_key_file": str((self.data_dir / "client.key").resolve()),
            "replicas": min(3, self.n), "shard_map": self.shard_map_layout(),
            "pids": {n: p.pid for n, p in self.processes.items() if p.poll() is None},
        }
        path = self.data_dir / "cluster.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(connection, indent=2) + "\n")
        temporary.replace(path)

    def shard_map_layout(self) -> list[dict[str, object]]:
        """The shard placement as JSON: group, key range, replicas."""
        if not self.shards:
            return []
        placed = place_shards(tuple(NodeId(n) for n in self.layout), self.shards, 3)
        return [{"group": s.group, "start": s.start, "end": s.end, "replicas": list(s.replicas)}
                for s in placed.shards]

    def http(self, node: str) -> str:
        return self.layout[node]["http"]

    # ------------------------------------------------------------ processes

    def command(self, node: str) -> list[str]:
        return [sys.executable, "-m", "synod.node", "--config", str(self.config_path(node))]

    def start(self) -> LocalNodeCluster:
        if not self.layout:
            self.init()
        started = [node for node in self.layout if not self.is_running(node)]
        for node in started:
            self._spawn(node)
        for node in started:
            self._wait_ready(node)
        self._write_connection()
        return self

    def _spawn(self, node: str) -> None:
        log_file = open(self.data_dir / f"{node}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.processes[node] = subprocess.Popen(
                self.command(node), stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True)
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

    def _signal(self, node: str, signum: int | None, timeout_s: float = 15.0) -> int | None:
        """Send ``signum`` (None: none, it was sent) and wait; SIGKILL after
        ``timeout_s``. The exit status."""
        process = self.processes.pop(node, None)
        if process is None:
            return None
        if signum is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def kill(self, node: str) -> None:
        """SIGKILL ``node`` by PID: a crash."""
        self._signal(node, signal.SIGKILL)
        self._write_connection()

    def stop_node(self, node: str) -> int | None:
        """SIGTERM ``node`` (graceful) and wait; its exit status."""
        code = self._signal(node, signal.SIGTERM)
        self._write_connection()
        return code

    def restart(self, node: str) -> None:
        if self.is_running(node):
            raise ConfigError(f"node {node} is running")
        self.processes.pop(node, None)
        self._spawn(node)
        self._wait_ready(node)
        self._write_connection()

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every node at once, wait for each; their exit statuses."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        # One SIGTERM each: a second one could land after the node's handler is
        # gone, at the very end of its graceful exit, and kill it.
        codes = {node: self._signal(node, None) for node in list(self.processes)}
        if self.data_dir.exists():
            self._write_connection()
        return codes

    def __enter__(self) -> LocalNodeCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
