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
