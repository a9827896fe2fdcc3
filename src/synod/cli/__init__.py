"""The ``synod`` command.

Each block adds its commands in its own module here (``synod.cli.sim``,
``synod.cli.paxos``, ...), which defines ``register(group)``. The modules are listed
in ``_COMMAND_MODULES``; a listed module that does not exist yet is skipped, so
blocks can land one at a time.
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
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synod")
def main() -> None:
    """synod: Paxos, locks, transactions, MapReduce and gossip, in Python."""


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        module.register(main)


_register_all()
