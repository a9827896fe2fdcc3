"""Membership changes of a running cluster's Paxos groups (``synod member``).

Theory of operation
-------------------
The Paxos core changes a group's members through its log, one replica at a
time (``ChangeMembers``, see ``synod.paxos.replica``: a member set chosen in slot
``s`` governs slots from ``s + window_slots_max`` on). This module is the
operator's side of it:

* it reads the cluster from the nodes' dashboards (``/status?local=1``: each
  group's role, leader, chosen index and member set on each node), starting from
  the addresses it is given and following the gossip member list, so it also
  finds a node that is not in the ``nodes`` lists (a new one);
* ``add``: the new node must already run and host a replica of the group: it
  runs as a *learner* (not a member: it receives the log and never votes). Its
  replica must have caught up (lag at most ``lag_slots_max`` behind the leader)
  before it becomes a voter, so that adding it never leaves a quorum waiting on
  a replica that is still copying the log; then the group's leader is asked to
  choose the new member set;
* ``remove``: the leader is asked to choose the member set without the node;
  the removed replica goes on as a learner until its node is stopped.

A request goes to the group's leader as an authenticated client
(``ClientRequest(Routed(group, ChangeMembers(...)))``); ``not_leader`` and
``busy`` (a change already in flight) are retried within the deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synod.codec.kernel import ErrorReply, Routed
from synod.core.errors import ConfigError, SynodError
from synod.core.ids import NodeId
from synod.node.backup import Backup, decode_backup_body
from synod.node.messages import BackupPiece, BackupQuery
from synod.paxos.messages import ChangeMembers, Done
from synod.runtime.client import connect
from synod.runtime.config import RuntimeConfig

#: A learner is promoted only once its chosen index is this close to the leader's.
LAG_SLOTS_MAX = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterAccess:
    """How to reach a cluster: some dashboards, and a client principal's key."""

    http: tuple[str, ...]
    principal: str
    key: bytes | None
    runtime: RuntimeConfig


def access_from_data_dir(data_dir: Path) -> ClusterAccess:
    """A local cluster's ``cluster.json`` (``synod cluster up --nodes``)."""
    path = data_dir / "cluster.json"
    try:
        layout = json.loads(path.read_text())
        nodes = layout["node_layout"]
    except (OSError, ValueError, KeyError):
        raise ConfigError(f"no cluster of nodes in {data_dir} ({path} is missing or has no node_layout)") from None
    key = (data_dir / layout["key_file"]).read_bytes().rstrip(b"\r\n")
    return ClusterAccess(http=tuple(a["http"] for a in nodes.values()), principal=layout["principal"],
                         key=key, runtime=RuntimeConfig(insecure=False))


def access_from_node_config(path: Path, user: str | None = None) -> ClusterAccess:
    """A node's TOML file: its dashboard, one of its ``users`` (the first by
    default) and its TLS or insecure settings."""
    from synod.node.config import load_node_config
    from synod.runtime.serve import read_secret

    config = load_node_config(path)
    if not config.http_bind or config.http_bind.endswith(":0"):
        raise ConfigError(f"NodeConfig.http_bind: {path} has no fixed dashboard address to read the cluster from")
    users = [u.partition("=") for u in config.users]
    chosen = [(name, file) for name, _, file in users if user is None or name == user]
    if config.tls_enabled:
        principal, key = user or "", None
    elif config.insecure:
        principal, key = user or "admin", None
    elif not chosen:
        raise ConfigError(f"NodeConfig.users: no client principal {user or ''} in {path}")
    else:
        principal, key = chosen[0][0], read_secret(Path(chosen[0][1]))
    runtime = RuntimeConfig(insecure=config.insecure, tls_cert_file=config.tls_cert_file,
                            tls_key_file=config.tls_key_file, tls_ca_file=config.tls_ca_file)
    return ClusterAccess(http=(config.http_bind,), principal=principal, key=key, runtime=runtime)


async def gather_statuses(access: ClusterAccess, timeout_s: float = 1.0) -> dict[str, dict[str, Any]]:
    """Every reachable node's own status, by node id (the given dashboards and
    every gossip member they list)."""
    from synod.web.server import http_get

    statuses: dict[str, dict[str, Any]] = {}
    tried: set[str] = set()
    pending = list(access.http)
    while pending:
        batch = [a for a in dict.fromkeys(pending) if a not in tried]
        pending = []
        tried.update(batch)
        bodies = await asyncio.gather(*(http_get(a, "/status?local=1", timeout_s) for a in batch))
        for body in bodies:
            if body is None:
                continue
            status = json.loads(body)
            statuses[status["node"]] = status
            pending.extend(m["http"] for m in status["members"] if m["http"] and m["status"] == "alive")
    return statuses


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupView:
    """One group as the reachable nodes report it."""

    group: str
    leader: str
    members: tuple[str, ...]
    chosen: dict[str, int]
    """Chosen index of each reachable node hosting a replica (members and learners)."""
    tcp: dict[str, str]

    @property
    def learners(self) -> tuple[str, ...]:
        return tuple(sorted(n for n in self.chosen if n not in self.members))


def group_views(statuses: dict[str, dict[str, Any]]) -> dict[str, GroupView]:
    """Each group's leader, member set (as its leader, else the most advanced
    replica, reports it) and replicas."""
    rows: dict[str, dict[str, Any]] = {}
    for node, status in sorted(statuses.items()):
        for group in status["groups"]:
            row = rows.setdefault(group["group"], {"leader": "", "members": (), "best": -1, "chosen": {}})
            row["chosen"][node] = group["chosen_index"]
            if group["role"] == "leader":
                row["leader"], row["members"], row["best"] = node, tuple(group["members"]), 1 << 62
            elif group["chosen_index"] > row["best"]:
                row["members"], row["best"] = tuple(group["members"]), group["chosen_index"]
    tcp = {node: status["tcp"] for node, status in statuses.items()}
    return {name: GroupView(group=name, leader=row["leader"], members=tuple(sorted(row["members"])),
                            chosen=row["chosen"], tcp=tcp) for name, row in sorted(rows.items())}


