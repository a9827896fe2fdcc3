"""Wire messages between the MapReduce master and its workers (tags 1000-1099).

Tags are append-only (see ``synod.codec.registry``). The master sends ``AssignMap``,
``AssignReduce``, ``CancelAttempt`` and ``Shutdown``; a worker sends ``WorkerReady``
once, then one ``TaskCompleted`` or ``TaskFailed`` per attempt it ran. Whoever
detects a worker's death (the local runner from the process exit, the cluster
runner from gossip) gives the master a ``WorkerLost``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from synod.codec.registry import Message, message
from synod.core.ids import NodeId


class TaskKind(enum.IntEnum):
    MAP = 1
    REDUCE = 2


@message(1000)
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReady(Message):
    """A worker joins the job and can run one task at a time."""


@message(1001)
@dataclass(frozen=True, slots=True, kw_only=True)
class InputSplit(Message):
    """Bytes ``[start, end)`` of ``path`` (line-aligned by the reader)."""

    path: str
    start: int
    end: int


@message(1002)
@dataclass(frozen=True, slots=True, kw_only=True)
class SkipRecord(Message):
    """An input record (file and byte offset) a map attempt must skip."""

    path: str
    offset: int


@message(1003)
@dataclass(frozen=True, slots=True, kw_only=True)
class AssignMap(Message):
    """Run map task ``task`` of step ``step`` as attempt ``attempt``."""

    attempt: int
    step: int
    task: int
    splits: tuple[InputSplit, ...]
    reducers: int
    skip: tuple[SkipRecord, ...] = ()
    #: The step's partition plan (msgpack; e.g. sampled range boundaries), or empty.
    plan: bytes = b""


@message(1004)
@dataclass(frozen=True, slots=True, kw_only=True)
class MapOutputRef(Message):
    """Where bucket ``partition`` of the committed attempt of map task ``map_task``
    lives: ``length`` bytes at ``offset`` of ``path`` on worker ``worker``."""

    map_task: int
    attempt: int
    worker: NodeId
    path: str
    offset: int
    length: int


@message(1005)
@dataclass(frozen=True, slots=True, kw_only=True)
class AssignReduce(Message):
    """Run reduce task ``task`` (bucket ``task``) of step ``step`` over ``inputs``:
    one ref per map task, each to that task's one committed attempt."""

    attempt: int
    step: int
    task: int
    inputs: tuple[MapOutputRef, ...]
    #: Directory (on storage every worker reaches) where ``part-NNNNN`` is committed.
    output_dir: str = ""


@message(1006)
@dataclass(frozen=True, slots=True, kw_only=True)
class CancelAttempt(Message):
    """The master no longer needs attempt ``attempt`` (its backup won, or its
    inputs were lost); the worker may stop it."""

    attempt: int


@message(1007)
@dataclass(frozen=True, slots=True, kw_only=True)
class CounterValue(Message):
    group: str
    name: str
    value: int


@message(1008)
@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCompleted(Message):
    """Attempt ``attempt`` finished. For a map task, ``path`` is its output file and
    ``offsets``/``lengths`` locate each of the R buckets in it; for a reduce task,
    ``path`` is the committed part file."""

    attempt: int
    kind: TaskKind
    task: int
    path: str
    offsets: tuple[int, ...] = ()
    lengths: tuple[int, ...] = ()
    counters: tuple[CounterValue, ...] = ()
    records_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    skipped: tuple[SkipRecord, ...] = ()


@message(1009)
@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFailed(Message):
    """Attempt ``attempt`` failed. ``error`` is one line (exception type and text),
    ``detail`` the traceback; ``path``/``offset`` name the input record being
    processed (empty / -1 when none was); ``user_error`` is True when the job's own
    code raised (as opposed to the framework or the machine). A reduce attempt
    that could not read map output (missing, truncated, corrupt, unreachable)
    names those map attempts in ``lost_map_attempts``: a *fetch failure*, which
    the master answers by re-executing the map tasks, as Hadoop does."""

    attempt: int
    kind: TaskKind
    task: int
    error: str
    detail: str = ""
    path: str = ""
    offset: int = -1
    user_error: bool = False
    lost_map_attempts: tuple[int, ...] = ()


@message(1010)
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLost(Message):
    """The driver's word that ``worker`` is dead (process exit, gossip)."""

    worker: NodeId


@message(1011)
@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown(Message):
    """The job is over; the worker exits."""


MasterInput = WorkerReady | TaskCompleted | TaskFailed | WorkerLost
WorkerInput = AssignMap | AssignReduce | CancelAttempt | Shutdown
