"""``synod gossip`` and ``synod members``.

    synod gossip agent --node a1 --bind 127.0.0.1:7946 --secret-file s --join a0@127.0.0.1:7945
    synod members --agent 127.0.0.1:7946 --secret-file s
    synod gossip measure --nodes 10,100,1000     # spread, detection, cost vs n (virtual time)
    synod gossip false-failures --nodes 50       # loss / slow / stalls, Lifeguard on vs off

The simulation scenario with its checks is ``synod sim gossip``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import click

from synod.gossip.measure import measure_false_failures, measure_scale
from synod.runtime.auth import Keyring


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 3:
        raise click.BadParameter("every size must be >= 3")
    return sizes


@click.group("gossip")
def gossip_command() -> None:
    """SWIM + Lifeguard gossip membership."""


@gossip_command.command("measure")
@click.option("--nodes", default="10,30,100,300", show_default=True,
              help="cluster sizes, comma-separated")
@click.option("--seed", default=1, show_default=True)
def measure_command(nodes: str, seed: int) -> None:
    """Rounds to spread an update, crash detection times, cost per member per period."""
    click.echo("virtual time, LAN preset (probe 1 s, gossip 200 ms, 3 fanout); bytes are codec "
               "payloads (add ~60 B/datagram for UDP/IP + HMAC)")
    click.echo(f"{'n':>6} {'spread ms':>10} {'rounds':>7} {'suspect s':>10} {'1st failed s':>13} "
               f"{'all failed s':>13} {'dgrams/per':>11} {'B/per':>7} {'push-pull B/per':>16} "
               f"{'wall s':>7}")
    for size in _sizes(nodes):
        started = time.perf_counter()
        f = measure_scale(size, seed=seed)
        wall = time.perf_counter() - started
        click.echo(f"{f.members:>6} {f.spread_ms:>10.0f} {f.spread_rounds:>7.2f} "
                   f"{f.first_suspect_ms / 1000:>10.2f} {f.first_failed_ms / 1000:>13.2f} "
                   f"{f.all_failed_ms / 1000:>13.2f} {f.datagrams_per_member_period:>11.2f} "
                   f"{f.bytes_per_member_period:>7.1f} "
                   f"{f.push_pull_bytes_per_member_period:>16.1f} {wall:>7.1f}")


@gossip_command.command("false-failures")
@click.option("--nodes", default=50, show_default=True)
@click.option("--seeds", default=3, show_default=True, help="runs per cell (seeds 1..N)")
@click.option("--duration-s", default=120.0, show_default=True, help="virtual seconds per run")
def false_failures_command(nodes: int, seeds: int, duration_s: float) -> None:
    """False "failed" verdicts: 10% loss, 5 slowed members (+800 ms), 5 members
    stalled 2 s or 5 s every 20 s; Lifeguard on vs off."""
    click.echo(f"n={nodes}, {seeds} runs x {duration_s:.0f} virtual s per cell; nobody crashes, "
               "so every failure verdict is false")
    click.echo(f"{'condition':>10} {'lifeguard':>10} {'false verdicts':>15} "
               f"{'members hit':>12} {'suspect events':>15}")
    for condition in ("loss10", "slow", "stall2", "stall5"):
        for lifeguard in (True, False):
            figures = [measure_false_failures(nodes, condition, lifeguard=lifeguard, seed=seed,
                                              duration_ms=duration_s * 1000)
                       for seed in range(1, seeds + 1)]
            click.echo(f"{condition:>10} {'on' if lifeguard else 'off':>10} "
                       f"{sum(f.false_failures for f in figures):>15} "
                       f"{sum(f.members_wrongly_failed for f in figures):>12} "
                       f"{sum(f.suspicions for f in figures):>15}")


def _keyring(secret_file: Path) -> Keyring:
    from synod.runtime.serve import read_secret

    return Keyring.from_secret(read_secret(secret_file))


@gossip_command.command("agent")
@click.option("--node", required=True, help="this member's node id")
@click.option("--bind", default="127.0.0.1:7946", show_default=True, help="UDP HOST:PORT to listen on")
@click.option("--advertise", default="", help="HOST:PORT others should use (default: the bound one)")
@click.option("--join", "joins", multiple=True, metavar="ID@HOST:PORT", help="a seed (repeatable)")
@click.option("--secret-file", type=click.Path(path_type=Path), required=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="keeps the incarnation across restarts")
@click.option("--profile", type=click.Choice(["lan", "local"]), default="lan", show_default=True)
@click.option("--meta", default="", help="node metadata (tags), at most meta_bytes_max bytes")
def agent_command(node: str, bind: str, advertise: str, joins: tuple[str, ...], secret_file: Path,
                  data_dir: Path | None, profile: str, meta: str) -> None:
    """Run one gossip member on UDP (HMAC-authenticated datagrams) until SIGINT/SIGTERM,
    which leave gracefully; prints READY <node> <host> <port> <pid> once listening."""
    from synod.core.errors import ConfigError
    from synod.core.ids import node_id
    from synod.gossip.agent import GossipAgent, parse_address, parse_seed
    from synod.gossip.config import GossipConfig
    from synod.runtime.host import run

    try:
        config = GossipConfig.local() if profile == "local" else GossipConfig.lan()
        agent = GossipAgent(node_id(node), keyring=_keyring(secret_file),
                            bind=parse_address(bind), advertise=advertise,
                            seeds=[parse_seed(j) for j in joins], config=config,
                            meta=meta.encode(), data_dir=data_dir)
    except (ConfigError, ValueError) as error:
        raise click.ClickException(str(error)) from None

    async def main() -> None:
        await agent.start()
        address = agent.address
        assert address is not None
        click.echo(f"READY {node} {address[0]} {address[1]} {os.getpid()}")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        leaving = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, leaving.set)
        await leaving.wait()
        with contextlib.suppress(Exception):
            await agent.leave()
        agent.stop()

    run(main())


@click.command("members")
@click.option("--agent", "agent_address", default="127.0.0.1:7946", show_default=True,
              help="HOST:PORT of a running agent")
@click.option("--secret-file", type=click.Path(path_type=Path), required=True)
@click.option("--status", default="", help="only members with this status (alive, failed, ...)")
def members_command(agent_address: str, secret_file: Path, status: str) -> None:
    """Print an agent's view of the cluster, like ``serf members``."""
    from synod.gossip.agent import parse_address, query_members
    from synod.gossip.messages import MemberStatus
    from synod.runtime.host import run

    names = {MemberStatus.ALIVE: "alive", MemberStatus.SUSPECT: "suspect",
             MemberStatus.DEAD: "failed", MemberStatus.LEFT: "left"}
    try:
        reply = run(query_members(parse_address(agent_address), _keyring(secret_file)))
    except TimeoutError:
        raise click.ClickException(f"no answer from {agent_address}") from None
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    for row in sorted(reply.members, key=lambda r: r.node):
        name = names[row.status]
        if status and name != status:
            continue
        tags = row.meta.decode(errors="replace")
        click.echo(f"{row.node:<24} {row.address:<22} {name:<8} {row.incarnation:>6}  {tags}")


def register(group: click.Group) -> None:
    group.add_command(gossip_command)
    group.add_command(members_command)


__all__ = ["register"]
