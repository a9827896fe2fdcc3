"""SWIM gossip on real processes vs HashiCorp Serf, same machine, same run.

Run from the repository root::

    uv run python -m bench.gossip              # N = 5, 10, 25, 50; about 11 minutes
    uv run python -m bench.gossip --quick      # N = 5, 10; about 3 minutes
    uv run python -m bench.gossip --sizes 50 --join-runs 20   # the issue's p99 at N = 50

For each N, first synod (``synod gossip agent``, LAN preset, one process per agent)
then Serf (``serf agent``, its default LAN profile, one process per agent), each
on 127.0.0.1, the first agent started alone and the other N - 1 at once joining it:

* join convergence: from the moment the last agent answers a membership query to
  the moment every agent sees all N alive (also printed: from the launch of the
  last process, which adds the interpreter's start-up for synod); for the largest
  N, ``--join-runs`` fresh clusters (p50 / p99 / max over them, with the count);
* steady state, ``--window-s`` seconds after convergence with no queries running:
  CPU per agent (utime + stime from /proc/<pid>/stat) and bytes sent per agent
  per second (every byte the loopback interface transmitted, from /proc/net/dev
  of a private network namespace, divided by N: UDP and TCP payloads plus UDP/IP
  and link headers, both systems counted the same way);
* false "failed" verdicts: one agent stopped by SIGSTOP for 2 s and then for 5 s
  (SIGCONT by PID); every other agent's view is read every ~0.2 s from the stop
  until 6 s after the SIGCONT, and each agent seen holding it failed counts once;
* detection and dissemination: SIGKILL of one agent, time until EVERY survivor
  marks it failed (median over ``--detect-runs`` kills, a different agent each).

Membership is read from each agent: synod's ``MembersQuery`` datagram (what
``synod members`` sends), Serf's RPC ``members`` command on a kept connection
(what ``serf members -rpc-addr ... -format json`` sends). Polling resolution is
the sweep time, about 0.1-0.3 s on this machine.

When run as root the whole benchmark re-executes itself inside a new network
namespace (``unshare -n``) so that the loopback byte counters hold only its own
traffic; ``--no-netns`` skips that (bytes/s are then not reported).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
from bench.refs import LOOPBACK, ensure_apt, stop_pids

SECRET = b"synod-bench-gossip-secret-0123456789"
POLL_PAUSE_S = 0.1
NETNS_ENV = "SYNOD_BENCH_GOSSIP_NETNS"


# ---------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def loopback_tx_bytes() -> int:
    with open("/proc/net/dev") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    raise RuntimeError("no lo in /proc/net/dev")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    # nearest rank: the smallest value with at least q of the values at or below it
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------- the two systems

ALIVE, FAILED, OTHER = "alive", "failed", "other"


class Cluster(ABC):
    """N agents of one system on loopback; membership views read by polling."""

    system = ""

    def __init__(self, root: Path, size: int, base_port: int) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.base_port = base_port
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.names = [f"n{i:02d}" for i in range(size)]

    def port(self, name: str) -> int:
        return self.base_port + self.names.index(name)

    @abstractmethod
    def command(self, name: str) -> list[str]: ...

    @abstractmethod
    async def view(self, name: str) -> dict[str, str] | None:
        """``name``'s view: member -> alive/failed/other, or None if it did not answer."""

    async def close_views(self) -> None:
        return None

    def launch(self, name: str) -> None:
        self.processes[name] = subprocess.Popen(
            self.command(name), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def live(self) -> list[str]:
        return [n for n in self.names if n in self.processes]

    async def views(self, names: list[str]) -> dict[str, dict[str, str] | None]:
        results = await asyncio.gather(*(self.view(n) for n in names))
        return dict(zip(names, results, strict=True))

    async def wait_answering(self, name: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.view(name) is not None:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.system} {name} does not answer")

    def kill9(self, name: str) -> None:
        process = self.processes.pop(name)
        stop_pids([process.pid], signal.SIGKILL)

    async def stop(self) -> None:
        await self.close_views()
        stop_pids([p.pid for p in self.processes.values()], signal.SIGKILL, timeout_s=5.0)
        self.processes.clear()


class SynodCluster(Cluster):
    system = "synod"

    def __init__(self, root: Path, size: int, base_port: int) -> None:
        super().__init__(root, size, base_port)
        from synod.runtime.auth import Keyring

        self.secret_file = root / "secret"
        self.secret_file.write_bytes(SECRET)
        self.keyring = Keyring.from_secret(SECRET)
        self.synod = str(Path(sys.executable).with_name("synod"))

    def command(self, name: str) -> list[str]:
        args = [self.synod, "gossip", "agent", "--node", name,
                "--bind", f"{LOOPBACK}:{self.port(name)}", "--secret-file", str(self.secret_file),
                "--profile", "lan"]
        if name != self.names[0]:
            args += ["--join", f"{self.names[0]}@{LOOPBACK}:{self.port(self.names[0])}"]
        return args

    async def view(self, name: str) -> dict[str, str] | None:
        from synod.gossip.agent import query_members
        from synod.gossip.messages import MemberStatus

        try:
            reply = await query_members((LOOPBACK, self.port(name)), self.keyring, timeout_s=1.0)
        except (TimeoutError, OSError):
            return None
        statuses = {MemberStatus.ALIVE: ALIVE, MemberStatus.DEAD: FAILED}
        return {row.node: statuses.get(row.status, OTHER) for row in reply.members}


class SerfCluster(Cluster):
    system = "serf"

    def __init__(self, root: Path, size: int, base_port: int) -> None:
        super().__init__(root, size, base_port)
        self.serf = ensure_apt("serf", "serf")
        self._rpc: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                   msgpack.Unpacker]] = {}
        self._seq = 0

    def rpc_port(self, name: str) -> int:
        return self.port(name) + 1000

    def command(self, name: str) -> list[str]:
        args = [self.serf, "agent", "-node", name, "-bind", f"{LOOPBACK}:{self.port(name)}",
                "-rpc-addr", f"{LOOPBACK}:{self.rpc_port(name)}", "-log-level", "err"]
        if name != self.names[0]:
            args += ["-join", f"{LOOPBACK}:{self.port(self.names[0])}"]
        return args

    async def _request(self, name: str, command: str,
                       body: dict[str, object] | None) -> dict[str, object] | None:
        """One Serf RPC request (msgpack header, optional body) on a kept connection;
        returns the response body, or {} for commands with none."""
        connection = self._rpc.get(name)
        if connection is None:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(LOOPBACK, self.rpc_port(name)), 1.0)
            connection = (reader, writer, msgpack.Unpacker(raw=False, unicode_errors="surrogateescape"))
            self._rpc[name] = connection
            if await self._exchange(connection, "handshake", {"Version": 1}, False) is None:
                return None
        return await self._exchange(connection, command, body, command == "members")

    async def _exchange(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                msgpack.Unpacker],
                        command: str, body: dict[str, object] | None,
                        has_body: bool) -> dict[str, object] | None:
        reader, writer, unpacker = connection
        self._seq += 1
        payload = msgpack.packb({"Command": command, "Seq": self._seq})
        if body is not None:
            payload += msgpack.packb(body)
        writer.write(payload)
        await writer.drain()
        wanted = 2 if has_body else 1
        objects: list[dict[str, object]] = []
        while len(objects) < wanted:
            for item in unpacker:
                objects.append(item)
            if len(objects) >= wanted:
                break
            chunk = await asyncio.wait_for(reader.read(65536), 1.0)
            if not chunk:
                raise ConnectionError("serf rpc closed")
            unpacker.feed(chunk)
        header = objects[0]
        if header.get("Error"):
            raise RuntimeError(f"serf rpc {command}: {header['Error']}")
        return objects[1] if has_body else {}

    async def view(self, name: str) -> dict[str, str] | None:
        try:
            body = await self._request(name, "members", None)
        except (TimeoutError, OSError, ConnectionError, ValueError):
            old = self._rpc.pop(name, None)
            if old is not None:
                old[1].close()
            return None
        if body is None:
            return None
        members = body.get("Members", [])
        assert isinstance(members, list)
        statuses = {"alive": ALIVE, "failed": FAILED}
        return {m["Name"]: statuses.get(m["Status"], OTHER) for m in members}

    def kill9(self, name: str) -> None:
        old = self._rpc.pop(name, None)
        if old is not None:
            old[1].close()
        super().kill9(name)

    async def close_views(self) -> None:
        for _, writer, _ in self._rpc.values():
            writer.close()
        self._rpc.clear()


