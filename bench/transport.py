"""Transport benchmark: messages/s and MB/s between two processes through the runtime.

Run:  uv run python bench/transport.py            (about a minute on 2 cores)
      uv run python bench/transport.py --quick    (smaller counts)

A receiver process hosts a node (``AsyncioHost``, uvloop) whose core counts
``BenchData`` messages. The sender (this process) authenticates to it as node
``s`` over one TCP connection and pushes messages through the runtime's
transport (codec, frames, bounded send queue with back-pressure); a client
connection asks the receiver's core to answer once it has counted them all, so
the time measured covers delivery to the core, not just the sender's writes.
Separate processes, so the two cores of the machine are both used.

Measured for 100-byte and 64 KiB payloads, with HMAC authentication (the
default), ``insecure`` (no authentication) and mutual ``tls`` (when the
``openssl`` command can make throw-away certificates), plus the cost of opening
one connection (TCP connect + handshake) in each mode.

The HMAC handshake authenticates the connection once; frames after it carry no
MAC, so authentication adds no per-message cost on TCP (the throughput rows of
the two modes differ only by noise). TLS would add per-byte encryption.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from synod.codec.kernel import ClientRequest
from synod.codec.registry import Message, message
from synod.core.effects import ClientResult, Effects, Recovered
from synod.core.ids import NodeId
from synod.runtime.auth import InitiatorHandshake, Key, Keyring, client_tls_context
from synod.runtime.client import connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import AsyncioHost, run
from synod.runtime.stats import Counters, RuntimeStatistics
from synod.runtime.transport import open_connection

CLUSTER_SECRET = b"bench-cluster-secret-0123456789abcdef"
CLIENT_SECRET = b"bench-client-secret-0123456789abcdef"
KEYRING = Keyring.from_secret(CLUSTER_SECRET, users={"bench": CLIENT_SECRET})


@message(95)
@dataclass(frozen=True, slots=True, kw_only=True)
class BenchData(Message):
    seq: int
    payload: bytes


@message(96)
@dataclass(frozen=True, slots=True, kw_only=True)
class BenchWait(Message):
    """Answer when the core has counted ``total`` BenchData messages in all."""

    total: int


@message(97)
@dataclass(frozen=True, slots=True, kw_only=True)
class BenchDone(Message):
    total: int


class CountingCore:
    """Counts BenchData; answers BenchWait requests once the count is reached."""

    def __init__(self, node: NodeId, rng: random.Random) -> None:
        self.count = 0
        self.waiting: list[tuple[NodeId, int, int]] = []

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        match message:
            case BenchData():
                self.count += 1
                if self.waiting and self.count >= self.waiting[0][2]:
                    return self._release()
                return []
            case ClientRequest(request_id=request_id, body=BenchWait(total=total)):
                self.waiting.append((source, request_id, total))
                self.waiting.sort(key=lambda waiting: waiting[2])
                return self._release()
            case _:
                return []

    def _release(self) -> Effects:
        effects: Effects = []
        while self.waiting and self.count >= self.waiting[0][2]:
            client, request_id, _total = self.waiting.pop(0)
            effects.append(
                ClientResult(client=client, request_id=request_id, result=BenchDone(total=self.count))
            )
        return effects

    def on_timer(self, now_ms: float, key: str) -> Effects:
        return []

    def check_invariants(self) -> None:
        pass


def bench_config(mode: str, pki: Path | None = None, cn: str = "r") -> RuntimeConfig:
    """``hmac`` (default auth), ``insecure`` (none) or ``tls`` (mutual TLS, certs in ``pki``)."""
    config = RuntimeConfig.local()
    if mode == "insecure":
        return dataclasses.replace(config, insecure=True)
    if mode == "tls":
        assert pki is not None
        return dataclasses.replace(
            config, tls_cert_file=pki / f"{cn}.pem", tls_key_file=pki / f"{cn}.key",
            tls_ca_file=pki / "ca.pem", peers={"s": ("127.0.0.1", 1)},
        )
    return config


def make_pki() -> Path | None:
    """A throw-away CA and certificates for r, s and bench (None without openssl)."""
    if shutil.which("openssl") is None:
        return None
    directory = Path(tempfile.mkdtemp(prefix="synod-bench-pki-"))

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
            "-keyout", "ca.key", "-out", "ca.pem")
    for cn in ("r", "s", "bench"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", f"{cn}.key", "-out", f"{cn}.csr")
        openssl("x509", "-req", "-in", f"{cn}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-out", f"{cn}.pem")
    return directory


# ---------------------------------------------------------------- receiver process


async def receiver(mode: str, pki: Path | None) -> None:
    host = AsyncioHost(
        node=NodeId("r"), core_factory=CountingCore, config=bench_config(mode, pki, "r"),
        keyring=KEYRING, seed=1,
    )
    address = await host.start()
    print(f"READY {address[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await host.stop()


# ---------------------------------------------------------------- sender


@dataclass(frozen=True, slots=True)
class Row:
    mode: str
    payload_bytes: int
    messages: int
    seconds: float

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def megabytes_per_s(self) -> float:
        return self.messages * self.payload_bytes / self.seconds / 1e6


def client_key(mode: str) -> Key | None:
    return Key(0, CLIENT_SECRET) if mode == "hmac" else None


async def throughput(
    port: int, mode: str, pki: Path | None, payload_bytes: int, count: int, total_before: int
) -> float:
    config = bench_config(mode, pki, "s")
    handshake = InitiatorHandshake(
        mode=mode,  # type: ignore[arg-type]
        kind="node", principal="s",
        key=KEYRING.primary if mode == "hmac" else None, expected_acceptor="r",
    )
    context = None
    if pki is not None and mode == "tls":
        context = client_tls_context(str(pki / "s.pem"), str(pki / "s.key"), str(pki / "ca.pem"))
    counters: Counters[RuntimeStatistics] = Counters(RuntimeStatistics)
    connection = await open_connection(
        ("127.0.0.1", port), handshake=handshake, config=config, counters=counters, ssl_context=context
    )
    serving = asyncio.create_task(connection.run(lambda _c, _m: None))
    client = await connect(
        ("127.0.0.1", port), "bench", client_key(mode), config=bench_config(mode, pki, "bench")
    )
    done = asyncio.create_task(client.request(BenchWait(total=total_before + count), 600))
    payload = os.urandom(payload_bytes)
    started = time.perf_counter()
    for seq in range(count):
        await connection.send(BenchData(seq=seq, payload=payload))
    reply = await done
    elapsed = time.perf_counter() - started
    assert isinstance(reply, BenchDone) and reply.total >= total_before + count, reply
    await client.close()
    connection.close("done")
    serving.cancel()
    return elapsed


async def connection_cost(port: int, mode: str, pki: Path | None, connections: int) -> float:
    """Mean seconds to connect and authenticate one client connection."""
    config = bench_config(mode, pki, "bench")
    started = time.perf_counter()
    for _ in range(connections):
        client = await connect(("127.0.0.1", port), "bench", client_key(mode), config=config)
        await client.close()
    return (time.perf_counter() - started) / connections


def start_receiver(mode: str, pki: Path | None) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, __file__, "--receiver", mode] + (["--pki", str(pki)] if pki else [])
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY"):
        process.kill()
        raise SystemExit(f"receiver did not start: {line!r}")
    return process, int(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="synod transport benchmark")
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smaller message counts")
    args = parser.parse_args()
    if args.receiver:
        run(receiver(args.receiver, args.pki))
        return

    scale = 0.2 if args.quick else 1.0
    plan = [(100, int(200_000 * scale)), (64 * 1024, int(8_000 * scale))]
    rows: list[Row] = []
    handshake_ms: dict[str, float] = {}
    pki = make_pki()
    modes = ["hmac", "insecure"] + (["tls"] if pki is not None else [])
    for mode in modes:
        process, port = start_receiver(mode, pki)
        try:
            total = 0
            for payload_bytes, count in plan:
                # A short warm-up run, then the measured one.
                warm = max(1, count // 10)
                run(throughput(port, mode, pki, payload_bytes, warm, total))
                total += warm
                seconds = run(throughput(port, mode, pki, payload_bytes, count, total))
                total += count
                rows.append(Row(mode, payload_bytes, count, seconds))
            handshake_ms[mode] = 1000 * run(connection_cost(port, mode, pki, int(300 * scale) or 1))
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=60)

    print(f"# synod transport benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
          f" uvloop; sender and receiver in separate processes on 127.0.0.1")
    print(f"# command: python bench/transport.py{' --quick' if args.quick else ''}")
    print()
    print(f"{'auth':<9} {'payload':>9} {'messages':>9} {'seconds':>8} {'msg/s':>10} {'MB/s':>8}")
    for row in rows:
        size = f"{row.payload_bytes // 1024} KiB" if row.payload_bytes >= 1024 else f"{row.payload_bytes} B"
        print(f"{row.mode:<9} {size:>9} {row.messages:>9} {row.seconds:>8.2f} "
              f"{row.messages_per_s:>10.0f} {row.megabytes_per_s:>8.1f}")
    print()
    for mode, ms in handshake_ms.items():
        print(f"connect + handshake ({mode}): {ms:.2f} ms per connection")
    print("HMAC authentication is per connection: frames after the handshake carry no MAC,")
    print("so it adds no per-message cost on TCP (compare the hmac and insecure rows);")
    print("TLS (when openssl made certificates) encrypts every byte, so it does.")
    if pki is not None:
        shutil.rmtree(pki, ignore_errors=True)


if __name__ == "__main__":
    main()
