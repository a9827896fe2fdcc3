"""The ``synod`` command.

Each block adds its commands in its own module here (``synod.cli.sim``,
``synod.cli.paxos``, ...), which defines ``register(group)``. Modules are imported
lazily: running ``synod mr run`` imports only ``synod.cli.mapreduce`` (a command's
home is looked up in ``_COMMAND_HOMES``), which keeps start-up short; ``--help`` and
a name not in the table import them all. A listed module that does not exist is
skipped, so blocks can land one at a time.
"""

from __future__ import annotations

import importlib

import click

from synod import __version__

_COMMAND_MODULES = (
    "synod.cli.demo",
    "synod.cli.sim",
    "synod.cli.cluster",
    "synod.cli.paxos",
    "synod.cli.gossip",
    "synod.cli.lock",
    "synod.cli.txn",
    "synod.cli.mapreduce",
    "synod.cli.node",
    "synod.cli.member",
)

#: Which module registers which top-level command (for lazy loading only; a name
#: missing here still works, it just imports every module).
_COMMAND_HOMES = {
    "demo": "synod.cli.demo",
    "sim": "synod.cli.sim",
    "cluster": "synod.cli.cluster",
    "paxos": "synod.cli.paxos",
    "gossip": "synod.cli.gossip",
    "members": "synod.cli.gossip",
    **{name: "synod.cli.lock" for name in ("ls", "cat", "put", "rm", "lock", "watch", "elect")},
    "kv": "synod.cli.txn",
    "mr": "synod.cli.mapreduce",
    "node": "synod.cli.node",
    **{name: "synod.cli.member" for name in ("member", "backup", "restore")},
}

_registered: set[str] = set()


class _LazyGroup(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _COMMAND_HOMES:
            _register(self, _COMMAND_HOMES[cmd_name])
            command = super().get_command(ctx, cmd_name)
        if command is None:
            _register_all(self)
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register_all(self)
        return super().list_commands(ctx)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synod")
def main() -> None:
    """synod: Paxos, locks, transactions, MapReduce and gossip, in Python."""


def _register(group: click.Group, name: str) -> None:
    if name in _registered:
        return
    _registered.add(name)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return
        raise
    module.register(group)


def _register_all(group: click.Group) -> None:
    for name in _COMMAND_MODULES:
        _register(group, name)
