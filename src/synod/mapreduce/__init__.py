"""synod.mapreduce: MapReduce jobs (Dean & Ghemawat) on this machine.

Write a job as a subclass of ``Job`` in one file; run it with ``run_job`` or
``synod mr run JOB.py INPUT... -o OUTDIR``. See docs/mapreduce.md.
"""

from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.formats import (
    InputFormat,
    MsgpackOutput,
    MsgpackRecords,
    OutputFormat,
    RecordBlock,
    TextLines,
    TextOutput,
    WholeFiles,
)
from synod.mapreduce.job import Job, Keys, Step, stable_partition
from synod.mapreduce.master import Master, MasterStatistics, TaskFailure
from synod.mapreduce.runner import (
    InputError,
    JobError,
    JobFailed,
    JobLoadError,
    JobProgress,
    JobResult,
    OutputExistsError,
    load_job,
    run_job,
)

__all__ = [
    "InputError",
    "InputFormat",
    "Job",
    "JobError",
    "JobFailed",
    "JobLoadError",
    "JobProgress",
    "JobResult",
    "Keys",
    "MapReduceConfig",
    "Master",
    "MasterStatistics",
    "MsgpackOutput",
    "MsgpackRecords",
    "OutputExistsError",
    "OutputFormat",
    "RecordBlock",
    "Step",
    "TaskFailure",
    "TextLines",
    "TextOutput",
    "WholeFiles",
    "load_job",
    "run_job",
    "stable_partition",
]
