"""The core of one node process: its Paxos groups under one ``Mux``.

Theory of operation
-------------------
A node hosts one replica of the lock cell (group ``lock``, replicated on every
node) and one replica of each KV shard placed on it (groups ``s1``, ``s2``, ...).
Placement is a pure function of the sorted node list: shard ``i`` lives on
``replicas`` consecutive nodes starting at node ``i``, so every node computes the
same shard map with no coordination, and shards spread evenly.

``NodeMux`` is ``synod.core.mux.Mux`` with two additions, both routing only:

* *Client requests without a group.* The blocks' client libraries address a node,
  not a group (one process per group was their first deployment). A
  ``ClientRequest`` whose body is not ``Routed`` is routed by its body: lock-cell
  calls and ``StatusQuery`` to ``lock``; a transaction's read, scan or watch to
  the shard owning its key; a commit to the shard of its first part (the client
  sends it to that shard's leader: the coordinator); a release to the shard whose
  lock table holds the transaction. A body with no home is answered with a typed
  ``ErrorReply`` (``bad_request``), never dropped silently.
* *Messages between groups.* A shard's two-phase-commit messages go to another
  shard (a participant to its coordinator and back). ``Mux`` names a message by
  the group that SENT it, which on the far node is the wrong child. A node shard
  server therefore addresses such a message to its target group explicitly,
  ``Routed(target, m)``, which the mux sends as ``Routed(source, Routed(target,
  m))``; ``NodeMux`` delivers the inner message to ``target``.

Like ``Mux``, it is sans-IO and keeps no state beyond its children.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from synod.codec.kernel import ClientRequest, ErrorReply, Routed
from synod.codec.registry import Message
from synod.core.effects import ClientResult, Core, Effects, Send
from synod.core.ids import NodeId
from synod.core.mux import Mux
from synod.lock.config import LockConfig
from synod.lock.server import LockServer
from synod.node.backup import Backup, encode_backup_body, group_backup
from synod.node.messages import BackupPiece, BackupQuery
from synod.paxos.config import PaxosConfig
from synod.paxos.replica import PaxosReplica
from synod.paxos.server import StatusQuery
from synod.txn.config import TxnConfig
from synod.txn.engine import Engine, SqliteEngine
from synod.txn.messages import TxnBatch, TxnCommit, TxnGet, TxnRelease, TxnScan, Watch, WatchWait
from synod.txn.server import ShardServer
from synod.txn.shardmap import Shard, ShardMap

LOCK_GROUP = "lock"

#: Bytes of one ``BackupPiece`` (well under the frame limit).
BACKUP_PIECE_BYTES = 1 << 20


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key putting ``n2`` before ``n10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def place_shards(nodes: tuple[str, ...], shards: int, replicas: int) -> ShardMap:
    """The static shard map: ``shards`` groups over the naturally sorted ``nodes``,
    shard ``i`` on ``replicas`` consecutive nodes from node ``i``, keys split
    evenly over lower-case first letters (as ``synod.txn.node.shard_map_for``)."""
    ordered = sorted(nodes, key=natural_key)
    count = max(1, shards)
    width = min(replicas, len(ordered))
    bounds = [""] + [chr(ord("a") + (26 * i) // count) for i in range(1, count)] + [""]
    placed = tuple(
        Shard(group=f"s{i + 1}", start=bounds[i], end=bounds[i + 1],
              replicas=tuple(NodeId(ordered[(i + j) % len(ordered)]) for j in range(width)))
        for i in range(count)
    )
    return ShardMap(version=1, shards=placed)


class NodeShardServer(ShardServer):
    """A ``ShardServer`` whose messages to OTHER shards name their target group
    (see the module comment); to its own group it behaves exactly as before."""

    def _send_group(self, group: str, message: Message, out: Effects, *, broadcast: bool = False) -> None:
        if group == self.group:
            super()._send_group(group, message, out, broadcast=broadcast)
            return
        # The base class picks the destinations (the group's leader, or every
        # replica); each message to another group is wrapped with its target.
        sends: Effects = []
        super()._send_group(group, message, sends, broadcast=broadcast)
        for effect in sends:
            if isinstance(effect, Send):
                out.append(Send(to=effect.to, message=Routed(group=group, body=effect.message)))
            else:
                out.append(effect)


class NodeMux(Mux):
    """``Mux`` plus routing of group-less client requests and of messages between
    groups (see the module comment)."""

    def __init__(self, children: Mapping[str, Core], shard_map: ShardMap | None,
                 backup_principals: tuple[str, ...] = ()) -> None:
        super().__init__(children)
        self.shard_map = shard_map
        self.backup_principals = backup_principals
        # The latest frozen backup: (snapshot id, pieces). One at a time.
        self._backup: tuple[int, tuple[bytes, ...]] | None = None
        self._backups_taken = 0

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        match message:
            case ClientRequest(request_id=request_id, body=BackupQuery() as query):
                return [ClientResult(client=source, request_id=request_id, result=self._backup_piece(source, query))]
            case Routed(body=Routed(group=target, body=body)):
                child = self.children.get(target)
                if child is None:
                    self.dropped["message for unknown group"] += 1
                    return []
                return self._wrap(target, child.on_message(now_ms, source, body))
            case ClientRequest(request_id=request_id, body=body) if not isinstance(body, Routed):
                group = self.group_of(body)
                if group is None or group not in self.children:
                    self.dropped["request with no group here"] += 1
                    return [ClientResult(client=source, request_id=request_id, result=ErrorReply(
                        code="bad_request", detail=f"this node serves no group for {type(body).__name__}"))]
                return super().on_message(now_ms, source, ClientRequest(
                    request_id=request_id, body=Routed(group=group, body=body)))
            case _:
                return super().on_message(now_ms, source, message)

    def _backup_piece(self, source: NodeId, query: BackupQuery) -> Message:
        """A piece of a consistent snapshot of every group here (see
        ``synod.node.messages``). Freezing is one synchronous step of this core,
        so every group's state is taken at one instant, at its chosen index."""
        if source.partition("#")[0] not in self.backup_principals:
            return ErrorReply(code="permission_denied", detail="not one of the node's backup_principals")
        if query.snapshot_id == 0:
            replicas = {name: getattr(child, "replica", None) for name, child in self.children.items()}
            groups = tuple(group_backup(name, replica) for name, replica in sorted(replicas.items())
                           if isinstance(replica, PaxosReplica))
            body = encode_backup_body(Backup(node="", created_s=0.0, groups=groups))
            pieces = tuple(body[i:i + BACKUP_PIECE_BYTES] for i in range(0, len(body), BACKUP_PIECE_BYTES)) or (b"",)
            self._backups_taken += 1
            self._backup = (self._backups_taken, pieces)
        frozen = self._backup
        if frozen is None or frozen[0] != (query.snapshot_id or self._backups_taken):
            return ErrorReply(code="snapshot_gone", detail="a newer backup replaced it; start over")
        snapshot_id, pieces = frozen
        if not 0 <= query.piece < len(pieces):
            return ErrorReply(code="bad_request", detail=f"piece {query.piece} of {len(pieces)}")
        return BackupPiece(snapshot_id=snapshot_id, piece=query.piece, piece_count=len(pieces),
                           data=pieces[query.piece])

    def group_of(self, body: Message) -> str | None:
        """The group a group-less client body is for, or None."""
        if isinstance(body, StatusQuery) or type(body).__module__.startswith("synod.lock."):
            return LOCK_GROUP
        shard_map = self.shard_map
        if shard_map is None:
            return None
        match body:
            case TxnGet(key=key):
                return shard_map.shard_for(key).group
            case TxnScan(start=start) | Watch(start=start) | WatchWait(start=start):
                return shard_map.shard_for(start).group
            case TxnCommit(parts=parts) if parts:
                return parts[0].group
            case TxnBatch(items=(TxnCommit(parts=parts), *_)) if parts:
                # The client batches commits for one shard leader only.
                return parts[0].group
            case TxnRelease(txn=txn):
                for name, child in self.children.items():
                    if isinstance(child, ShardServer) and child.locks.entry(txn) is not None:
                        return name
                return shard_map.shards[0].group
            case _:
                return None

    def lock_server(self) -> LockServer | None:
        child = self.children.get(LOCK_GROUP)
        return child if isinstance(child, LockServer) else None

    def shard_servers(self) -> list[ShardServer]:
        return [child for child in self.children.values() if isinstance(child, ShardServer)]


