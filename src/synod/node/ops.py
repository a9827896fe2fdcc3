"""Offline operations on a stopped node's data directory: backup, restore and
force-new-cluster (``synod backup``, ``synod restore``, ``synod member
force-new-cluster``).

Theory of operation
-------------------
Each operation takes the data directory's lock (``node.lock``: the node must be
stopped; a running node holds it) and reads the write-ahead log the way the node
itself does at start: it builds the node's cores (``NodeCoreFactory``, in-memory
shard databases) and replays the log into them with ``start``, discarding the
effects. The cores are sans-IO, so this is the node's own recovery, run on the
side.

*Backup.* For every Paxos group the node hosts: its replicated state as of its
chosen index (the state machine and the client table, ``ReplicatedState``), that
index, and the group's member set. Only chosen slots are in it, so it is a
consistent state of each group: the state after applying exactly slots 1..index.
(Groups are consistent one by one; a cross-shard transaction in doubt at that
instant is in doubt in the backup too, and is resolved after a restore like
after a crash.) The file's format is in ``synod.node.backup``. A running node
gives the same from its memory (``BackupQuery``, ``synod.node.messages``).

*Restore* writes, into an EMPTY data directory, one snapshot record per group
the node hosts (the format ``synod.core.mux`` documents: ``\\x00<group>\\x00``
then the framed snapshot chunks), with the member set given (default: this node
alone), no promise and no accepted entry. Several nodes restored from the same
backup with the same member set start as one new cluster at the backed-up index.
The old cluster must be gone: its nodes know promises the restored ones do not.

*Force-new-cluster* rewrites a surviving node's log so that each group it hosts
has this node as its only member: a snapshot at the chosen index with member set
``{node}``, its promise, and the entries it accepted above the chosen index (a
membership change among them becomes a no-op). On start the node elects itself
and, by ordinary Phase 1 against its own acceptor, re-proposes what it accepted:
a write the old cluster acknowledged but this node had not yet learned chosen is
kept if this node accepted it. The old log is kept beside the new one
(``wal.before-force-new-cluster-<time>``). The other old members must never
rejoin with their old data: wipe them and add them back as learners
(``join = true``), then ``synod member add``.

Both restore and force-new-cluster verify their result by replaying it and
comparing each group's state digest with the one written.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import replace
from typing import Any

from synod.codec.registry import Message, encode
from synod.core.effects import frame_chunks
from synod.core.errors import ConfigError
from synod.core.ids import NodeId
from synod.lock.config import LockConfig
from synod.node.backup import Backup, group_backup
from synod.node.config import NodeConfig
from synod.node.groups import NodeCoreFactory, NodeMux, node_paxos_config, place_shards
from synod.paxos.messages import (
    NOOP,
    AcceptRecord,
    Ballot,
    Entry,
    LearnedRecord,
    PromiseRecord,
    SnapshotRecord,
    ValueKind,
)
from synod.paxos.replica import PaxosReplica
from synod.runtime.host import open_durable_log
from synod.txn.config import TxnConfig

WAL_DIRECTORY = "wal"
SNAPSHOT_DIRECTORY = "snap"


# ---------------------------------------------------------------- replay


def _factory(config: NodeConfig) -> NodeCoreFactory:
    members = tuple(NodeId(n) for n in config.voters())
    local = config.preset == "local"
    return NodeCoreFactory(
        members=members,
        shard_map=place_shards(members, config.shards, config.replicas) if config.shards else None,
        paxos=node_paxos_config(config.preset),
        lock=LockConfig.local() if local else LockConfig.lan(),
        txn=TxnConfig.local() if local else TxnConfig.lan(),
        shard_dir=None,
    )


def _replicas(mux: NodeMux) -> dict[str, PaxosReplica]:
    found: dict[str, PaxosReplica] = {}
    for name, child in mux.children.items():
        replica = getattr(child, "replica", None)
        if isinstance(replica, PaxosReplica):
            found[name] = replica
    return found


def replay(config: NodeConfig) -> NodeMux:
    """The node's cores as its log leaves them (the data directory must be locked
    by the caller, and must hold a log)."""
    wal_dir = config.data_dir / WAL_DIRECTORY
    if not wal_dir.is_dir():
        raise ConfigError(f"NodeConfig.data_dir: {config.data_dir} holds no log ({wal_dir} is missing)")
    wal, recovered = open_durable_log(config.data_dir)
    try:
        mux = _factory(config)(NodeId(config.node_id), random.Random(0))
        mux.start(0.0, recovered)
    finally:
        wal.close()
    return mux


@contextlib.contextmanager
def _locked(config: NodeConfig) -> Any:
    from synod.node.process import lock_data_dir

    config.data_dir.mkdir(parents=True, exist_ok=True)
    handle = lock_data_dir(config.data_dir)
    try:
        yield
    finally:
        handle.close()


# ---------------------------------------------------------------- backup


def take_backup(config: NodeConfig) -> Backup:
    """Each hosted group's state at its chosen index (the node must be stopped)."""
    with _locked(config):
        mux = replay(config)
    groups = tuple(group_backup(name, replica) for name, replica in sorted(_replicas(mux).items()))
    return Backup(node=config.node_id, created_s=time.time(), groups=groups)


