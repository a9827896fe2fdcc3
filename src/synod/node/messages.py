"""Messages of the node itself (tags 1100-1199, ``synod.codec.registry``;
ONLY APPEND): the online backup.

A client asks a running node for a consistent snapshot of its groups in pieces
(a snapshot may exceed a frame): ``BackupQuery(snapshot_id=0)`` makes the node
freeze a new one (every group's state at its chosen index, at that instant)
and answers its first piece; the next queries name that ``snapshot_id`` and the
piece wanted. The node keeps only its latest frozen snapshot: a client whose
snapshot was replaced gets ``ErrorReply(code="snapshot_gone")`` and starts over.
Only the principals in ``NodeConfig.backup_principals`` may ask (a backup holds
every lock file and key, whatever the cell's ACLs): others get
``ErrorReply(code="permission_denied")``.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.codec.registry import Message, message


@message(1100)
@dataclass(frozen=True, slots=True, kw_only=True)
class BackupQuery(Message):
    """Piece ``piece`` of frozen snapshot ``snapshot_id`` (0: freeze a new one)."""

    snapshot_id: int = 0
    piece: int = 0


@message(1101)
@dataclass(frozen=True, slots=True, kw_only=True)
class BackupPiece(Message):
    """Bytes ``piece`` of ``piece_count`` of the snapshot's encoded body (see
    ``synod.node.ops.encode_backup_body``)."""

    snapshot_id: int
    piece: int
    piece_count: int
    data: bytes