# ---------------------------------------------------------------- experiments


@dataclass
class Figures:
    system: str
    size: int
    join_from_ready_s: list[float] = field(default_factory=list)
    join_from_launch_s: list[float] = field(default_factory=list)
    join_timeouts: int = 0
    cpu_percent: float = float("nan")
    bytes_per_s: float = float("nan")
    false_failed: dict[float, int] = field(default_factory=dict)
    detect_s: list[float] = field(default_factory=list)
    detect_timeouts: int = 0


async def start_and_converge(cluster: Cluster, timeout_s: float) -> tuple[float, float] | None:
    """Start the seed, then the other N - 1 at once; (from last ready, from last
    launch) to everyone seeing all N alive, or None on time-out."""
    first = cluster.names[0]
    cluster.launch(first)
    await cluster.wait_answering(first)
    for name in cluster.names[1:]:
        cluster.launch(name)
    launched = time.monotonic()
    ready: dict[str, float] = {first: launched}
    deadline = launched + timeout_s
    everyone = set(cluster.names)
    while time.monotonic() < deadline:
        views = await cluster.views(cluster.names)
        now = time.monotonic()
        for name, view in views.items():
            if view is not None and name not in ready:
                ready[name] = now
        if len(ready) == cluster.size and all(
                v is not None and {m for m, s in v.items() if s == ALIVE} >= everyone
                for v in views.values()):
            last_ready = max(ready.values())
            return max(0.0, now - last_ready), now - launched
        await asyncio.sleep(POLL_PAUSE_S)
    return None


