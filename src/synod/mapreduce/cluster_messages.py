"""Wire messages of the cluster runner (mapreduce tags 1050-1059, append-only).

The cluster master talks to each ``synod mr worker`` over an authenticated
runtime connection, as a client: ``RunAttempt`` carries one ``AssignMap`` or
``AssignReduce`` and is answered, when the attempt is over, by the worker's
``TaskCompleted`` or ``TaskFailed`` (the same messages the local runner uses).
Reduce attempts fetch their buckets from the map workers with
``FetchMapOutput``, answered by ``MapOutputChunk``.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.codec.registry import Message, message
from synod.mapreduce.messages import AssignMap, AssignReduce


@message(1050)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunAttempt(Message):
    """Run ``assign`` of job ``job_id``, whose code is class ``job_class`` of
    ``job_path`` (on storage every worker reaches), with ``config`` (the
    job's ``MapReduceConfig`` fields, msgpack). ``locations`` maps the master's
    worker ids named by a reduce's ``MapOutputRef``s to their ``host:port``."""

    job_id: str
    job_path: str
    job_class: str
    config: bytes
    assign: AssignMap | AssignReduce
    locations: dict[str, str]


@message(1051)
@dataclass(frozen=True, slots=True, kw_only=True)
class FetchMapOutput(Message):
    """``length`` bytes (at most the worker's chunk bound) at ``offset`` of the
    map output file ``path``, which must lie in the worker's scratch directory."""

    path: str
    offset: int
    length: int


@message(1052)
@dataclass(frozen=True, slots=True, kw_only=True)
class MapOutputChunk(Message):
    """The bytes asked for; ``error`` is set (and ``data`` empty) on refusal."""

    data: bytes
    error: str = ""


@message(1053)
@dataclass(frozen=True, slots=True, kw_only=True)
class DropJob(Message):
    """The job is over: the worker may delete its scratch files."""

    job_id: str


@message(1054)
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerAck(Message):
    """The answer to ``DropJob``."""
