"""``python -m synod.runtime.serve``: real node processes on loopback, SIGKILLed
and restarted; and its refusals of bad command lines."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synod.runtime.client import connect
from synod.runtime.serve import main
from synod.toy.messages import Read, ReadOk, Write, WriteOk
from tests.runtime.helpers import run

pytestmark = pytest.mark.realproc

SECRET = b"serve-test-cluster-secret-0123456789"
ALICE = b"serve-test-alice-secret-0123456789"


class NodeProcess:
    def __init__(self, tmp_path: Path, node: str, port: int, peers: dict[str, int]) -> None:
        (tmp_path / "cluster.key").write_bytes(SECRET)
        (tmp_path / "alice.key").write_bytes(ALICE)
        command = [
            sys.executable, "-m", "synod.runtime.serve", "--core", "toy", "--node", node,
            "--port", str(port), "--data", str(tmp_path / node),
            "--secret-file", str(tmp_path / "cluster.key"), "--user", f"alice={tmp_path / 'alice.key'}",
            *(f"--peer={peer}=127.0.0.1:{peer_port}" for peer, peer_port in peers.items()),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.process.stdout is not None
        line = b""
        deadline = time.monotonic() + 60
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if select.select([self.process.stdout], [], [], 1.0)[0]:
                chunk = os.read(self.process.stdout.fileno(), 1)
                if not chunk:
                    break
                line += chunk
        if not line.startswith(b"READY"):
            self.process.kill()
            raise AssertionError(f"{node} did not start: {self.process.communicate(timeout=30)}")
        self.port = int(line.split()[3])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [int(sock.getsockname()[1]) for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


async def write(port: int, node: str, key: str, value: str) -> None:
    async with await connect(("127.0.0.1", port), "alice", ALICE, node=node) as client:
        reply = await client.request(Write(key=key, value=value), 20)
        assert isinstance(reply, WriteOk), reply


async def read_until(port: int, node: str, key: str, value: str) -> None:
    async with await connect(("127.0.0.1", port), "alice", ALICE, node=node) as client:
        for _ in range(1000):
            reply = await client.request(Read(key=key), 20)
            assert isinstance(reply, ReadOk)
            if reply.entry is not None and reply.entry.value == value:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{node} never saw {key}={value}")


def test_two_node_processes_replicate_and_a_sigkilled_node_recovers_acknowledged_writes(
    tmp_path: Path,
) -> None:
    port1, port2 = free_ports(2)
    n1 = NodeProcess(tmp_path, "n1", port1, {"n2": port2})
    n2 = NodeProcess(tmp_path, "n2", port2, {"n1": port1})
    try:
        run(write(port1, "n1", "colour", "blue"))
        run(read_until(port2, "n2", "colour", "blue"))  # over authenticated TCP
        n1.kill()  # SIGKILL: no clean shutdown, only what was fsynced survives
        n1 = NodeProcess(tmp_path, "n1", port1, {"n2": port2})
        run(read_until(port1, "n1", "colour", "blue"))
        run(write(port2, "n2", "shape", "round"))
        run(read_until(port1, "n1", "shape", "round"))  # n2's link reconnected to the new n1
    finally:
        n1.terminate()
        n2.terminate()


def test_bad_command_lines_are_refused_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--node", "n1"]) == 2  # no secret and not insecure
    assert "secret" in capsys.readouterr().err
    (tmp_path / "short.key").write_bytes(b"short")
    assert main(["--node", "n1", "--secret-file", str(tmp_path / "short.key")]) == 2
    assert main(["--node", "bad id!", "--insecure"]) == 2
    assert main(["--node", "n1", "--insecure", "--core", "nonexistent"]) == 2
    assert main(["--node", "n1", "--insecure", "--core", "no.such.module:factory"]) == 2
    assert main(["--node", "n1", "--insecure", "--peer", "n2=nowhere"]) == 2


def test_new_secret_writes_a_private_random_secret(tmp_path: Path) -> None:
    path = tmp_path / "fresh.key"
    assert main(["--new-secret", str(path)]) == 0
    assert len(path.read_bytes()) == 64 and path.stat().st_mode & 0o077 == 0
    main(["--new-secret", str(tmp_path / "other.key")])
    assert path.read_bytes() != (tmp_path / "other.key").read_bytes()


def test_the_runtime_imports_no_block() -> None:
    """A driver sits below the blocks (DESIGN.md, layers): cores are named, not imported."""
    import ast

    import synod.runtime

    blocks = ("synod.paxos", "synod.gossip", "synod.lock", "synod.txn", "synod.mapreduce",
              "synod.toy", "synod.node", "synod.cli", "synod.sim")
    for path in Path(synod.runtime.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                assert not name.startswith(blocks), f"{path.name} imports {name}"
