"""Fault tolerance with real processes: a worker killed with SIGKILL in the middle
of a map task or a reduce task, and the job's output is identical to a clean run.
And the planted bug ``mapreduce.commit_without_rename`` is caught."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from synod.mapreduce import MapReduceConfig, run_job
from tests.mapreduce import data
from tests.mapreduce.jobs import CountWords, KillMidMap, KillMidReduce, LoseMapOutput

pytestmark = pytest.mark.realproc

ROOT = Path(__file__).resolve().parents[2]
SMALL_CHUNKS = MapReduceConfig(chunk_records_max=8, split_bytes_min=4096, fsync_output=False)


def corpus(tmp_path: Path) -> tuple[Path, list[str]]:
    lines = data.zipf_lines(11, 4000)
    return data.write_lines(tmp_path / "corpus.txt", lines), lines


def clean_output(tmp_path: Path, source: Path) -> list[list[str]]:
    run_job(CountWords, [source], tmp_path / "clean", workers=2, reducers=3, config=SMALL_CHUNKS)
    return data.read_parts(tmp_path / "clean")


def test_worker_killed_mid_map_gives_identical_output(tmp_path: Path) -> None:
    source, lines = corpus(tmp_path)
    trigger = lines[len(lines) // 2].split()[0]
    job = type("Job", (KillMidMap,), {"MARKER": str(tmp_path / "marker"), "TRIGGER": trigger})
    result = run_job(job, [source], tmp_path / "out", workers=2, reducers=3, config=SMALL_CHUNKS)
    assert (tmp_path / "marker").exists(), "the worker was never killed"
    assert data.read_parts(tmp_path / "out") == clean_output(tmp_path, source)
    stats = result.steps[0]
    assert stats.attempts_started > stats.maps_total + stats.reduces_total
    assert result.counters[("test", "keys")] == sum(len(p) for p in data.read_parts(tmp_path / "out"))


def test_worker_killed_mid_reduce_gives_identical_output(tmp_path: Path) -> None:
    source, _ = corpus(tmp_path)
    clean = clean_output(tmp_path, source)
    # A key in the middle of a part, so the killed attempt has written some output.
    part = max(clean, key=len)
    trigger = part[len(part) // 2].split("\t")[0]
    job = type("Job", (KillMidReduce,), {"MARKER": str(tmp_path / "marker"), "TRIGGER": trigger})
    result = run_job(job, [source], tmp_path / "out", workers=2, reducers=3, config=SMALL_CHUNKS)
    assert (tmp_path / "marker").exists(), "the worker was never killed"
    assert data.read_parts(tmp_path / "out") == clean
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_SUCCESS", "part-00000", "part-00001", "part-00002"]
    stats = result.steps[0]
    assert stats.attempts_started > stats.maps_total + stats.reduces_total


_KILL_WHOLE_JOB = textwrap.dedent("""
    import sys
    from synod.core import faults
    from synod.mapreduce import MapReduceConfig, run_job
    from tests.mapreduce.jobs import KillMidReduce

    if sys.argv[4]:
        faults.enable_mutant(sys.argv[4])
    job = type("Job", (KillMidReduce,), {"MARKER": sys.argv[3], "TRIGGER": "k050"})
    run_job(job, [sys.argv[1]], sys.argv[2], runner="inline", reducers=1,
            config=MapReduceConfig(chunk_records_max=4, fsync_output=False))
""")


def kill_whole_job_mid_reduce(tmp_path: Path, mutant: str) -> Path:
    """Run an inline job (one process) that is SIGKILLed in the middle of writing
    its only part file; return its output directory."""
    source = data.write_lines(tmp_path / "keys.txt", [f"k{i:03d}" for i in range(100)])
    output = tmp_path / "out"
    process = subprocess.run(
        [sys.executable, "-c", _KILL_WHOLE_JOB, str(source), str(output), str(tmp_path / "marker"), mutant],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == -9, process.stderr
    return output


def test_a_job_killed_mid_reduce_leaves_no_part_file_under_its_final_name(tmp_path: Path) -> None:
    output = kill_whole_job_mid_reduce(tmp_path, "")
    assert not list(output.glob("part-*"))
    assert not (output / "_SUCCESS").exists()


def test_commit_without_rename_is_caught(tmp_path: Path) -> None:
    output = kill_whole_job_mid_reduce(tmp_path, "mapreduce.commit_without_rename")
    partial = list(output.glob("part-*"))
    assert partial, "the planted bug left no trace: the test could not catch it"
    # Exactly what the correct code prevents: a partial (here: empty, the writes
    # were still buffered) part file under its final name.
    assert len(partial[0].read_text().splitlines()) < 100


def test_a_task_that_kills_every_worker_fails_the_job_cleanly(tmp_path: Path) -> None:
    from synod.mapreduce import JobFailed
    from tests.mapreduce.jobs import AlwaysKilled

    source = data.write_lines(tmp_path / "in.txt", ["a b"])
    with pytest.raises(JobFailed, match=r"map task 0 .* attempts lost with their workers"):
        run_job(AlwaysKilled, [source], tmp_path / "out", workers=2, reducers=1,
                config=MapReduceConfig(task_attempts_max=3))
    assert not (tmp_path / "out").exists()


def test_worker_killed_from_outside_during_the_map_phase(tmp_path: Path) -> None:
    """The test, not the job, sends the SIGKILL: once the first map task is done,
    to whichever worker the driver names first (busy or idle)."""
    import os
    import signal

    from synod.mapreduce.runner import LocalDriver

    source, _ = corpus(tmp_path)
    drivers: list[LocalDriver] = []
    killed: list[int] = []

    def on_driver(driver: object) -> None:
        assert isinstance(driver, LocalDriver)
        drivers.append(driver)

    def progress(update: object) -> None:
        if killed or getattr(update, "maps_completed", 0) < 1:
            return
        pid = sorted(drivers[0].worker_pids().values())[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    config = MapReduceConfig(chunk_records_max=8, split_bytes_min=2048, fsync_output=False)
    run_job(CountWords, [source], tmp_path / "out", workers=2, reducers=3, config=config,
            progress=progress, on_driver=on_driver)
    assert killed
    assert data.read_parts(tmp_path / "out") == clean_output(tmp_path, source)


@pytest.mark.parametrize(("runner", "mode"), [("local", "delete"), ("inline", "truncate"),
                                             ("local", "corrupt")])
def test_map_output_lost_on_a_live_worker_is_re_executed_after_a_fetch_failure(
        tmp_path: Path, runner: str, mode: str) -> None:
    # The workers live on, but their map output is deleted, cut short or has a
    # byte flipped (caught by the frame checksum) once the first reduce attempt
    # starts: the reducers that read it afterwards report fetch failures and the
    # master re-executes those map tasks.
    source, _ = corpus(tmp_path)
    clean = clean_output(tmp_path, source)
    job = type("Job", (LoseMapOutput,), {"MARKER": str(tmp_path / "marker"), "MODE": mode,
                                         "SCRATCH": str(tmp_path / "out" / "_temporary")})
    result = run_job(job, [source], tmp_path / "out", runner=runner, workers=2, reducers=3,
                     config=SMALL_CHUNKS)
    assert (tmp_path / "marker").exists(), "the map output was never lost"
    assert data.read_parts(tmp_path / "out") == clean
    stats = result.steps[0]
    assert stats.fetch_failures >= 1 and stats.map_reexecutions >= 1
    assert stats.failures == 0  # a fetch failure does not count against the reduce task
