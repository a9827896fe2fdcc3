"""``synod demo``: the guided tour (see ``synod.demo``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from synod.demo.tour import run_tour


@click.command("demo")
@click.option("--only", multiple=True, help="Run only these parts (foundation, gossip, paxos, ...).")
@click.option("--keep", type=click.Path(path_type=Path), default=None,
              help="Keep data in this directory instead of a temporary one.")
def demo(only: tuple[str, ...], keep: Path | None) -> None:
    """Tour every block on a local embedded cluster; exit non-zero if a check fails."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        ok = run_tour(keep, only=only)
    else:
        with tempfile.TemporaryDirectory(prefix="synod-demo-") as scratch:
            ok = run_tour(Path(scratch), only=only)
    raise SystemExit(0 if ok else 1)


def register(group: click.Group) -> None:
    group.add_command(demo)