# ---------------------------------------------------------------- restore


def _snapshot_log_record(group: str, records: list[Message]) -> bytes:
    """One group's snapshot as ``Mux`` stores it in the node's log (see
    ``synod.core.mux``): ``\\x00<group>\\x00`` and the framed chunks, each chunk
    one replica record (as ``PaxosReplica`` writes its ``SaveSnapshot``)."""
    return b"\x00" + group.encode() + b"\x00" + b"".join(frame_chunks(encode(r) for r in records))


def _write_fresh_log(config: NodeConfig, records: list[bytes]) -> None:
    wal, recovered = open_durable_log(config.data_dir)
    try:
        if recovered.records or recovered.snapshot is not None:
            raise ConfigError(f"NodeConfig.data_dir: {config.data_dir} already holds a log")
        for record in records:
            wal.append(record)
        wal.sync()
    finally:
        wal.close()


def _verify(config: NodeConfig, digests: dict[str, str]) -> None:
    replicas = _replicas(replay(config))
    for name, digest in digests.items():
        if replicas[name].digest() != digest:
            raise ConfigError(f"group {name}: state after writing differs from the state written (a bug)")


def restore(backup: Backup, config: NodeConfig, members: tuple[str, ...] | None = None) -> list[str]:
    """Write ``backup``'s groups that this node hosts into its EMPTY data
    directory, with member set ``members`` (default: this node alone). Returns
    the groups restored; ``ConfigError`` if the directory holds a log, or if the
    node hosts a group the backup lacks."""
    chosen = tuple(sorted(members or (config.node_id,)))
    if config.node_id not in chosen:
        raise ConfigError(f"restore: the member set {','.join(chosen)} must include this node {config.node_id}")
    with _locked(config):
        for directory in (WAL_DIRECTORY, SNAPSHOT_DIRECTORY):
            path = config.data_dir / directory
            if path.exists() and any(path.iterdir()):
                raise ConfigError(f"NodeConfig.data_dir: {path} is not empty; restore only into a new data dir")
        hosted = _replicas(_factory(config)(NodeId(config.node_id), random.Random(0)))
        missing = [name for name in hosted if backup.group(name) is None]
        if missing:
            raise ConfigError(f"restore: the backup has no group {', '.join(missing)} that this node hosts")
        ids = tuple(NodeId(m) for m in chosen)
        records, digests = [], {}
        for name in sorted(hosted):
            group = backup.group(name)
            assert group is not None
            snapshot = SnapshotRecord(index=group.index, chunks=group.chunks, previous_members=ids,
                                      members=ids, members_from_slot=1)
            # No promise was made in the new cluster; this one only lifts its
            # ballots above the old cluster's (see GroupBackup.round).
            floor = PromiseRecord(ballot=Ballot(round=group.round, node=NodeId(config.node_id)))
            records.append(_snapshot_log_record(name, [snapshot, floor, LearnedRecord(chosen_index=group.index)]))
            digests[name] = group.digest
        _write_fresh_log(config, records)
        _verify(config, digests)
    return sorted(hosted)


# ---------------------------------------------------------------- force-new-cluster


def force_new_cluster(config: NodeConfig) -> dict[str, int]:
    """Rewrite this node's log so that every group it hosts has it as the only
    member (see the module comment). Returns each group's chosen index."""
    node = NodeId(config.node_id)
    with _locked(config):
        replicas = _replicas(replay(config))
        records, digests, indexes = [], {}, {}
        for name, replica in sorted(replicas.items()):
            index = replica.chosen_index
            snapshot = SnapshotRecord(index=index, chunks=replica.state.snapshot_chunks(),
                                      previous_members=(node,), members=(node,), members_from_slot=1)
            group_records: list[Message] = [snapshot, PromiseRecord(ballot=replica.promised)]
            above = tuple(
                entry if entry.value.kind is not ValueKind.MEMBERS else replace(entry, value=NOOP)
                for slot, entry in sorted(replica.log.items()) if slot > index
            )
            if above:
                group_records.append(AcceptRecord(entries=tuple(Entry(slot=e.slot, ballot=e.ballot, value=e.value)
                                                                for e in above)))
            group_records.append(LearnedRecord(chosen_index=index))
            records.append(_snapshot_log_record(name, group_records))
            digests[name] = replica.digest()
            indexes[name] = index
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for directory in (WAL_DIRECTORY, SNAPSHOT_DIRECTORY):
            path = config.data_dir / directory
            if path.exists():
                path.rename(config.data_dir / f"{directory}.before-force-new-cluster-{stamp}")
        _write_fresh_log(config, records)
        _verify(config, digests)
    return indexes
