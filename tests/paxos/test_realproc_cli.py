"""``synod cluster up`` / ``status`` and ``synod paxos`` as a person runs them:
real processes on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli import main

pytestmark = pytest.mark.realproc


def wait_for_text(process: subprocess.Popen[bytes], needle: str, timeout_s: float) -> str:
    """Read the child's stdout (unbuffered, by its fd) until ``needle`` shows."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            if needle.encode() in seen:
                return seen.decode()
    raise AssertionError(f"{needle!r} not printed within {timeout_s} s; got {seen.decode()!r}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone; the cluster's nodes are not our children.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def test_cluster_up_serves_the_paxos_commands_and_stops_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-c", "from synod.cli import main; main()", "cluster", "up", "-n", "3",
         "--data", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    pids: list[int] = []
    try:
        text = wait_for_text(process, "Ctrl-C stops every node", 60.0)
        assert "cluster of 3 up" in text, text
        layout = json.loads((data / "cluster.json").read_text())
        pids = list(layout["pids"].values())
        assert len(pids) == 3 and all(alive(pid) for pid in pids)
        assert (data / "cluster.key").stat().st_mode & 0o077 == 0
        runner = CliRunner()
        base = ["paxos", "--data", str(data)]
        assert runner.invoke(main, [*base, "put", "colour", "blue"]).output == "ok\n"
        assert runner.invoke(main, [*base, "get", "colour"]).output == "blue\n"
        swapped = runner.invoke(main, [*base, "cas", "colour", "blue", "green"])
        assert swapped.exit_code == 0 and swapped.output == "swapped\n"
        refused = runner.invoke(main, [*base, "cas", "colour", "blue", "red"])
        assert refused.exit_code == 1 and "green" in refused.output
        assert runner.invoke(main, [*base, "get", "colour", "--mode", "quorum"]).output == "green\n"
        assert runner.invoke(main, [*base, "del", "colour"]).output == "deleted\n"
        absent = runner.invoke(main, [*base, "get", "colour"])
        assert absent.exit_code == 1
        status = runner.invoke(main, ["cluster", "status", "--data", str(data)])
        assert status.exit_code == 0
        assert status.output.count("leader ") == 1 and status.output.count("follower") == 2, status.output
    finally:
        process.send_signal(signal.SIGTERM)
        raw, _ = process.communicate(timeout=60)
    output = raw.decode()
    assert process.returncode == 0, output
    assert "stopped" in output
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def test_paxos_commands_explain_a_missing_or_unreachable_cluster(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["paxos", "--data", str(tmp_path / "none"), "get", "k"])
    assert missing.exit_code == 1
    assert "no cluster in" in missing.output and "synod cluster up" in missing.output
    # A connection file whose nodes are all down: a clear timeout, not a traceback.
    data = tmp_path / "down"
    data.mkdir()
    (data / "cluster.json").write_text(json.dumps({
        "nodes": {"n1": ["127.0.0.1", 9], "n2": ["127.0.0.1", 10]},
        "principal": "client", "key_file": "client.key", "insecure": True, "pids": {},
    }))
    down = runner.invoke(main, ["paxos", "--data", str(data), "--timeout", "0.5", "put", "k", "v"])
    assert down.exit_code == 1, down.output
    assert "did not answer within 0.5 s" in down.output and "synod cluster status" in down.output
    status = runner.invoke(main, ["cluster", "status", "--data", str(data), "--timeout", "0.3"])
    assert status.exit_code == 0 and status.output.count("unreachable") == 2, status.output


def test_an_insecure_local_cluster_serves_the_sync_client(tmp_path: Path) -> None:
    from synod.cli.cluster import LocalCluster, read_connection

    with LocalCluster(tmp_path / "open", 3, insecure=True) as local:
        assert not (tmp_path / "open" / "cluster.key").exists()
        info = read_connection(tmp_path / "open")
        assert info.insecure and info.key is None
        local.wait_leader()
        with local.sync_client() as client:
            client.put("k", "v")
            follower = next(n for n in local.nodes if client.status(n).role == "follower")
        pid = local.pid(follower)
        local.kill(follower)
        assert not alive(pid) and not local.is_running(follower)
        local.restart(follower)
        assert local.is_running(follower) and local.pid(follower) != pid
        with local.sync_client() as client:
            assert client.get("k") == "v"
        pids = [local.pid(n) for n in local.nodes]
    assert not any(alive(p) for p in pids)
