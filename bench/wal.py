"""Write-ahead log benchmark: durable appends per second on real files.

Compares one fsync per append with group commit (``synod.storage.GroupCommit``
feeding ``WriteAheadLog``) at 1, 16 and 256 concurrent appenders. Each appender
is a thread that appends a record and waits until it is durable, then appends
the next. With group commit a single committer thread takes whatever is queued,
appends it to the log and fsyncs once, then releases the waiting appenders --
the loop the simulator and the runtime run, with threads standing in for
asyncio tasks (``fsync`` releases the GIL, so this measures the disk).

Usage::

    uv run python bench/wal.py [--seconds 3] [--record-bytes 128] [--dir PATH]

This is a benchmark, not a test: it prints figures and asserts nothing. The
directory defaults to a fresh temporary directory (make sure it is on a real
disk, not tmpfs, or fsync costs nothing).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from synod.storage import GroupCommit, GroupCommitConfig, WalConfig, WriteAheadLog
from synod.storage.realfs import RealFileSystem


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    mode: str
    appenders: int
    appends: int
    seconds: float
    fsyncs: int
    latencies_ms: list[float]

    @property
    def appends_per_second(self) -> float:
        return self.appends / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _fresh_log(root: Path, name: str) -> tuple[WriteAheadLog, RealFileSystem]:
    fs = RealFileSystem(root)
    log, _ = WriteAheadLog.open(fs, name, WalConfig())
    return log, fs


def fsync_per_append(root: Path, appenders: int, seconds: float, record: bytes) -> Result:
    """Every append pays its own fsync (a lock serialises append + sync)."""
    log, fs = _fresh_log(root, f"per-append-{appenders}")
    lock = threading.Lock()
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(appenders)]

    def appender(slot: int) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            with lock:
                log.append(record)
                log.sync()
            latencies[slot].append((time.perf_counter() - start) * 1000)

    return _run("fsync per append", appenders, seconds, appender, stop, log, fs, latencies)


def group_commit(root: Path, appenders: int, seconds: float, record: bytes) -> Result:
    """Appenders queue persists; one committer fsyncs whatever is queued."""
    log, fs = _fresh_log(root, f"group-{appenders}")
    commit: GroupCommit[threading.Event] = GroupCommit(GroupCommitConfig())
    lock = threading.Condition()
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(appenders)]

    def committer() -> None:
        while True:
            with lock:
                while commit.statistics().pending_persists == 0:
                    if stop.is_set():
                        return
                    lock.wait(timeout=0.05)
                batch = commit.next_batch()
            if batch is None:
                continue
            for item in batch.records:
                log.append(item)
            log.sync()
            with lock:
                done = commit.batch_durable(batch)
            for event in done:
                event.set()

    def appender(slot: int) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            durable = threading.Event()
            with lock:
                commit.submit([record], durable)
                lock.notify()
            durable.wait()
            latencies[slot].append((time.perf_counter() - start) * 1000)

    committer_thread = threading.Thread(target=committer, daemon=True)
    committer_thread.start()
    result = _run("group commit", appenders, seconds, appender, stop, log, fs, latencies)
    committer_thread.join()
    return result


def _run(mode: str, appenders: int, seconds: float, target: object, stop: threading.Event,
         log: WriteAheadLog, fs: RealFileSystem, latencies: list[list[float]]) -> Result:
    assert callable(target)
    threads = [threading.Thread(target=target, args=(slot,), daemon=True) for slot in range(appenders)]
    fsyncs_before = fs.statistics().fsyncs
    appended_before = log.durable_index
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    log.close()
    return Result(
        mode=mode, appenders=appenders, appends=log.durable_index - appended_before,
        seconds=elapsed, fsyncs=fs.statistics().fsyncs - fsyncs_before,
        latencies_ms=[value for per_thread in latencies for value in per_thread],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run")
    parser.add_argument("--record-bytes", type=int, default=128, help="payload size")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="synod-bench-wal-", dir=args.dir))
    record = bytes(range(256)) * (args.record_bytes // 256) + bytes(args.record_bytes % 256)
    print(f"synod bench/wal.py  {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} cores")
    print(f"directory {root}, record {args.record_bytes} bytes, {args.seconds:g} s per run")
    print()
    runs = [
        (fsync_per_append, 1),
        (fsync_per_append, 16),
        (group_commit, 1),
        (group_commit, 16),
        (group_commit, 256),
    ]
    header = f"{'mode':<18}{'appenders':>10}{'appends/s':>12}{'fsyncs/s':>10}{'rec/fsync':>11}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    print("-" * len(header))
    try:
        for run, appenders in runs:
            result = run(root, appenders, args.seconds, record)
            per_fsync = result.appends / result.fsyncs if result.fsyncs else 0.0
            print(
                f"{result.mode:<18}{result.appenders:>10}{result.appends_per_second:>12,.0f}"
                f"{result.fsyncs / result.seconds:>10,.0f}{per_fsync:>11.1f}"
                f"{result.percentile_ms(0.5):>9.2f}{result.percentile_ms(0.99):>9.2f}",
                flush=True,
            )
            if not result.latencies_ms:
                print("  (no append completed)", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
