"""``synod cluster up|status``, and ``LocalCluster``: node processes on 127.0.0.1.

``LocalCluster`` is the one place that spawns node processes; tests, the demo and
the benchmarks use it too. Each node is its own process,
``python -m synod.runtime.serve --core <builder> ...``, with its write-ahead log
under ``DIR/<node>/`` and its log output in ``DIR/<node>.log``. The cluster's
layout is kept in ``DIR/cluster.json`` (the *connection file*: node addresses, the
client principal and its key file, the PIDs of the running nodes), so a restarted
node gets its old port back and ``synod paxos`` knows where to connect.

Secrets: ``DIR/cluster.key`` (the nodes' shared secret) and ``DIR/client.key`` (the
key of the client principal ``client``), both written once with mode 0600. With
``--insecure`` nothing is authenticated (development only).

Every process is stopped by its PID, never by name.

Each node runs ``python -m synod.cli.cluster`` (``node_main`` below): the runtime's
own ``python -m synod.runtime.serve`` (``main``, the same arguments), but on
``RuntimeConfig.local()`` (peer reconnect back-off capped at 0.5 s instead of 5 s).
With the LAN default a node killed and restarted stays unreachable from its peers
for up to 5 s of back-off, and a second kill in that time leaves the survivors
unable to elect a leader until the back-off ends (seen in the real-process tests).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from synod.core.errors import ConfigError, SynodError
from synod.runtime.config import RuntimeConfig
from synod.runtime.local import LOOPBACK, LocalProcesses, free_ports, write_secret

CONNECTION_FILE = "cluster.json"
CLUSTER_KEY_FILE = "cluster.key"
CLIENT_KEY_FILE = "client.key"
CLIENT_PRINCIPAL = "client"
DEFAULT_CORE = "synod.paxos.server:kv_factory"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionInfo:
    """What a client needs to reach a local cluster (read from ``cluster.json``)."""

    data_dir: Path
    nodes: dict[str, tuple[str, int]]
    principal: str
    key: bytes | None
    insecure: bool

    @property
    def runtime(self) -> RuntimeConfig:
        return RuntimeConfig(insecure=self.insecure)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``PaxosClient`` / ``SyncPaxosClient`` (after nodes)."""
        return {"principal": self.principal, "key": self.key, "runtime": self.runtime}


def read_connection(data_dir: Path) -> ConnectionInfo:
    """Read ``DIR/cluster.json``; ``ConfigError`` with a sentence if it is missing."""
    path = data_dir / CONNECTION_FILE
    try:
        layout = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no cluster in {data_dir}: {path} does not exist "
                          f"(start one with `synod cluster up --data {data_dir}`)") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    nodes = {name: (str(address[0]), int(address[1])) for name, address in layout["nodes"].items()}
    key = None
    if not layout.get("insecure", False):
        key = (data_dir / layout["key_file"]).read_bytes().rstrip(b"\r\n")
    return ConnectionInfo(data_dir=data_dir, nodes=nodes, principal=layout["principal"], key=key,
                          insecure=bool(layout.get("insecure", False)))