async def steady_state(cluster: Cluster, window_s: float, count_bytes: bool,
                       figures: Figures) -> None:
    await cluster.close_views()  # no query traffic inside the window
    pids = [cluster.pid(n) for n in cluster.live()]
    cpu0 = sum(cpu_seconds(p) for p in pids)
    tx0 = loopback_tx_bytes() if count_bytes else 0
    started = time.monotonic()
    await asyncio.sleep(window_s)
    elapsed = time.monotonic() - started
    cpu1 = sum(cpu_seconds(p) for p in pids)
    figures.cpu_percent = 100.0 * (cpu1 - cpu0) / elapsed / len(pids)
    if count_bytes:
        figures.bytes_per_s = (loopback_tx_bytes() - tx0) / elapsed / len(pids)


async def stall(cluster: Cluster, victim: str, stall_s: float, after_s: float) -> int:
    """SIGSTOP ``victim`` for ``stall_s``; agents seen holding it failed until
    ``after_s`` after the SIGCONT."""
    others = [n for n in cluster.live() if n != victim]
    accusers: set[str] = set()
    pid = cluster.pid(victim)
    os.kill(pid, signal.SIGSTOP)
    resume_at = time.monotonic() + stall_s
    try:
        while time.monotonic() < resume_at:
            for name, view in (await cluster.views(others)).items():
                if view is not None and view.get(victim) == FAILED:
                    accusers.add(name)
            await asyncio.sleep(min(POLL_PAUSE_S, max(0.0, resume_at - time.monotonic())))
    finally:
        os.kill(pid, signal.SIGCONT)
    until = time.monotonic() + after_s
    while time.monotonic() < until:
        for name, view in (await cluster.views(others)).items():
            if view is not None and view.get(victim) == FAILED:
                accusers.add(name)
        await asyncio.sleep(POLL_PAUSE_S)
    return len(accusers)


async def detect(cluster: Cluster, victim: str, timeout_s: float) -> float | None:
    """SIGKILL ``victim``; seconds until every survivor holds it failed."""
    survivors = [n for n in cluster.live() if n != victim]
    killed = time.monotonic()
    cluster.kill9(victim)
    pending = set(survivors)
    while time.monotonic() - killed < timeout_s:
        views = await cluster.views(sorted(pending))
        for name, view in views.items():
            if view is not None and view.get(victim) == FAILED:
                pending.discard(name)
        if not pending:
            return time.monotonic() - killed
        await asyncio.sleep(POLL_PAUSE_S)
    return None


async def run_system(kind: type[Cluster], size: int, args: argparse.Namespace, root: Path,
                     count_bytes: bool, join_runs: int) -> Figures:
    figures = Figures(system=kind.system, size=size)
    base_port = 21000 if kind is SynodCluster else 23000
    for run in range(join_runs):
        cluster = kind(root / f"{kind.system}-{size}-{run}", size, base_port)
        try:
            joined = await start_and_converge(cluster, args.join_timeout_s)
            if joined is None:
                figures.join_timeouts += 1
                continue
            figures.join_from_ready_s.append(joined[0])
            figures.join_from_launch_s.append(joined[1])
            if run > 0:
                continue
            await asyncio.sleep(args.settle_s)
            await steady_state(cluster, args.window_s, count_bytes, figures)
            for stall_s in (2.0, 5.0):
                figures.false_failed[stall_s] = await stall(
                    cluster, cluster.names[1], stall_s, args.after_stall_s)
                await asyncio.sleep(2.0)
            runs = min(args.detect_runs, size - 2)
            for i in range(runs):
                seconds = await detect(cluster, cluster.names[size - 1 - i], args.detect_timeout_s)
                if seconds is None:
                    figures.detect_timeouts += 1
                else:
                    figures.detect_s.append(seconds)
        finally:
            await cluster.stop()
        print(f"  {kind.system} N={size}: done ({time.strftime('%H:%M:%S')})", flush=True)
    return figures


# ---------------------------------------------------------------- report


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def join_text(f: Figures) -> str:
    runs = f.join_from_ready_s
    if not runs:
        return f"none ({f.join_timeouts} timeouts)"
    text = f"{statistics.median(runs):.2f}"
    if len(runs) > 1:
        text += f" p99 {percentile(runs, 0.99):.2f} max {max(runs):.2f}"
    text += f" ({len(runs)} runs"
    if f.join_timeouts:
        text += f", {f.join_timeouts} timed out"
    return text + ")"


