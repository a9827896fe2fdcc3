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
from synod.mapreduce.messages import AssignMap, AssignReduce, CounterValue, TaskCompleted


@message(1050)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunAttempt(Message):
    """Run ``assign`` of job ``job_id``, whose code is class ``job_class`` of
    ``job_path`` (on storage every worker reaches), with ``config`` (the
    job's ``MapReduceConfig`` fields, msgpack). ``locations`` maps the map
    attempts named by a reduce's ``MapOutputRef``s to the ``host:port`` of the
    worker holding their output (after a master failover that may not be the
    worker the new master's core credits with the attempt)."""

    job_id: str
    job_path: str
    job_class: str
    config: bytes
    assign: AssignMap | AssignReduce
    locations: dict[int, str]


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


@message(1055)
@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointEntry(Message):
    """One committed task of step ``step``, as the master checkpoints it in the
    lock cell: the completion, and the worker (``holder`` at ``rpc``) that
    holds a map task's output."""

    step: int
    holder: str
    rpc: str
    completion: TaskCompleted


@message(1056)
@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec(Message):
    """A job submitted to the cluster's elected master (file ``spec`` of the
    job's directory in the lock cell). ``reducers``/``workers`` 0: the default."""

    job_id: str
    job_path: str
    job_class: str
    inputs: tuple[str, ...]
    output: str
    reducers: int
    workers: int
    config: bytes
    overwrite: bool
    seed: int = 0


@message(1057)
@dataclass(frozen=True, slots=True, kw_only=True)
class JobOutcome(Message):
    """How a submitted job ended (file ``outcome``), written by the master."""

    ok: bool
    error: str = ""
    detail: str = ""
    parts: tuple[str, ...] = ()
    counters: tuple[CounterValue, ...] = ()
    records_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    elapsed_s: float = 0.0
    #: How many masters ran the job in turn (more than one: a failover).
    masters: int = 1
    #: Tasks the last master took from the checkpoint instead of running them.
    recalled: int = 0
