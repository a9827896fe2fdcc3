"""Real processes on real files: no acknowledgement leaves a process before its
records are fsynced (checked on the system calls, with strace), and every
acknowledged record survives SIGKILL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from synod.storage import WriteAheadLog
from synod.storage.realfs import RealFileSystem
from synod.storage.wal import MUTANT_ACK_BEFORE_FSYNC
from tests.storage.wal_child import record

CHILD = Path(__file__).with_name("wal_child.py")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.realproc

_SYSCALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((\d+|AT_FDCWD)?,?\s*(.*?)\)\s+=\s+(-?\d+)")


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("SYNOD_MUTANT", None)
    return env


def acks_before_fsync(trace: str, wal_directory: str) -> tuple[int, int, list[str]]:
    """Replay an strace log: (acknowledgements seen, writes to WAL files seen,
    acknowledgements sent while a WAL file had writes not yet followed by an
    fsync of that file)."""
    wal_fds: set[int] = set()
    dirty: set[int] = set()
    acks = wal_writes = 0
    violations = []
    for line in trace.splitlines():
        match = _SYSCALL.match(line)
        if not match:
            continue
        name, first, rest, result = match.group(1), match.group(2), match.group(3), int(match.group(4))
        if name == "openat" and wal_directory in rest and result >= 0:
            wal_fds.add(result)
        elif name == "close" and first is not None and first.isdigit():
            wal_fds.discard(int(first))
            dirty.discard(int(first))
        elif name == "write" and first is not None:
            fd = int(first)
            if fd in wal_fds:
                dirty.add(fd)
                wal_writes += 1
            elif fd == 1 and "ACK" in rest:
                acks += 1
                if dirty:
                    violations.append(line)
        elif name in ("fsync", "fdatasync") and first is not None:
            dirty.discard(int(first))
    return acks, wal_writes, violations


def run_traced(tmp_path: Path, mutant: str | None) -> tuple[int, int, list[str]]:
    trace = tmp_path / "trace.txt"
    command = ["strace", "-f", "-qq", "-s", "64", "-o", str(trace),
               "-e", "trace=openat,write,fsync,fdatasync,close",
               sys.executable, str(CHILD), str(tmp_path / "data"), "30"]
    if mutant:
        command.append(mutant)
    subprocess.run(command, check=True, env=_environment(), timeout=120,
                   stdout=subprocess.DEVNULL, cwd=tmp_path)
    return acks_before_fsync(trace.read_text(), str(tmp_path / "data" / "wal"))


needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")


@needs_strace
def test_no_acknowledgement_leaves_before_the_fsync(tmp_path: Path) -> None:
    acks, wal_writes, violations = run_traced(tmp_path, None)
    assert acks == 30 and wal_writes >= 30
    assert violations == []


@needs_strace
def test_the_strace_check_catches_ack_before_fsync(tmp_path: Path) -> None:
    acks, wal_writes, violations = run_traced(tmp_path, MUTANT_ACK_BEFORE_FSYNC)
    assert acks == 30 and wal_writes >= 30
    assert len(violations) >= 29


def test_every_acknowledged_record_survives_sigkill(tmp_path: Path) -> None:
    for attempt in range(3):
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(tmp_path), "0"],
            stdout=subprocess.PIPE, env=_environment(), cwd=tmp_path,
        )
        assert child.stdout is not None
        acknowledged = 0
        try:
            for _ in range(50 + 37 * attempt):
                line = child.stdout.readline()
                assert line.startswith(b"ACK "), line
                acknowledged = int(line.split()[1])
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            child.stdout.close()
        log, recovered = WriteAheadLog.open(RealFileSystem(tmp_path), "wal")
        assert log.first_index == 1
        assert len(recovered) >= acknowledged
        assert recovered == [record(i) for i in range(1, len(recovered) + 1)]
        log.close()
