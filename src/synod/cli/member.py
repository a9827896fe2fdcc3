"""``synod member list|add|remove|force-new-cluster``, ``synod backup`` and
``synod restore``: operating a cluster of ``synod node`` processes.

The online commands (``member list|add|remove``) reach the cluster through the
nodes' dashboards (to find each group's leader and replicas) and one client
principal's key (to ask the leader for the change): ``--data DIR`` for a local
cluster (``synod cluster up --nodes``), or ``--config node.toml`` of any node
(its dashboard and the first of its ``users``). The offline ones work on a
STOPPED node's data directory, named by its configuration file. See
``synod.node.membership`` and ``synod.node.ops``, and docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from synod.core.errors import ConfigError


def _access(data_dir: Path | None, config_path: Path | None, user: str | None) -> object:
    from synod.node.membership import access_from_data_dir, access_from_node_config

    if (data_dir is None) == (config_path is None):
        raise click.UsageError("give exactly one of --data DIR (a local cluster) or --config node.toml")
    try:
        if data_dir is not None:
            return access_from_data_dir(data_dir)
        assert config_path is not None
        return access_from_node_config(config_path, user)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _node_config(config_path: Path) -> object:
    from synod.node.config import load_node_config

    try:
        return load_node_config(config_path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


_data_option = click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
                            envvar="SYNOD_DATA", help="a local cluster's directory (synod cluster up --nodes)")
_config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                              help="any node's TOML file (its dashboard and client key)")
_user_option = click.option("--user", default=None, help="client principal from the node's users (default: first)")


def register(group: click.Group) -> None:
    @group.group("member")
    def member() -> None:
        """Change the members of the Paxos groups (one replica at a time)."""

    @member.command("list")
    @_data_option
    @_config_option
    @_user_option
    def list_(data_dir: Path | None, config_path: Path | None, user: str | None) -> None:
        """Each group's leader, voting members and learners, with their lag."""
        from synod.node.membership import ClusterAccess, describe, gather_statuses, group_views

        access = _access(data_dir, config_path, user)
        assert isinstance(access, ClusterAccess)
        statuses = asyncio.run(gather_statuses(access))
        if not statuses:
            raise click.ClickException("no node's dashboard answers (is the cluster up?)")
        for line in describe(group_views(statuses)):
            click.echo(line)

    def _change(node: str, groups: tuple[str, ...], data_dir: Path | None, config_path: Path | None,
                user: str | None, timeout_s: float, *, add: bool) -> None:
        from synod.node.membership import ClusterAccess, change_member, gather_statuses, group_views

        access = _access(data_dir, config_path, user)
        assert isinstance(access, ClusterAccess)

        async def run() -> None:
            names = groups
            if not names:
                views = group_views(await gather_statuses(access))
                names = tuple(v.group for v in views.values() if (node in v.chosen and node not in v.members)
                              or (not add and node in v.members))
                if not names:
                    what = "hosts no learner replica" if add else "is a member of no group"
                    raise ConfigError(f"{node} {what} that answers; name groups with --group")
            for name in names:
                await change_member(access, node, name, add=add, timeout_s=timeout_s, say=click.echo)

        try:
            asyncio.run(run())
        except ConfigError as error:
            raise click.ClickException(str(error)) from None

    @member.command("add")
    @click.argument("node")
    @click.option("--group", "groups", multiple=True,
                  help="group to add NODE to (repeatable; default: every group where NODE is a learner)")
    @_data_option
    @_config_option
    @_user_option
    @click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True,
                  help="seconds per group (catch-up included)")
    def add(node: str, groups: tuple[str, ...], data_dir: Path | None, config_path: Path | None,
            user: str | None, timeout_s: float) -> None:
        """Make learner NODE a voting member, once it has caught up."""
        _change(node, groups, data_dir, config_path, user, timeout_s, add=True)

    @member.command("remove")
    @click.argument("node")
    @click.option("--group", "groups", multiple=True,
                  help="group to remove NODE from (repeatable; default: every group it is a member of)")
    @_data_option
    @_config_option
    @_user_option
    @click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True)
    def remove(node: str, groups: tuple[str, ...], data_dir: Path | None, config_path: Path | None,
               user: str | None, timeout_s: float) -> None:
        """Remove NODE from the groups' members (it stays a learner until stopped)."""
        _change(node, groups, data_dir, config_path, user, timeout_s, add=False)

    @member.command("force-new-cluster")
    @click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
                  help="the STOPPED surviving node's TOML file")
    @click.option("--yes", is_flag=True, help="do not ask for confirmation")
    def force_new_cluster(config_path: Path, yes: bool) -> None:
        """Disaster recovery: make this stopped node the only member of every
        group it hosts, from its own data (like etcd --force-new-cluster)."""
        from synod.node.config import NodeConfig
        from synod.node.ops import force_new_cluster as force

        config = _node_config(config_path)
        assert isinstance(config, NodeConfig)
        if not yes:
            click.confirm(f"Make {config.node_id} the only member of every group it hosts? The other nodes must "
                          f"never come back with their old data", abort=True)
        try:
            indexes = force(config)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        for name, index in indexes.items():
            click.echo(f"{name}: members {config.node_id}, from chosen index {index}")
        click.echo(f"start the node ({'synod node --config ' + str(config_path)}), then add new nodes as learners "
                   f"and `synod member add` them")

    @group.command("backup")
    @click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
    @click.option("--node", default=None,
                  help="back up this RUNNING node (online; reach it with --data or --config)")
    @_data_option
    @click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                  help="without --node: the STOPPED node's TOML file; with --node: any node's file")
    @_user_option
    def backup(output: Path, node: str | None, data_dir: Path | None, config_path: Path | None,
               user: str | None) -> None:
        """Write a consistent snapshot of a node's groups to a file: of a running
        node (--node, needs backup_principals) or of a stopped one (--config)."""
        from synod.node.backup import Backup, write_backup
        from synod.node.config import NodeConfig
        from synod.node.membership import ClusterAccess, fetch_backup
        from synod.node.ops import take_backup

        try:
            if node is not None:
                access = _access(data_dir, config_path, user)
                assert isinstance(access, ClusterAccess)
                taken = asyncio.run(fetch_backup(access, node))
            else:
                if config_path is None or data_dir is not None:
                    raise click.UsageError("give --config of a stopped node, or --node with --data or --config")
                config = _node_config(config_path)
                assert isinstance(config, NodeConfig)
                taken = take_backup(config)
            assert isinstance(taken, Backup)
            write_backup(taken, output)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        for item in taken.groups:
            click.echo(f"{item.group}: chosen index {item.index}, members {','.join(item.members)}")
        click.echo(f"backup of {taken.node} written to {output} ({output.stat().st_size} bytes)")

    @group.command("restore")
    @click.argument("backup_path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
    @click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
                  help="the new node's TOML file; its data_dir must be new")
    @click.option("--members", default="", help="comma-separated member set (default: this node alone)")
    def restore(backup_path: Path, config_path: Path, members: str) -> None:
        """Restore a backup into a new node's empty data directory."""
        from synod.node.backup import read_backup
        from synod.node.config import NodeConfig
        from synod.node.ops import restore as restore_backup

        config = _node_config(config_path)
        assert isinstance(config, NodeConfig)
        chosen = tuple(m.strip() for m in members.split(",") if m.strip()) or None
        try:
            taken = read_backup(backup_path)
            groups = restore_backup(taken, config, chosen)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        age = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(taken.created_s))
        click.echo(f"restored {', '.join(groups)} of {taken.node}'s backup taken {age} into {config.data_dir}")
