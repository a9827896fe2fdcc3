"""The MapReduce block's configuration: one frozen ``MapReduceConfig``.

Every field carries its unit in its name and a sentence on why its default is what
it is. ``__post_init__`` refuses nonsense with a ``ConfigError`` naming the field.
Presets: ``MapReduceConfig.local()`` (the defaults, tuned for one machine) and
``MapReduceConfig.sim()`` (tiny budgets so spills and merges happen in tests).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from synod.core.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class MapReduceConfig:
    #: Largest input split, in bytes. A split is one map task; 64 MB is the paper's
    #: (and GFS's) block size: large enough that per-task overhead is small.
    split_bytes_max: int = 64 * 1024 * 1024
    #: Smallest input split, in bytes, so a tiny input is not cut into thousands of
    #: tasks whose scheduling overhead would dominate.
    split_bytes_min: int = 1024 * 1024
    #: Target number of map tasks per worker when the input is small enough that
    #: ``split_bytes_max`` alone would leave workers idle: a few tasks per worker
    #: balance load and make a straggler's share small (the paper's M >> workers).
    splits_per_worker: int = 4
    #: Number of reduce tasks (R) when the caller does not say; 0 means "one per
    #: worker", which keeps every core busy during the reduce phase.
    reducers: int = 0
    #: Memory budget of one map task's output buffer, in bytes (an estimate of the
    #: Python objects held). Over it, the buffer is sorted, combined and spilled to a
    #: run file; the runs are merged at the end of the task (external sort).
    map_buffer_bytes_max: int = 128 * 1024 * 1024
    #: Memory budget of one reduce task's input, in bytes of encoded map output.
    #: Under it the bucket is loaded and sorted in memory (Timsort merges the sorted
    #: runs at C speed); over it the runs are streamed through a k-way merge.
    reduce_memory_bytes_max: int = 128 * 1024 * 1024
    #: Most sorted runs merged at once (the fan-in of the external merge); more runs
    #: are merged in passes, so open files and buffers stay bounded.
    merge_fan_in_max: int = 64
    #: Records per msgpack chunk in spill and map output files: large enough that
    #: (un)packing is done by msgpack's C code in bulk, small enough to stream.
    chunk_records_max: int = 4096
    #: Attempts of one task before the job fails (worker deaths and user-code
    #: failures both count). Four matches Hadoop's ``mapreduce.map.maxattempts``.
    task_attempts_max: int = 4
    #: Fetch-failure reports (a reducer could not read a bucket) against one
    #: committed map attempt before the master deems its output lost and
    #: re-executes the map task. Hadoop waits for three notifications, as its
    #: reducers report every failed HTTP fetch; ours report only after their own
    #: retry (a cluster worker reconnects once; the local runner reads a file on
    #: this machine, and a missing or corrupt file stays so), so one is enough.
    fetch_failures_max: int = 1
    #: Failures of the same input record before it is skipped (the paper's
    #: bad-record skipping: "more than one failure on a particular record").
    skip_after_failures: int = 2
    #: Most records one map task may skip before it fails anyway: skipping is for a
    #: few bad records, not for a mapper that fails on everything.
    skipped_records_max: int = 100
    #: Backup tasks start when this fraction of a phase's tasks (or fewer) is still
    #: running and nothing is left to assign (the paper: "close to completion").
    backup_remaining_fraction: float = 0.1
    #: A task gets a backup only after running this long, in milliseconds, so quick
    #: tasks are never duplicated.
    backup_after_ms: float = 1000.0
    #: A running task is a straggler only when it has run this many times the
    #: median duration of the phase's completed tasks: a task that is merely
    #: long is not duplicated (a backup costs a core that, on one machine, other
    #: work may need). The paper's backups are for slow *machines*.
    backup_slowdown: float = 1.5
    #: How often the master re-examines running tasks for stragglers, in ms.
    scheduler_tick_ms: float = 200.0
    #: Largest number of workers one master accepts (a bound on its tables).
    workers_max: int = 4096
    #: Replacement worker processes the local runner starts over one job after
    #: deaths, before it gives up.
    worker_restarts_max: int = 16
    #: Keep Python's cyclic garbage collector on while a task attempt runs. Off
    #: by default: a task's buffered pairs are millions of long-lived tuples that
    #: the collector would scan again and again for nothing (about 12% of a
    #: sort's CPU). Turn it on for a job whose own code makes reference cycles
    #: per record, which would otherwise be freed only after the attempt.
    cyclic_gc_in_tasks: bool = False
    #: fsync each output part before its rename, so a committed part survives a
    #: power loss.
    fsync_output: bool = True

    def __post_init__(self) -> None:
        positive = (
            "split_bytes_max", "split_bytes_min", "splits_per_worker", "map_buffer_bytes_max",
            "reduce_memory_bytes_max", "chunk_records_max", "task_attempts_max",
            "skip_after_failures", "workers_max", "fetch_failures_max",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"MapReduceConfig.{name} must be positive")
        if self.split_bytes_min > self.split_bytes_max:
            raise ConfigError("MapReduceConfig.split_bytes_min must not exceed split_bytes_max")
        if self.merge_fan_in_max < 2:
            raise ConfigError("MapReduceConfig.merge_fan_in_max must be at least 2")
        if self.reducers < 0:
            raise ConfigError("MapReduceConfig.reducers must be >= 0 (0: one per worker)")
        if self.skipped_records_max < 0 or self.worker_restarts_max < 0:
            raise ConfigError("MapReduceConfig: *_max counts must be >= 0")
        if not 0.0 <= self.backup_remaining_fraction <= 1.0:
            raise ConfigError("MapReduceConfig.backup_remaining_fraction must be in [0, 1]")
        if self.backup_slowdown < 0:
            raise ConfigError("MapReduceConfig.backup_slowdown must be >= 0")
        if self.backup_after_ms < 0 or self.scheduler_tick_ms <= 0:
            raise ConfigError("MapReduceConfig: backup_after_ms >= 0, scheduler_tick_ms > 0")

    @classmethod
    def local(cls) -> MapReduceConfig:
        """Defaults for one machine."""
        return cls()

    @classmethod
    def sim(cls) -> MapReduceConfig:
        """Tiny budgets, so spills, multi-pass merges and backups happen in tests."""
        return dataclasses.replace(
            cls(), split_bytes_min=1, map_buffer_bytes_max=4096, reduce_memory_bytes_max=2048,
            merge_fan_in_max=2, chunk_records_max=16, backup_after_ms=0.0, backup_slowdown=0.0,
            fsync_output=False,
        )
