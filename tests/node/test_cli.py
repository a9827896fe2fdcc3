"""``synod cluster up --nodes`` and ``synod cluster status`` as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.node.cluster_helpers import process_gone


def synod(*args: str) -> list[str]:
    return [sys.executable, "-c", "from synod.cli import main; main()", *args]


def test_cluster_up_status_and_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "c"
    up = subprocess.Popen(synod("cluster", "up", "-n", "3", "--nodes", "--shards", "2", "--data", str(data)),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert up.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        # A thread reads the lines: select() on a buffered text stream would miss
        # lines already read into its buffer.
        threading.Thread(target=lambda: [lines.put(line) for line in up.stdout or ()], daemon=True).start()
        output: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in output):
            if up.poll() is not None:
                raise AssertionError(f"cluster up exited: {up.stderr.read() if up.stderr else ''}")
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=0.2))
        assert any("cluster of 3 nodes up" in line for line in output), output
        pids = json.loads((data / "cluster.json").read_text())["pids"]
        assert sorted(pids) == ["n1", "n2", "n3"]

        status = subprocess.run(synod("cluster", "status", "--data", str(data)), capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr
        text = status.stdout
        for node in ("n1", "n2", "n3"):
            assert f"  {node}     alive" in text, text
        group_lines = [line for line in text.splitlines() if line.startswith("  ") and "leader=" in line]
        assert [line.split()[0] for line in group_lines] == ["lock", "s1", "s2"]
        assert not any("leader=- " in line for line in group_lines)
        assert "lock cell master" in text

        os.kill(up.pid, signal.SIGINT)           # Ctrl-C, by PID
        assert up.wait(timeout=60) == 0
        assert all(process_gone(pid) for pid in pids.values())
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGKILL)
            up.wait()