class LocalCluster(LocalProcesses):
    """``n`` node processes on 127.0.0.1 sharing ``data_dir``.

    ``start()`` spawns every node and waits for its ``READY`` line; ``kill(node)``
    sends SIGKILL, ``stop_node`` SIGTERM, ``restart`` starts it again on the same
    port and data; ``stop()`` stops them all. A context manager."""

    def __init__(
        self,
        data_dir: Path,
        n: int = 3,
        *,
        insecure: bool = False,
        core: str = DEFAULT_CORE,
        base_port: int = 0,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        if not 1 <= n <= 9:
            raise ConfigError("a local cluster has 1 to 9 nodes")
        super().__init__(data_dir, env=env, ready_timeout_s=ready_timeout_s)
        self.n = n
        self.insecure = insecure
        self.core = core
        self.base_port = base_port
        self.nodes: dict[str, tuple[str, int]] = {}

    # ------------------------------------------------------------ layout

    def init(self) -> None:
        """Create the secrets and the connection file (reusing an existing layout)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.insecure:
            write_secret(self.data_dir / CLUSTER_KEY_FILE)
            write_secret(self.data_dir / CLIENT_KEY_FILE)
        path = self.data_dir / CONNECTION_FILE
        if path.exists():
            layout = json.loads(path.read_text())
            nodes = {k: (str(v[0]), int(v[1])) for k, v in layout["nodes"].items()}
            if len(nodes) == self.n:
                self.nodes = nodes
        if not self.nodes:
            ports = ([self.base_port + i for i in range(self.n)] if self.base_port
                     else free_ports(self.n))
            self.nodes = {f"n{i + 1}": (LOOPBACK, port) for i, port in enumerate(ports)}
        self.save_layout()

    def node_names(self) -> list[str]:
        return list(self.nodes)

    def save_layout(self) -> None:
        layout = {
            "nodes": {name: list(address) for name, address in self.nodes.items()},
            "principal": CLIENT_PRINCIPAL,
            "key_file": CLIENT_KEY_FILE,
            "insecure": self.insecure,
            "core": self.core,
            "pids": {name: p.pid for name, p in self.processes.items() if p.poll() is None},
        }
        path = self.data_dir / CONNECTION_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(layout, indent=2) + "\n")
        temporary.replace(path)

    def connection(self) -> ConnectionInfo:
        return read_connection(self.data_dir)

    # ------------------------------------------------------------ processes

    def command(self, node: str) -> list[str]:
        _, port = self.nodes[node]
        argv = [sys.executable, "-m", "synod.cli.cluster", "--core", self.core, "--node", node,
                "--host", LOOPBACK, "--port", str(port), "--data", str(self.data_dir / node)]
        if self.insecure:
            argv.append("--insecure")
        else:
            argv += ["--secret-file", str(self.data_dir / CLUSTER_KEY_FILE),
                     "--user", f"{CLIENT_PRINCIPAL}={self.data_dir / CLIENT_KEY_FILE}"]
        for peer, (host, peer_port) in self.nodes.items():
            if peer != node:
                argv += ["--peer", f"{peer}={host}:{peer_port}"]
        return argv

    # ------------------------------------------------------------ clients

    def sync_client(self, **options: Any) -> Any:
        """A ``SyncPaxosClient`` connected to this cluster."""
        from synod.paxos.client import SyncPaxosClient

        return SyncPaxosClient(self.nodes, **{**self.connection().client_options(), **options})

    def wait_leader(self, timeout_s: float = 15.0) -> str:
        """Block until some node reports itself leader; its id."""
        with self.sync_client() as client:
            leader: str = client.wait_leader(timeout_s=timeout_s)
            return leader


# ---------------------------------------------------------------- node process


def node_main(argv: list[str] | None = None) -> int:
    """One node process: ``synod.runtime.serve``'s ``main`` on ``RuntimeConfig.local()``."""
    from synod.runtime.serve import main

    return main(argv, runtime=RuntimeConfig.local())


# ---------------------------------------------------------------- commands


def _status_rows(info: ConnectionInfo, timeout_s: float) -> list[tuple[str, str, str]]:
    from synod.paxos.client import SyncPaxosClient

    rows = []
    with SyncPaxosClient(info.nodes, **info.client_options()) as client:
        for node, (host, port) in info.nodes.items():
            try:
                status = client.status(node, timeout_s=timeout_s)
                detail = (f"{status.role:9} leader={status.leader or '-'} ballot={status.ballot} "
                          f"chosen={status.chosen_index} leaderships={status.leaderships}")
            except (OSError, SynodError) as error:
                detail = f"unreachable ({type(error).__name__}: {error})"
            rows.append((node, f"{host}:{port}", detail))
    return rows


def register(group: click.Group) -> None:
    @group.group("cluster")
    def cluster() -> None:
        """Run a local cluster of node processes on 127.0.0.1."""

    @cluster.command("up")
    @click.option("-n", "count", type=click.IntRange(1, 9), default=3, show_default=True,
                  help="number of nodes")
    @click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
                  required=True, envvar="SYNOD_DATA", help="directory for logs, keys and the connection file")
    @click.option("--insecure", is_flag=True, help="no authentication (development only)")
    @click.option("--base-port", type=int, default=0, help="first port (default: free ports)")
    @click.option("--core", default=DEFAULT_CORE, show_default=True, help="core builder module:function")
    @click.option("--nodes", "whole_nodes", is_flag=True,
                  help="start whole `synod node` processes (lock cell, KV shards, gossip, dashboard)")
    @click.option("--shards", type=click.IntRange(0, 26), default=2, show_default=True,
                  help="KV shards (with --nodes)")
    def up(count: int, data_dir: Path, insecure: bool, base_port: int, core: str, whole_nodes: bool,
           shards: int) -> None:
        """Start COUNT nodes, wait for a leader, run until Ctrl-C or SIGTERM."""
        if whole_nodes:
            from synod.cli.node import run_local_nodes

            run_local_nodes(data_dir, count, shards)
            return
        local = LocalCluster(data_dir, count, insecure=insecure, core=core, base_port=base_port)
        stop_requested = False

        def request_stop(signum: int, frame: object) -> None:
            nonlocal stop_requested
            stop_requested = True

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                local.start()
                leader = local.wait_leader()
            except (SynodError, OSError) as error:
                raise click.ClickException(str(error)) from None
            click.echo(f"cluster of {count} up in {data_dir} (leader {leader})")
            for node, (host, port) in local.nodes.items():
                click.echo(f"  {node}  {host}:{port}  pid {local.pid(node)}  log {data_dir / (node + '.log')}")
            click.echo(f"connect with:  synod paxos --data {data_dir} put KEY VALUE")
            click.echo(f"   or in Python: LocalCluster / read_connection({str(data_dir)!r})")
            click.echo("Ctrl-C stops every node.")
            while not stop_requested:
                time.sleep(0.2)
                for node in list(local.processes):
                    if not local.is_running(node):
                        click.echo(f"node {node} exited; see {data_dir / (node + '.log')}", err=True)
                        local.processes.pop(node)
        finally:
            local.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        click.echo("stopped")

    @cluster.command("status")
    @click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
                  required=True, envvar="SYNOD_DATA")
    @click.option("--timeout", "timeout_s", type=float, default=2.0, show_default=True)
    def status(data_dir: Path, timeout_s: float) -> None:
        """Print each node's role, leader, ballot and chosen index."""
        if (data_dir / CONNECTION_FILE).exists() and "node_layout" in (data_dir / CONNECTION_FILE).read_text():
            from synod.cli.node import node_cluster_status

            try:
                click.echo("\n".join(node_cluster_status(data_dir, timeout_s)))
            except ConfigError as error:
                raise click.ClickException(str(error)) from None
            return
        try:
            info = read_connection(data_dir)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        for node, address, detail in _status_rows(info, timeout_s):
            click.echo(f"{node}  {address:21}  {detail}")


if __name__ == "__main__":
    sys.exit(node_main())
