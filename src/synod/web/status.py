"""The node's status as plain JSON-ready data, built from the blocks' snapshots.

``node_status(node)`` reads only ``statistics()`` snapshots and small read-only
queries of the cores (the lock namespace's sessions and holders, the gossip
view); it never changes them. ``cluster_view(statuses)`` joins the statuses of
several nodes into one view per Paxos group: its leader, ballot, highest chosen
index and each replica's lag behind it. Both are used by the dashboard, the
``/metrics`` exporter and ``synod cluster status``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from synod.gossip.messages import MemberStatus
from synod.lock.server import LockServer
from synod.paxos.replica import PaxosReplica
from synod.txn.server import ShardServer

if TYPE_CHECKING:
    from synod.node.process import Node

#: Lock paths and sessions listed at most (the page stays small on a big cell).
LIST_ITEMS_MAX = 200


def _member_meta(meta: bytes) -> dict[str, str]:
    try:
        decoded = json.loads(meta.decode())
    except (UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {key: str(value) for key, value in decoded.items() if key in ("tcp", "http", "role")}


def _members(node: Node) -> list[dict[str, Any]]:
    agent = node.gossip
    if agent is None or agent.member is None:
        return []
    view = agent.member.view(agent.now_ms())
    rows = []
    for info in view.members:
        meta = _member_meta(info.meta)
        rows.append({"node": str(info.node), "status": MemberStatus(info.status).name.lower(),
                     "incarnation": info.incarnation, "gossip": info.address,
                     "tcp": meta.get("tcp", ""), "http": meta.get("http", ""),
                     "role": meta.get("role", "node" if "http" in meta else "")})
    return rows


def _group(name: str, replica: PaxosReplica) -> dict[str, Any]:
    stats = replica.statistics()
    # A replica outside its group's member set receives the log but never votes.
    role = stats.role.value
    if stats.node not in stats.members and role != "leader":
        role = "learner"
    return {
        "group": name, "role": role, "leader": stats.leader or "",
        "ballot": str(stats.ballot if stats.role.value == "leader" else replica.leader_ballot),
        "chosen_index": stats.chosen_index, "snapshot_index": stats.snapshot_index,
        "log_entries": stats.log_entries, "proposals_in_flight": stats.proposals_in_flight,
        "members": [str(m) for m in stats.members], "commands_applied": stats.commands_applied,
        "elections_started": stats.elections_started, "leaderships": stats.leaderships,
    }


def _lock(server: LockServer) -> dict[str, Any]:
    stats = server.statistics()
    namespace = server.namespace
    sessions = [{"session": s, "principal": namespace.principal_of(s) or "",
                 "ephemerals": list(namespace.ephemerals_of(s))}
                for s in namespace.session_ids()[:LIST_ITEMS_MAX]]
    held = []
    for path in namespace.paths():
        holders = namespace.holders(path)
        if holders:
            held.append({"path": path, "holders": list(holders)})
            if len(held) >= LIST_ITEMS_MAX:
                break
    return {"role": stats.role, "epoch": stats.epoch, "sessions_live": stats.sessions,
            "sessions": sessions, "held_locks": held, "calls": stats.calls,
            "keepalives": stats.keepalives, "sessions_expired": stats.sessions_expired}


def _shard(server: ShardServer) -> dict[str, Any]:
    stats = server.statistics()
    return {"group": stats.group, "ready": stats.ready, "revision": stats.revision,
            "applied_ops": stats.applied_ops, "locked_txns": stats.locked_txns,
            "lock_waiters": stats.lock_waiters, "preparing": stats.preparing,
            "coordinating": stats.coordinating, "in_doubt": stats.in_doubt,
            "in_flight": stats.preparing + stats.coordinating + stats.in_doubt}


def node_status(node: Node) -> dict[str, Any]:
    """This node's status (see the module comment)."""
    host = node.host
    status: dict[str, Any] = {
        "node": str(node.node), "time_s": round(time.time(), 3),
        "uptime_s": round(time.time() - node.started_s, 1),
        "tcp": node.advertised_tcp(),
        "http": f"{node.http_address[0]}:{node.http_address[1]}" if node.http_address else "",
        "failed": host is not None and host.failure is not None,
        "members": _members(node), "groups": [], "lock": None, "transactions": [],
        "mapreduce": [],
    }
    # MapReduce runs outside the node: ``synod mr worker`` processes and each
    # job's master (the submitting process) join gossip with a role in their
    # metadata. The node shows who they are and their gossip state; a job's
    # task progress lives in its master, which publishes none.
    status["mapreduce"] = [{"node": m["node"], "role": m["role"], "status": m["status"]}
                           for m in status["members"] if m["role"].startswith("mr-")]
    if host is None:
        return status
    for name, child in node.mux.children.items():
        replica = getattr(child, "replica", None)
        if isinstance(replica, PaxosReplica):
            status["groups"].append(_group(name, replica))
        if isinstance(child, LockServer):
            status["lock"] = _lock(child)
        if isinstance(child, ShardServer):
            status["transactions"].append(_shard(child))
    runtime = host.statistics()
    status["runtime"] = {key: value for key, value in _fields(runtime).items() if isinstance(value, int)}
    if node.gossip is not None and node.gossip.member is not None:
        gossip = node.gossip.member.statistics()
        status["gossip"] = {key: value for key, value in _fields(gossip).items() if isinstance(value, int)}
    return status


def _fields(snapshot: object) -> dict[str, object]:
    names = getattr(snapshot, "__dataclass_fields__", {})
    return {name: getattr(snapshot, name) for name in names}


def cluster_view(statuses: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per Paxos group from several nodes' statuses (None: unreachable):
    leader, ballot, highest chosen index, and per replica its chosen index and lag
    (a member that did not answer: role ``unreachable``, index and lag None)."""
    groups: dict[str, dict[str, Any]] = {}
    for node, status in sorted(statuses.items()):
        if status is None:
            continue
        for group in status.get("groups", []):
            row = groups.setdefault(group["group"], {"group": group["group"], "leader": "", "ballot": "",
                                                     "chosen_index": 0, "replicas": {}})
            row["replicas"][node] = {"role": group["role"], "chosen_index": group["chosen_index"]}
            if group["role"] == "leader":
                row["leader"], row["ballot"] = node, group["ballot"]
            elif not row["leader"] and group["leader"]:
                row["leader"], row["ballot"] = group["leader"], group["ballot"]
            row["chosen_index"] = max(row["chosen_index"], group["chosen_index"])
            row.setdefault("members", set()).update(group.get("members", ()))
    for row in groups.values():
        for replica in row["replicas"].values():
            replica["lag"] = row["chosen_index"] - replica["chosen_index"]
        # A member whose node did not answer is listed, so a dead replica shows.
        for member in sorted(row.pop("members", set())):
            if member not in row["replicas"] and statuses.get(member) is None:
                row["replicas"][member] = {"role": "unreachable", "chosen_index": None, "lag": None}
    return [groups[name] for name in sorted(groups)]
