"""The backup of a node's groups: what it holds, its encoding and its file.

A backup holds, for each Paxos group of one node, the replicated state after
applying exactly the chosen slots 1..index (``ReplicatedState``: the state
machine and the client table), that index, the member set, the state's digest
and the highest ballot round seen. The file: ``synod-backup`` magic, the msgpack
body (``encode_backup_body``), then the SHA-256 of everything before it;
written atomically. ``synod.node.ops`` takes one from a stopped node's log, a
running node's ``NodeMux`` answers ``BackupQuery`` with one (``synod backup
--data|--node``), and ``synod.node.ops.restore`` writes one into a new data dir.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import msgpack

from synod.core.errors import ConfigError
from synod.paxos.replica import PaxosReplica

BACKUP_MAGIC = b"synod-backup\n"
BACKUP_VERSION = 1

#: A backup file is read whole into memory: refuse anything bigger.
BACKUP_BYTES_MAX = 1 << 31


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupBackup:
    """One group's consistent state: after applying slots 1..``index``."""

    group: str
    index: int
    members: tuple[str, ...]
    chunks: tuple[bytes, ...]
    digest: str
    round: int = 0
    """The highest ballot round the replica had seen: a restored group starts
    its ballots above it, because the state may record ballots (a shard's
    epoch, for example) that a new leader must exceed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backup:
    """The groups of one node, as ``synod backup`` writes them."""

    node: str
    created_s: float
    groups: tuple[GroupBackup, ...]

    def group(self, name: str) -> GroupBackup | None:
        return next((g for g in self.groups if g.group == name), None)


def group_backup(name: str, replica: PaxosReplica) -> GroupBackup:
    """``replica``'s state at its chosen index, now."""
    return GroupBackup(group=name, index=replica.chosen_index,
                       members=tuple(str(m) for m in replica.members_history[-1][1]),
                       chunks=replica.state.snapshot_chunks(), digest=replica.digest(),
                       round=max(replica.promised.round, replica.round_seen))


def encode_backup_body(backup: Backup) -> bytes:
    encoded: bytes = msgpack.packb({
        "version": BACKUP_VERSION, "node": backup.node, "created_s": backup.created_s,
        "groups": [{"group": g.group, "index": g.index, "members": list(g.members),
                    "chunks": list(g.chunks), "digest": g.digest, "round": g.round} for g in backup.groups],
    }, use_bin_type=True)
    return encoded


def decode_backup_body(body: bytes, where: str) -> Backup:
    """The inverse of ``encode_backup_body``; ``ConfigError`` naming ``where``."""
    try:
        fields = msgpack.unpackb(body, raw=False)
        if fields["version"] != BACKUP_VERSION:
            raise ConfigError(f"backup {where}: version {fields['version']}, this synod reads {BACKUP_VERSION}")
        groups = tuple(GroupBackup(group=str(g["group"]), index=int(g["index"]),
                                   members=tuple(str(m) for m in g["members"]),
                                   chunks=tuple(bytes(c) for c in g["chunks"]), digest=str(g["digest"]),
                                   round=int(g.get("round", 0)))
                       for g in fields["groups"])
        return Backup(node=str(fields["node"]), created_s=float(fields["created_s"]), groups=groups)
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as error:
        raise ConfigError(f"backup {where}: malformed ({error})") from None


def write_backup(backup: Backup, path: Path) -> None:
    """Write ``backup`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    data = BACKUP_MAGIC + encode_backup_body(backup)
    data += hashlib.sha256(data).digest()
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_backup(path: Path) -> Backup:
    """Read and verify a backup file; ``ConfigError`` naming what is wrong."""
    try:
        if path.stat().st_size > BACKUP_BYTES_MAX:
            raise ConfigError(f"backup {path}: larger than {BACKUP_BYTES_MAX} bytes")
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read backup {path}: {error}") from None
    if not data.startswith(BACKUP_MAGIC) or len(data) < len(BACKUP_MAGIC) + 32:
        raise ConfigError(f"backup {path}: not a synod backup")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ConfigError(f"backup {path}: checksum mismatch (the file is damaged)")
    return decode_backup_body(data[len(BACKUP_MAGIC):-32], str(path))