def describe(views: dict[str, GroupView]) -> list[str]:
    """Lines for ``synod member list``."""
    lines = []
    for view in views.values():
        top = max(view.chosen.values(), default=0)
        replicas = "  ".join(f"{n}={'voter' if n in view.members else 'learner'}(lag {top - c})"
                             for n, c in sorted(view.chosen.items()))
        lines.append(f"{view.group:5} leader={view.leader or '-':4} members={','.join(view.members)}  {replicas}")
    return lines


async def _ask_leader(access: ClusterAccess, view: GroupView, members: tuple[str, ...],
                      timeout_s: float) -> Done | ErrorReply:
    host, _, port = view.tcp[view.leader].rpartition(":")
    connection = await connect((host, int(port)), access.principal, access.key, config=access.runtime)
    try:
        body = Routed(group=view.group, body=ChangeMembers(members=tuple(NodeId(m) for m in members)))
        reply = await connection.request(body, timeout_s)
    finally:
        await connection.close()
    if not isinstance(reply, Done | ErrorReply):
        raise ConfigError(f"unexpected answer {type(reply).__name__} to a membership change")
    return reply


async def change_member(access: ClusterAccess, node: str, group: str, *, add: bool, timeout_s: float = 60.0,
                        lag_slots_max: int = LAG_SLOTS_MAX, say: Callable[[str], None] = print) -> None:
    """Add ``node`` to (or remove it from) ``group``'s members, and wait until the
    group's leader reports the new member set. ``ConfigError`` with a sentence
    when that cannot be done before ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = ""
    announced = False
    while time.monotonic() < deadline:
        views = group_views(await gather_statuses(access))
        view = views.get(group)
        if view is None:
            raise ConfigError(f"no reachable node hosts group {group!r}")
        if (node in view.members) == add and view.leader:
            return
        if add and node not in view.chosen:
            raise ConfigError(f"{node} hosts no replica of {group} that answers (start it first: it joins as a "
                              f"learner; see docs/deploy.md)")
        if not add and node not in view.members:
            raise ConfigError(f"{node} is not a member of {group} (members: {','.join(view.members)})")
        if not view.leader:
            last = "no leader"
            await asyncio.sleep(0.3)
            continue
        if add:
            lag = view.chosen[view.leader] - view.chosen[node]
            if lag > lag_slots_max:
                if not announced:
                    say(f"{group}: learner {node} is {lag} slots behind the leader; waiting for it to catch up")
                    announced = True
                last = f"learner {node} still {lag} slots behind"
                await asyncio.sleep(0.3)
                continue
        members = tuple(sorted(set(view.members) | {node})) if add else tuple(m for m in view.members if m != node)
        try:
            reply = await _ask_leader(access, view, members, max(0.5, min(10.0, deadline - time.monotonic())))
        except (OSError, SynodError) as error:
            last = f"{view.leader}: {error}"
            await asyncio.sleep(0.3)
            continue
        if isinstance(reply, Done):
            say(f"{group}: members {','.join(members)} (chosen by {view.leader})")
            await _wait_members(access, group, node, add, deadline)
            return
        if reply.code not in ("not_leader", "busy"):
            raise ConfigError(f"{group}: {view.leader} refused the change: {reply.code}: {reply.detail}")
        last = f"{reply.code}: {reply.detail}"
        await asyncio.sleep(0.3)
    raise ConfigError(f"{group}: membership change of {node} not done within {timeout_s:g} s ({last})")


async def fetch_backup(access: ClusterAccess, node: str, timeout_s: float = 60.0) -> Backup:
    """A consistent snapshot of every group of the running ``node``, taken in
    its memory at one instant (``BackupQuery``, see ``synod.node.messages``)."""
    statuses = await gather_statuses(access)
    if node not in statuses:
        raise ConfigError(f"node {node} does not answer on its dashboard")
    host, _, port = statuses[node]["tcp"].rpartition(":")
    deadline = time.monotonic() + timeout_s
    connection = await connect((host, int(port)), access.principal, access.key, config=access.runtime)
    try:
        pieces: list[bytes] = []
        snapshot_id, count = 0, 1
        while len(pieces) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfigError(f"backup of {node}: not done within {timeout_s:g} s")
            reply = await connection.request(BackupQuery(snapshot_id=snapshot_id, piece=len(pieces)), remaining)
            if isinstance(reply, ErrorReply):
                raise ConfigError(f"backup of {node}: {reply.code}: {reply.detail}")
            if not isinstance(reply, BackupPiece) or reply.piece != len(pieces):
                raise ConfigError(f"backup of {node}: unexpected answer {type(reply).__name__}")
            snapshot_id, count = reply.snapshot_id, reply.piece_count
            pieces.append(reply.data)
    finally:
        await connection.close()
    taken = decode_backup_body(b"".join(pieces), f"from {node}")
    return Backup(node=node, created_s=time.time(), groups=taken.groups)


async def _wait_members(access: ClusterAccess, group: str, node: str, add: bool, deadline: float) -> None:
    """The change is chosen; wait until the leader reports it in effect."""
    while time.monotonic() < deadline:
        view = group_views(await gather_statuses(access)).get(group)
        if view is not None and view.leader and (node in view.members) == add:
            return
        await asyncio.sleep(0.2)
