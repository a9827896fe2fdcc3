"""Running shards as real processes: the core builder for ``synod.runtime.serve``
and a launcher for a local cluster (one process per replica, on 127.0.0.1).

    python -m synod.runtime.serve --core synod.txn.node:shard_core --node n1 ...

``shard_core`` gets every node id of the cluster (the runtime's builder
interface); it sorts them naturally (n2 before n10) and deals them into shards
of ``SYNOD_TXN_REPLICAS`` (default 3) replicas each: the static shard map. Each
replica keeps its applied state in SQLite; with ``SYNOD_TXN_DATA`` set, in a file
``<dir>/<node>.db`` (recreated at start: the Paxos replica rebuilds its state
from its snapshot and log, see docs/transactions.md), else in memory.

``LocalTxnCluster`` starts such processes, writes ``cluster.json`` (addresses,
secret files, shard layout) for ``synod kv``, and can SIGKILL and restart a node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from synod.core.ids import NodeId
from synod.paxos.config import PaxosConfig
from synod.runtime.auth import new_secret
from synod.txn.config import TxnConfig
from synod.txn.engine import Engine, SqliteEngine
from synod.txn.server import ShardServer
from synod.txn.shardmap import Shard, ShardMap


def _natural(name: str) -> tuple[object, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def shard_map_for(nodes: tuple[NodeId, ...], replicas: int) -> ShardMap:
    """Deal ``nodes`` (naturally sorted) into shards of ``replicas``, splitting the
    key space evenly over lower-case first letters."""
    ordered = sorted(nodes, key=_natural)
    count = max(1, len(ordered) // replicas)
    bounds = [""] + [chr(ord("a") + (26 * i) // count) for i in range(1, count)] + [""]
    shards = tuple(
        Shard(group=f"s{i + 1}", start=bounds[i], end=bounds[i + 1],
              replicas=tuple(ordered[i * replicas:(i + 1) * replicas]))
        for i in range(count)
    )
    return ShardMap(version=1, shards=shards)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeShardFactory:
    """Builds the ``ShardServer`` of whichever shard ``node`` belongs to."""

    shard_map: ShardMap
    data_dir: str = ""

    def __call__(self, node: NodeId, rng: random.Random) -> ShardServer:
        group = next(s.group for s in self.shard_map.shards if node in s.replicas)
        engine: Engine
        if self.data_dir:
            path = Path(self.data_dir) / f"{node}.db"
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(path) + suffix).unlink()
            engine = SqliteEngine(str(path))
        else:
            engine = SqliteEngine(":memory:")
        return ShardServer(node, rng, group=group, shard_map=self.shard_map, config=TxnConfig.local(),
                           paxos_config=shard_paxos_config(), engine=engine)


def shard_paxos_config() -> PaxosConfig:
    """``PaxosConfig.local()`` with a Phase 2 window of 4 slots, as the Paxos KV
    processes use (``synod.paxos.server.local_paxos_config``): with 32 slots open
    every commit of a burst got a slot of its own (a WAL record, an Accept per
    peer, a vote each, and a sync of the log); with 4, the rest of a burst waits
    a moment and leaves in ONE slot of many commands."""
    return dataclasses.replace(PaxosConfig.local(), window_slots_max=4)


def shard_core(nodes: tuple[NodeId, ...]) -> NodeShardFactory:
    """The ``synod.runtime.serve`` core builder (``--core synod.txn.node:shard_core``)."""
    replicas = int(os.environ.get("SYNOD_TXN_REPLICAS", "3"))
    return NodeShardFactory(shard_map=shard_map_for(nodes, replicas), data_dir=os.environ.get("SYNOD_TXN_DATA", ""))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalTxnCluster:
    """``shards`` x ``replicas`` shard replicas as processes on 127.0.0.1."""

    def __init__(self, workdir: Path, *, shards: int = 2, replicas: int = 3, user: str = "kv") -> None:
        self.workdir = workdir
        self.replicas = replicas
        self.user = user
        self.nodes = [NodeId(f"n{i + 1}") for i in range(shards * replicas)]
        self.ports = {node: _free_port() for node in self.nodes}
        self.processes: dict[NodeId, subprocess.Popen[str]] = {}
        workdir.mkdir(parents=True, exist_ok=True)
        self.secret_file = workdir / "cluster.key"
        self.user_key_file = workdir / f"{user}.key"
        if not self.secret_file.exists():
            self.secret_file.write_text(new_secret().hex())
            self.user_key_file.write_text(new_secret().hex())
        self.shard_map = shard_map_for(tuple(self.nodes), replicas)

    @property
    def user_key(self) -> bytes:
        return self.user_key_file.read_text().strip().encode()

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        return {node: ("127.0.0.1", port) for node, port in self.ports.items()}

    def start(self) -> None:
        """Start every node at once (on a loaded machine an interpreter takes
        seconds to start: one after the other, six of them took minutes), and
        stop the ones started if any fails."""
        try:
            launched = [(node, self._launch(node)) for node in self.nodes]
            for node, process in launched:
                self.processes[node] = process
            for node, process in launched:
                self._wait_ready(node, process)
        except BaseException:
            self.stop()
            raise
        self.write_cluster_file()

    def start_node(self, node: NodeId) -> None:
        process = self._launch(node)
        self.processes[node] = process
        try:
            self._wait_ready(node, process)
        except BaseException:
            self.processes.pop(node, None)
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
            raise

    def _launch(self, node: NodeId) -> subprocess.Popen[str]:
        peers = [f"--peer={other}=127.0.0.1:{port}" for other, port in self.ports.items() if other != node]
        command = [sys.executable, "-m", "synod.runtime.serve", "--core", "synod.txn.node:shard_core",
                   "--node", node, "--port", str(self.ports[node]), "--data", str(self.workdir / node),
                   "--secret-file", str(self.secret_file), f"--user={self.user}={self.user_key_file}", *peers]
        environment = dict(os.environ, SYNOD_TXN_REPLICAS=str(self.replicas),
                           SYNOD_TXN_DATA=str(self.workdir))
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=environment)

    @staticmethod
    def _wait_ready(node: NodeId, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"node {node} did not start: {line!r}")

    def kill(self, node: NodeId) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        process = self.processes.pop(node)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    def write_cluster_file(self) -> Path:
        path = self.workdir / "cluster.json"
        path.write_text(json.dumps({
            "user": self.user, "user_key_file": str(self.user_key_file),
            "replicas": self.replicas,
            "nodes": {node: ["127.0.0.1", port] for node, port in self.ports.items()},
            "pids": {node: process.pid for node, process in self.processes.items()},
        }, indent=2))
        return path
