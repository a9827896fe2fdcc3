"""Real processes: a 3-node lock cell on 127.0.0.1 (``synod cluster up`` with
``synod.lock.server:lock_factory``), clients in their own processes, SIGKILL of
the leader's process and of the cell's master. Bounds are generous on purpose
(a shared, loaded machine); the benchmark measures the real failover time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synod.cli.cluster import LocalCluster
from synod.lock.client import SyncLockClient
from synod.lock.sequencer import Fence, LockMode, Sequencer, StaleSequencerError

pytestmark = pytest.mark.realproc

CORE = "synod.lock.server:lock_factory"
BOUND_S = 20.0


def beats(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], int(parts[1])))
    return rows


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def check_fenced(log: Path) -> None:
    """Replay the leader's writes through a Fence: none may be stale, and each
    generation belongs to one identity."""
    fence = Fence()
    owner: dict[int, str] = {}
    for identity, generation in beats(log):
        assert owner.setdefault(generation, identity) == identity, f"generation {generation} has two leaders"
        try:
            fence.admit(Sequencer(path="/ls/local/leader", mode=LockMode.EXCLUSIVE,
                                  lock_generation=generation, instance=0))
        except StaleSequencerError as error:
            raise AssertionError(f"{identity} wrote with a stale sequencer: {error}") from None


def test_election_survives_sigkill_of_the_leader_and_of_the_master(tmp_path: Path) -> None:
    log = tmp_path / "beats.log"
    with LocalCluster(tmp_path / "cell", 3, core=CORE) as cluster:
        cluster.wait_leader()
        electors = {
            name: subprocess.Popen(
                [sys.executable, "-m", "tests.lock.elector", str(cluster.data_dir), name, str(log)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            )
            for name in ("p1", "p2", "p3")
        }
        try:
            wait_for(lambda: len(beats(log)) > 5, "a first leader")
            first = beats(log)[-1][0]
            os.kill(electors[first].pid, signal.SIGKILL)
            electors[first].wait()
            wait_for(lambda: beats(log)[-1][0] != first, "a new leader after SIGKILL of the leader")
            second = beats(log)[-1][0]
            # Now the cell's master dies; the leader's session must survive it.
            master = cluster.wait_leader()
            cluster.kill(master)
            count = len(beats(log))
            wait_for(lambda: len(beats(log)) > count + 20, "beats after SIGKILL of the master")
            cluster.restart(master)
            assert electors[second].poll() is None or beats(log)[-1][0] != second
            check_fenced(log)
        finally:
            for process in electors.values():
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()
                if process.stderr is not None:
                    process.stderr.close()


@pytest.mark.slow
def test_cli_and_library_against_a_running_cell(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "cell", 3, core=CORE) as cluster:
        cluster.wait_leader()
        env = {**os.environ, "SYNOD_DATA": str(cluster.data_dir)}

        def synod(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "synod", *args], env=env, capture_output=True,
                                  text=True, timeout=60)

        assert synod("put", "/ls/local/cfg", "v1").returncode == 0
        assert synod("cat", "/ls/local/cfg").stdout == "v1"
        held = synod("lock", "/ls/local/L", "--", sys.executable, "-c",
                     "import os; print(os.environ['SYNOD_LOCK_SEQUENCER'])")
        assert held.returncode == 0 and "exclusive@1" in held.stdout
        bad = synod("put", "relative", "x")
        assert bad.returncode != 0 and "bad_path" in bad.stderr
        info = cluster.connection()
        with SyncLockClient(info.nodes, **info.client_options()) as a, \
                SyncLockClient(info.nodes, **info.client_options()) as b:
            # Cached from the ``cache_admission_reads``-th read on; the next is a hit.
            for _ in range(b.client.config.cache_admission_reads + 1):
                assert b.read("/ls/local/cfg").contents == b"v1"
            assert b.client.session.statistics().cache_hits >= 1
            a.write("/ls/local/cfg", b"v2")
            assert b.read("/ls/local/cfg").contents == b"v2"
            a.register("/ls/local/svc", "a", "127.0.0.1:9")
            assert b.discover("/ls/local/svc") == {"a": "127.0.0.1:9"}
        assert "svc" in synod("ls", "/ls/local").stdout
        assert synod("ls", "/ls/local/svc").stdout == "", "the ephemeral file left with its session"
        assert synod("rm", "/ls/local/cfg").returncode == 0


def test_cli_says_when_the_cell_cannot_be_reached(tmp_path: Path) -> None:
    missing = subprocess.run([sys.executable, "-m", "synod", "ls", "/ls/local", "--data", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "synod cluster up" in missing.stderr
    # A layout whose nodes are not running (written, never started).
    LocalCluster(tmp_path / "cell", 3, core=CORE).init()
    stopped = subprocess.run([sys.executable, "-m", "synod", "ls", "/ls/local", "--data",
                              str(tmp_path / "cell"), "--timeout", "1"],
                             capture_output=True, text=True, timeout=60)
    assert stopped.returncode != 0 and "did not answer" in stopped.stderr
