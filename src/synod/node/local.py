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

import json
import socket
import sys
from pathlib import Path

from synod.core.errors import ConfigError
from synod.core.ids import NodeId
from synod.node.groups import place_shards
from synod.runtime.local import LOOPBACK, LocalProcesses, free_ports, write_secret


class LocalNodeCluster(LocalProcesses):
    """``n`` node processes sharing ``data_dir`` (a context manager)."""

    #: A graceful stop hands over leadership and leaves gossip first.
    stop_timeout_s = 15.0

    def __init__(self, data_dir: Path, n: int = 3, *, shards: int = 2, ready_timeout_s: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
        if not 1 <= n <= 9:
            raise ConfigError("a local cluster has 1 to 9 nodes")
        super().__init__(data_dir, env=env, ready_timeout_s=ready_timeout_s)
        self.n = n
        self.shards = shards
        self.layout: dict[str, dict[str, str]] = {}
        #: The voting members the cluster was created with (NodeConfig.initial_members).
        self.initial_members: list[str] = []
        #: Nodes that start as learners on an empty data directory (NodeConfig.join).
        self.joining: set[str] = set()

    # ------------------------------------------------------------ layout

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_secret(self.data_dir / "cluster.key")
        write_secret(self.data_dir / "client.key")
        path = self.data_dir / "cluster.json"
        if path.exists():
            saved = json.loads(path.read_text())
            existing = saved.get("node_layout", {})
            initial = saved.get("initial_members", list(existing))
            if len(initial) == self.n:
                self.layout = existing
                self.initial_members = list(initial)
        if not self.layout:
            # One call, so no port is offered twice (UDP ports are free on TCP too).
            ports = free_ports(3 * self.n, socket.SOCK_DGRAM)
            tcp, http, udp = ports[:self.n], ports[self.n:2 * self.n], ports[2 * self.n:]
            self.layout = {f"n{i + 1}": {"tcp": f"{LOOPBACK}:{tcp[i]}", "gossip": f"{LOOPBACK}:{udp[i]}",
                                         "http": f"{LOOPBACK}:{http[i]}"} for i in range(self.n)}
            self.initial_members = list(self.layout)
        self.write_configs()

    def write_configs(self) -> None:
        for node in self.layout:
            self.config_path(node).write_text(self.config_text(node))
        self.save_layout()

    def add_node(self, node: str, *, join: bool = False, start: bool = True) -> None:
        """Add ``node`` to the layout (new ports) and start it. It is not one of
        the initial members, so it hosts the lock cell as a learner until
        ``synod member add``. ``join``: for a name that WAS an initial member
        whose data is gone; it restarts as a learner (``NodeConfig.join``).
        Every node's file is rewritten to list it (running nodes learn its
        address from gossip)."""
        if node not in self.layout:
            tcp, http, udp = free_ports(3, socket.SOCK_DGRAM)
            self.layout[node] = {"tcp": f"{LOOPBACK}:{tcp}", "gossip": f"{LOOPBACK}:{udp}",
                                 "http": f"{LOOPBACK}:{http}"}
        if join:
            self.joining.add(node)
        self.write_configs()
        if start:
            self.restart(node)

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
            'backup_principals = ["client"]',
            f"nodes = [{nodes}]",
            f"seeds = [{seeds}]",
            f"shards = {self.shards}",
            "initial_members = [{}]".format(", ".join(f'"{n}"' for n in self.initial_members)),
            f"join = {'true' if node in self.joining else 'false'}",
            'preset = "local"',
            "stop_wait_s = 2.0",
            "",
        ])

    def node_names(self) -> list[str]:
        return list(self.layout)

    def save_layout(self) -> None:
        connection = {
            "nodes": {n: [a["tcp"].rsplit(":", 1)[0], int(a["tcp"].rsplit(":", 1)[1])]
                      for n, a in self.layout.items()},
            "principal": "client", "key_file": "client.key", "insecure": False,
            "core": "synod.node", "node_layout": self.layout, "initial_members": self.initial_members,
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
        placed = place_shards(tuple(NodeId(n) for n in self.initial_members), self.shards, 3)
        return [{"group": s.group, "start": s.start, "end": s.end, "replicas": list(s.replicas)}
                for s in placed.shards]

    def http(self, node: str) -> str:
        return self.layout[node]["http"]

    # ------------------------------------------------------------ processes

    def command(self, node: str) -> list[str]:
        return [sys.executable, "-m", "synod.node", "--config", str(self.config_path(node))]