def node_paxos_config(preset: str) -> PaxosConfig:
    """The Paxos settings of a node's groups: ``PaxosConfig.lan()``, or for the
    ``local`` preset ``PaxosConfig.local()`` with a snapshot every 1,000 slots
    (its 40 exercises snapshots in the simulator; in a node every snapshot of a
    group also rewrites the node's compacted log, see ``synod.core.mux``)."""
    if preset == "local":
        return dataclasses.replace(PaxosConfig.local(), snapshot_interval_slots=1000)
    return PaxosConfig.lan()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCoreFactory:
    """The ``CoreFactory`` of a node: a ``NodeMux`` of the lock cell replica and
    the replicas of the shards placed on ``node``."""

    members: tuple[NodeId, ...]
    shard_map: ShardMap | None
    paxos: PaxosConfig
    lock: LockConfig
    txn: TxnConfig
    shard_dir: Path | None = None
    on_build: Callable[[NodeMux], None] | None = None
    backup_principals: tuple[str, ...] = ()
    """Client principals allowed to take an online backup (``BackupQuery``)."""
    learner: bool = False
    """Start every replica without this node in its member set: a learner that
    receives the log and never votes, until a membership change chosen in the
    log adds it (``NodeConfig.join``: a node whose data directory was lost)."""

    def __call__(self, node: NodeId, rng: random.Random) -> NodeMux:
        children: dict[str, Core] = {
            LOCK_GROUP: LockServer(node, random.Random(rng.getrandbits(64)), members=self.members,
                                   config=self.lock, paxos=self.paxos),
        }
        if self.shard_map is not None:
            for shard in self.shard_map.shards:
                if node in shard.replicas:
                    children[shard.group] = NodeShardServer(
                        node, random.Random(rng.getrandbits(64)), group=shard.group, shard_map=self.shard_map,
                        config=self.txn, paxos_config=self.paxos, engine=self._engine(shard.group))
        if self.learner:
            for child in children.values():
                replica = getattr(child, "replica", None)
                if replica is None or len(replica.members_history) != 1:
                    continue
                first, members = replica.members_history[0]
                others = tuple(m for m in members if m != node)
                if others and len(others) < len(members):
                    replica.members_history = [(first, others)]
        mux = NodeMux(children, self.shard_map, self.backup_principals)
        if self.on_build is not None:
            self.on_build(mux)
        return mux

    def _engine(self, group: str) -> Engine:
        """A fresh SQLite database per shard: the replica rebuilds its applied
        state from its snapshot and log at start (see docs/transactions.md)."""
        if self.shard_dir is None:
            return SqliteEngine(":memory:")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        path = self.shard_dir / f"{group}.db"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(path) + suffix).unlink()
        return SqliteEngine(str(path))