def print_table(results: list[tuple[Figures, Figures]]) -> None:
    header = (f"{'N':>3} {'system':>6} | {'join s (from last ready)':>34} | "
              f"{'from launch s':>25} | {'detect s (median, runs)':>25} | "
              f"{'CPU %/agent':>11} | {'bytes/s/agent':>13} | {'false failed 2s/5s':>18}")
    print(header)
    print("-" * len(header))
    for pair in results:
        for f in pair:
            detect = (f"{statistics.median(f.detect_s):.2f} ({len(f.detect_s)}"
                      + (f", {f.detect_timeouts} t/o" if f.detect_timeouts else "") + ")"
                      if f.detect_s else f"none ({f.detect_timeouts} t/o)")
            launch = (f"{statistics.median(f.join_from_launch_s):.2f}"
                      if f.join_from_launch_s else "n/a")
            if len(f.join_from_launch_s) > 1:
                launch += (f" p99 {percentile(f.join_from_launch_s, 0.99):.2f}"
                           f" max {max(f.join_from_launch_s):.2f}")
            false = f"{f.false_failed.get(2.0, '-')}/{f.false_failed.get(5.0, '-')}"
            print(f"{f.size:>3} {f.system:>6} | {join_text(f):>34} | {launch:>25} | "
                  f"{detect:>25} | {fmt(f.cpu_percent):>11} | {fmt(f.bytes_per_s, 0):>13} | "
                  f"{false:>18}")
        synod, serf = pair
        for f in pair:
            print(f"{'':>3} {f.system:>6} | detect runs s: "
                  + " ".join(f"{x:.2f}" for x in f.detect_s))
        if synod.detect_s and serf.detect_s and serf.bytes_per_s == serf.bytes_per_s:
            print(f"{'':>3} {'ratio':>6} | detect synod/serf "
                  f"{statistics.median(synod.detect_s) / statistics.median(serf.detect_s):.2f}, "
                  f"bytes/s synod/serf {synod.bytes_per_s / serf.bytes_per_s:.2f}")
    print(flush=True)


async def main_async(args: argparse.Namespace, count_bytes: bool) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    largest = max(sizes)
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
          f"{platform.platform()}; {os.cpu_count()} cores; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    serf_version = subprocess.run([ensure_apt("serf", "serf"), "version"], capture_output=True,
                                  text=True, check=False).stdout.splitlines()
    print(f"serf {serf_version[0] if serf_version else '?'} (default LAN profile); synod LAN "
          f"preset; bytes: {'loopback tx of a private network namespace' if count_bytes else 'not counted (--no-netns)'}",
          flush=True)
    results: list[tuple[Figures, Figures]] = []
    with tempfile.TemporaryDirectory(prefix="synod-bench-gossip-") as tmp:
        root = Path(tmp)
        for size in sizes:
            runs = args.join_runs if size == largest else 1
            pair = (await run_system(SynodCluster, size, args, root, count_bytes, runs),
                    await run_system(SerfCluster, size, args, root, count_bytes, runs))
            results.append(pair)
            print_table(results[-1:])
    print("summary")
    print_table(results)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def in_netns() -> bool:
    return os.environ.get(NETNS_ENV) == "1"


def reexec_in_netns() -> int | None:
    """Run this benchmark again inside a fresh network namespace (root only); the
    exit status, or None when that is not possible here."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return None
    inner = " ".join(["ip link set lo up &&", "exec", *map(_quote, [sys.executable, "-m",
                                                                   "bench.gossip", *sys.argv[1:]])])
    env = dict(os.environ, **{NETNS_ENV: "1"})
    return subprocess.run(["unshare", "-n", "sh", "-c", inner], env=env, check=False).returncode


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default="5,10,25,50")
    parser.add_argument("--quick", action="store_true", help="N = 5, 10; shorter windows")
    parser.add_argument("--join-runs", type=int, default=4,
                        help="fresh clusters at the largest N for join convergence")
    parser.add_argument("--detect-runs", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--after-stall-s", type=float, default=6.0)
    parser.add_argument("--join-timeout-s", type=float, default=90.0)
    parser.add_argument("--detect-timeout-s", type=float, default=60.0)
    parser.add_argument("--no-netns", action="store_true",
                        help="do not re-run inside a private network namespace")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.join_runs, args.detect_runs = "5,10", 1, 2
        args.window_s, args.after_stall_s = 6.0, 5.0
    if not args.no_netns and not in_netns():
        status = reexec_in_netns()
        if status is not None:
            raise SystemExit(status)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args, count_bytes=in_netns()))


if __name__ == "__main__":
    main()
