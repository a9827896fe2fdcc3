"""``synod node --config node.toml``: run one node process (see ``synod.node``).

A bad configuration prints one line, ``error: NodeConfig.<field>: ...``, and
exits with status 2.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from synod.core.config import parse_overrides
from synod.core.errors import ConfigError


def node_main(argv: Sequence[str]) -> int:
    """Entry point shared by ``synod node`` and ``python -m synod.node``."""
    import argparse

    parser = argparse.ArgumentParser(prog="synod node", description="Run one synod node process.")
    parser.add_argument("--config", type=Path, required=True, help="the node's TOML file")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the file")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(list(argv))
    return _run(args.config, tuple(args.set), args.log_level)


def _run(config_path: Path, overrides: tuple[str, ...], log_level: str) -> int:
    from synod.node.config import load_node_config
    from synod.node.process import build_keyring, runtime_config
    from synod.node.run import run_node
    from synod.runtime.host import run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_node_config(config_path, parse_overrides(overrides))
        build_keyring(config)      # reads the secret files: fail here, in one line
        runtime_config(config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run(run_node(config))
    except ConfigError as error:   # found at start: a data dir in use
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:       # a port in use, a data dir we cannot write
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def register(group: click.Group) -> None:
    @group.command("node")
    @click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
                  help="the node's TOML file (see docs/deploy.md)")
    @click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help="override a field of the file")
    @click.option("--log-level", default="WARNING", show_default=True)
    def node(config_path: Path, overrides: tuple[str, ...], log_level: str) -> None:
        """Run one node: lock cell and KV shard replicas, gossip member, dashboard."""
        sys.exit(_run(config_path, overrides, log_level))


def node_cluster_status(data_dir: Path, timeout_s: float = 2.0) -> list[str]:
    """Lines for ``synod cluster status`` of a cluster of whole nodes: members and
    their gossip state, each group's leader, ballot and log positions (chosen index
    and lag per replica), the cell's sessions and held locks, transactions in
    flight. Asks the first node whose dashboard answers (its ``/status`` gathers
    the others'); raises ``ConfigError`` when none answers."""
    import asyncio
    import json

    from synod.web.server import http_get

    layout = json.loads((data_dir / "cluster.json").read_text())["node_layout"]
    status = None
    for addresses in layout.values():
        body = asyncio.run(http_get(addresses["http"], "/status", timeout_s))
        if body is not None:
            status = json.loads(body)
            break
    if status is None:
        raise ConfigError(f"no node of {data_dir} answers on its dashboard (is the cluster up?)")
    lines = [f"members (as {status['node']} sees them):"]
    for member in status["members"]:
        lines.append(f"  {member['node']:6} {member['status']:8} tcp {member['tcp']:21} "
                     f"dashboard http://{member['http']}/")
    lines.append("groups:")
    for group in status["cluster"]["groups"]:
        replicas = "  ".join(f"{name}=unreachable" if r["lag"] is None else
                             f"{name}={r['chosen_index']}(lag {r['lag']}{', learner' if r['role'] == 'learner' else ''})"
                             for name, r in group["replicas"].items())
        lines.append(f"  {group['group']:5} leader={group['leader'] or '-':4} ballot={group['ballot']:8} "
                     f"chosen={group['chosen_index']:<6} {replicas}")
    nodes = status["cluster"]["nodes"]
    for name, node_status in sorted(nodes.items()):
        if node_status is None:
            lines.append(f"{name}: unreachable")
            continue
        lock = node_status.get("lock")
        if lock is not None and lock["role"] == "master":
            held = ", ".join(f"{h['path']} by {h['holders']}" for h in lock["held_locks"]) or "none"
            lines.append(f"lock cell master {name}: epoch {lock['epoch']}, {lock['sessions_live']} sessions, "
                         f"held locks: {held}")
        for shard in node_status["transactions"]:
            if shard["ready"]:
                lines.append(f"shard {shard['group']} leader {name}: revision {shard['revision']}, "
                             f"{shard['in_flight']} transactions in flight, {shard['locked_txns']} holding locks")
    return lines


def run_local_nodes(data_dir: Path, count: int, shards: int) -> None:
    """``synod cluster up --nodes``: start ``count`` node processes on 127.0.0.1,
    wait until the cell and every shard have a leader, print how to connect, and
    stop them all (by PID) on Ctrl-C or SIGTERM."""
    import signal
    import time

    from synod.core.errors import SynodError
    from synod.node.local import LocalNodeCluster

    local = LocalNodeCluster(data_dir, count, shards=shards)
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            local.start()
            _wait_leaders(data_dir, deadline_s=time.monotonic() + 30.0)
        except (SynodError, OSError, ConfigError) as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"cluster of {count} nodes up in {data_dir} ({shards} KV shards)")
        for node, addresses in local.layout.items():
            click.echo(f"  {node}  tcp {addresses['tcp']}  dashboard http://{addresses['http']}/  "
                       f"pid {local.pid(node)}  log {data_dir / (node + '.log')}")
        click.echo(f"status:  synod cluster status --data {data_dir}")
        click.echo(f"locks:   synod put --data {data_dir} /ls/local/NAME VALUE;  "
                   f"synod lock --data {data_dir} /ls/local/NAME COMMAND")
        if shards:
            click.echo(f"kv:      synod kv put --cluster {data_dir} KEY VALUE")
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


def _wait_leaders(data_dir: Path, deadline_s: float) -> None:
    import time

    last = ""
    while time.monotonic() < deadline_s:
        try:
            lines = node_cluster_status(data_dir, 1.0)
        except ConfigError as error:
            last = str(error)
        else:
            groups = [line for line in lines if line.startswith("  ") and "leader=" in line]
            if groups and not any("leader=- " in line for line in groups):
                return
            last = "; ".join(groups)
        time.sleep(0.3)
    raise ConfigError(f"not every group has a leader after 30 s: {last}")
