"""Tour steps for the foundation: the wire codec, the simulator, the runtime."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import synod.toy.scenario  # noqa: F401  (registers the "toy" scenario)
from synod.codec import ClientRequest, ErrorReply, FrameDecoder, decode, encode, frame
from synod.core import RemoteProtocolError
from synod.demo.tour import Step, StepContext
from synod.runtime.auth import AuthenticationError, new_secret
from synod.runtime.client import connect
from synod.sim.scenarios import run_scenario
from synod.toy.messages import Read, ReadOk, Write, WriteOk


def _codec(context: StepContext) -> None:
    request = ClientRequest(request_id=1, body=ErrorReply(code="demo", detail="hello"))
    wire = encode(request)
    context.check("a typed message survives encode/decode", decode(wire) == request,
                  f"{len(wire)} bytes of msgpack")
    refused = 0
    for garbage in (b"\xff\x00garbage", wire[:-3], b"\x93\x01\x09\x90"):
        try:
            decode(garbage)
        except RemoteProtocolError:
            refused += 1
    context.check("garbage, truncated and unknown-type bytes are refused", refused == 3,
                  f"{refused} of 3 refused with RemoteProtocolError")
    decoder = FrameDecoder(frame_bytes_max=1024)
    stream = frame(wire) + frame(wire)
    frames = decoder.feed(stream[:5]) + decoder.feed(stream[5:])
    context.check("length-prefixed frames reassemble", frames == [wire, wire])


def _simulation(context: StepContext) -> None:
    seeds = range(5)
    started = time.monotonic()
    results = [run_scenario("toy", seed, {"nodes": "3"}) for seed in seeds]
    passed = sum(r.ok for r in results)
    context.say(f"5 seeds of a 3-node cluster under loss, partitions, crashes and torn writes "
                f"({time.monotonic() - started:.1f} s)")
    context.check("every acknowledged write survived crashes; nodes converged after healing",
                  passed == len(results), f"{passed} of {len(results)} seeds passed")
    again = run_scenario("toy", 0, {"nodes": "3"})
    context.check("the same seed replays to the same trace", again.trace_digest == results[0].trace_digest,
                  f"trace digest {again.trace_digest[:16]}")
    planted = [run_scenario("toy", seed, {"nodes": "3"}, mutant="storage.ack_before_fsync") for seed in seeds]
    caught = sum(not r.ok for r in planted)
    context.check("a planted bug (acknowledge before fsync) is caught", caught > 0,
                  f"caught on {caught} of {len(planted)} seeds; replay with: synod sim toy --seed "
                  f"{next((r.seed for r in planted if not r.ok), 0)} --mutant storage.ack_before_fsync")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_nodes(workdir: Path, count: int) -> tuple[list[subprocess.Popen[str]], dict[str, int], bytes]:
    secret_file = workdir / "cluster.key"
    secret_file.write_text(new_secret().hex())
    user_key = new_secret().hex().encode()
    (workdir / "demo-user.key").write_bytes(user_key)
    ports = {f"n{i + 1}": _free_port() for i in range(count)}
    processes = []
    for name, port in ports.items():
        peers = [f"--peer={other}=127.0.0.1:{p}" for other, p in ports.items() if other != name]
        command = [sys.executable, "-m", "synod.runtime.serve", "--core", "toy", "--node", name,
                   "--port", str(port), "--data", str(workdir / name),
                   "--secret-file", str(secret_file), f"--user=demo={workdir / 'demo-user.key'}", *peers]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    for process in processes:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"a node did not start: {line!r}")
    return processes, ports, user_key


def _stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


async def _talk(context: StepContext, ports: dict[str, int], user_key: bytes) -> None:
    async with await connect(("127.0.0.1", ports["n1"]), "demo", user_key, node="n1") as conn:
        reply = await conn.request(Write(key="greeting", value="hello"), timeout_s=10)
        context.check("an authenticated client's write is acknowledged (after fsync)",
                      isinstance(reply, WriteOk), type(reply).__name__)
    value = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and value != "hello":
        async with await connect(("127.0.0.1", ports["n3"]), "demo", user_key, node="n3") as conn:
            read = await conn.request(Read(key="greeting"), timeout_s=10)
            if isinstance(read, ReadOk) and read.entry is not None:
                value = read.entry.value
        if value != "hello":
            await asyncio.sleep(0.1)
    context.check("the write reached another node over authenticated TCP", value == "hello", f"n3 read {value!r}")
    refused = False
    detail = ""
    try:
        async with await connect(("127.0.0.1", ports["n1"]), "demo", b"0" * 32, node="n1") as conn:
            await conn.request(Read(key="greeting"), timeout_s=5)
    except AuthenticationError as error:
        refused = True
        detail = str(error)
    context.check("a client with the wrong key is refused", refused, detail if refused else "it was served")


def _runtime(context: StepContext) -> None:
    workdir = context.workdir / "loopback"
    workdir.mkdir(parents=True, exist_ok=True)
    processes, ports, user_key = _start_nodes(workdir, 3)
    try:
        context.say("3 node processes on 127.0.0.1: " + ", ".join(f"{n}:{p}" for n, p in ports.items()))
        asyncio.run(_talk(context, ports, user_key))
    finally:
        _stop(processes)
    context.check("every node process stopped", all(p.poll() is not None for p in processes))


STEPS = (
    Step(
        title="wire codec",
        explanation="""
Every message in synod is a frozen dataclass with a type tag, encoded as msgpack
(never pickle). Anything that is not a well-formed message is refused with
RemoteProtocolError and nothing else, so a bad peer cannot crash a node.""",
        run=_codec,
    ),
    Step(
        title="deterministic simulation",
        explanation="""
Protocol cores do no I/O, so a simulator can run a whole cluster in one process
on virtual time, with a seeded network that loses, duplicates and delays
messages, partitions, crashes that lose unsynced writes and tear the last one,
and clock skew. A seed replays exactly; a planted bug must be caught.""",
        run=_simulation,
    ),
    Step(
        title="the same cores on real sockets",
        explanation="""
The asyncio runtime hosts the very same core on TCP, with an HMAC-SHA256
challenge-response on every connection, and makes each write durable (fsync,
group commit) before answering.""",
        run=_runtime,
    ),
)
