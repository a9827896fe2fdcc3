"""``synod paxos get|put|del|cas``: the key-value store of a running cluster.

Reads the connection file that ``synod cluster up --data DIR`` writes
(``DIR/cluster.json``) and talks to the cluster through ``SyncPaxosClient``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from synod.core.errors import ConfigError, SynodError


def _run(ctx: click.Context, action: Callable[[Any], Any]) -> Any:
    from synod.cli.cluster import read_connection
    from synod.paxos.client import ClientConfig, PaxosTimeout, SyncPaxosClient

    data_dir: Path = ctx.obj["data_dir"]
    timeout_s: float = ctx.obj["timeout_s"]
    try:
        info = read_connection(data_dir)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    config = ClientConfig(timeout_s=timeout_s, attempt_timeout_s=min(1.0, timeout_s))
    try:
        with SyncPaxosClient(info.nodes, config=config, **info.client_options()) as client:
            return action(client)
    except PaxosTimeout:
        nodes = ", ".join(f"{n}={h}:{p}" for n, (h, p) in info.nodes.items())
        raise click.ClickException(
            f"the cluster did not answer within {timeout_s} s (nodes {nodes}); "
            f"is it running? try `synod cluster status --data {data_dir}`") from None
    except SynodError as error:
        raise click.ClickException(str(error)) from None


def register(group: click.Group) -> None:
    from synod.paxos.messages import ReadMode

    @group.group("paxos")
    @click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
                  required=True, envvar="SYNOD_DATA", help="the directory `synod cluster up` used")
    @click.option("--timeout", "timeout_s", type=float, default=5.0, show_default=True,
                  help="seconds before giving up")
    @click.pass_context
    def paxos(ctx: click.Context, data_dir: Path, timeout_s: float) -> None:
        """Use the replicated key-value store of a running cluster."""
        if timeout_s <= 0:
            raise click.BadParameter("must be positive", param_hint="--timeout")
        ctx.obj = {"data_dir": data_dir, "timeout_s": timeout_s}

    @paxos.command("get")
    @click.argument("key")
    @click.option("--mode", type=click.Choice(["lease", "quorum", "stale"]), default="lease",
                  show_default=True, help="lease/quorum are linearizable; stale may be old")
    @click.pass_context
    def get(ctx: click.Context, key: str, mode: str) -> None:
        """Print the value of KEY (exit 1 if absent)."""
        read_mode = ReadMode[mode.upper()]
        value = _run(ctx, lambda client: client.get(key, mode=read_mode))
        if value is None:
            click.echo(f"{key}: absent", err=True)
            ctx.exit(1)
        click.echo(value)

    @paxos.command("put")
    @click.argument("key")
    @click.argument("value")
    @click.pass_context
    def put(ctx: click.Context, key: str, value: str) -> None:
        """Set KEY to VALUE."""
        _run(ctx, lambda client: client.put(key, value))
        click.echo("ok")

    @paxos.command("del")
    @click.argument("key")
    @click.pass_context
    def delete(ctx: click.Context, key: str) -> None:
        """Delete KEY."""
        existed = _run(ctx, lambda client: client.delete(key))
        click.echo("deleted" if existed else "absent")

    @paxos.command("cas")
    @click.argument("key")
    @click.argument("expected")
    @click.argument("new")
    @click.option("--absent", is_flag=True, help="expect KEY to be absent (EXPECTED is ignored)")
    @click.pass_context
    def cas(ctx: click.Context, key: str, expected: str, new: str, absent: bool) -> None:
        """Set KEY to NEW if it holds EXPECTED (exit 1 if it did not)."""
        swapped, current = _run(ctx, lambda client: client.cas(key, None if absent else expected, new))
        if swapped:
            click.echo("swapped")
        else:
            click.echo(f"not swapped: {key} holds {current!r}", err=True)
            ctx.exit(1)
