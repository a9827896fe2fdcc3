"""Tour step for gossip: SWIM agents converge, and a killed agent is declared
failed by every other one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from synod.demo.tour import Step, StepContext
from synod.gossip.agent import query_members
from synod.gossip.messages import MemberStatus
from synod.runtime.auth import Keyring, new_secret

AGENTS = 5

View = dict[str, MemberStatus]


def _start(root: Path, secret_file: Path, name: str, seed: str | None) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "synod", "gossip", "agent", "--node", name, "--bind", "127.0.0.1:0",
               "--secret-file", str(secret_file), "--profile", "local", "--data-dir", str(root / name)]
    if seed is not None:
        command += ["--join", seed]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY"):
        process.kill()
        raise RuntimeError(f"agent {name} did not start: {line!r}")
    return process, int(line.split()[3])


def _views(ports: dict[str, int], keyring: Keyring) -> dict[str, View]:
    async def ask() -> dict[str, View]:
        result: dict[str, View] = {}
        for name, port in ports.items():
            with contextlib.suppress(TimeoutError, OSError):
                reply = await query_members(("127.0.0.1", port), keyring, 1.0)
                result[name] = {row.node: row.status for row in reply.members}
        return result

    return asyncio.run(ask())


def _wait(ports: dict[str, int], keyring: Keyring, check: Callable[[View], bool], timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        views = _views(ports, keyring)
        if len(views) == len(ports) and all(check(view) for view in views.values()):
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def _gossip(context: StepContext) -> None:
    root = context.workdir / "gossip"
    root.mkdir(parents=True, exist_ok=True)
    secret = new_secret().hex().encode()  # printable: a secret file's trailing newline is ignored
    secret_file = root / "secret"
    secret_file.write_bytes(secret)
    keyring = Keyring.from_secret(secret)
    processes: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, int] = {}
    names = [f"g{i}" for i in range(1, AGENTS + 1)]
    try:
        for name in names:
            seed = None if name == names[0] else f"{names[0]}@127.0.0.1:{ports[names[0]]}"
            processes[name], ports[name] = _start(root, secret_file, name, seed)
        joined_s = _wait(ports, keyring, lambda v: all(v.get(n) is MemberStatus.ALIVE for n in names), 30.0)
        context.check(f"{AGENTS} agents converge: everyone sees everyone alive", joined_s is not None,
                      f"in {joined_s:.1f} s" if joined_s is not None else "timed out")
        victim = names[2]
        os.kill(processes[victim].pid, signal.SIGKILL)
        processes.pop(victim).wait()
        del ports[victim]
        detected_s = _wait(ports, keyring, lambda v: v.get(victim) is MemberStatus.DEAD, 30.0)
        context.check(f"kill -9 {victim}: every other agent marks it failed", detected_s is not None,
                      f"in {detected_s:.1f} s (local profile)" if detected_s is not None else "timed out")
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


STEPS = (
    Step(
        title="SWIM gossip: membership and failure detection",
        explanation="""
Agents find each other through one seed and spread membership by piggybacking on
probes (SWIM). A member that stops answering direct and indirect probes is
suspected, then declared failed, and the verdict reaches everyone.""",
        run=_gossip,
    ),
)
