"""Multi-Paxos KV on real processes vs etcd 3.4, same machine, same run, same load.

Run from the repository root (grpcio is only for the etcd client)::

    uv run --with grpcio python -m bench.paxos            # everything, ~5 minutes
    uv run --with grpcio python -m bench.paxos --seconds 3 --soak-s 20 --failovers 2

What it prints, for synod (3 replica processes, ``synod.paxos.server:kv_factory``,
write-ahead log with fsync) and for etcd 3.4 (3 members, ``bench/refs.py``), both
driven by ``bench/loadgen.py`` (2 load processes, closed loop):

* writes/s and p50/p99 latency at 1, 16, 64 and 256 requests in flight (100-byte
  values over 1,000 keys), and the ratio synod / etcd;
* reads/s at 256 in flight: synod lease reads, etcd linearizable reads;
* the unavailability window after SIGKILL of the leader: from the kill to the
  first write acknowledged after it, with 16 writers (and lease readers, whose
  history is checked for linearizability) running throughout; the killed node is
  restarted between rounds;
* a soak at 256 in flight: leader changes during it (none expected).

Also the load generator's own ceiling (a no-op driver), which every figure must
sit well below for the generator not to be the bottleneck. Other work shares this
machine: absolute figures are noisy, the ratio in the same run is what counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import random
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, run_load

IN_FLIGHT = (1, 16, 64, 256)
LOAD_PROCESSES = 2


# ---------------------------------------------------------------- synod


def synod_options(cluster: Any) -> dict[str, Any]:
    info = cluster.connection()
    return {"nodes": {k: list(v) for k, v in info.nodes.items()}, "principal": info.principal,
            "key_hex": info.key.hex() if info.key else None, "insecure": info.insecure}


def synod_statuses(cluster: Any) -> dict[str, Any]:
    from synod.core.errors import SynodError

    statuses = {}
    with cluster.sync_client() as client:
        for node in cluster.nodes:
            if cluster.is_running(node):
                with contextlib.suppress(OSError, SynodError):
                    statuses[node] = client.status(node)
    return statuses


def wait_caught_up(cluster: Any, node: str, timeout_s: float = 60.0) -> float:
    """Wait until ``node`` follows the leader at its chosen index; the time then.

    The next round must not start before: with a node still catching up, a
    second kill would leave no majority that knows the log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = synod_statuses(cluster)
        leaders = [s for s in statuses.values() if s.role == "leader"]
        mine = statuses.get(node)
        if leaders and mine is not None and mine.leader == leaders[0].node and (
                mine.chosen_index >= leaders[0].chosen_index):
            return time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"{node} did not catch up within {timeout_s} s")


async def failover_window(
    write: Callable[[str, str], Awaitable[None]],
    read: Callable[[str], Awaitable[Any]] | None,
    kill: Callable[[], None],
    *,
    writers: int = 16,
    before_s: float = 1.5,
    after_s: float = 4.0,
    recorder: Any = None,
) -> tuple[float, float]:
    """Run writers (and readers), kill the leader; return (seconds from the kill
    to the first write acknowledged after it, longest gap between write acks)."""
    acks: list[float] = []
    stop = False
    counter = 0
    rng = random.Random(7)

    async def writer(index: int) -> None:
        nonlocal counter
        while not stop:
            counter += 1
            key = f"f{rng.randrange(20)}"
            value = f"{index}-{counter}"
            op = recorder.invoke(index, ("put", key, value), time.monotonic()) if recorder is not None else None
            try:
                await write(key, value)
            except Exception as error:
                if recorder is not None:
                    recorder.info(op, time.monotonic(), repr(error))
                await asyncio.sleep(0.01)
                continue
            now = time.monotonic()
            acks.append(now)
            if recorder is not None:
                recorder.ok(op, None, now)

    async def reader(index: int) -> None:
        assert read is not None
        while not stop:
            key = f"f{rng.randrange(20)}"
            op = recorder.invoke(1000 + index, ("get", key), time.monotonic()) if recorder is not None else None
            try:
                value = await read(key)
            except Exception as error:
                if recorder is not None:
                    recorder.info(op, time.monotonic(), repr(error))
                await asyncio.sleep(0.01)
                continue
            if recorder is not None:
                recorder.ok(op, value, time.monotonic())

    tasks = [asyncio.create_task(writer(i)) for i in range(writers)]
    if read is not None:
        tasks += [asyncio.create_task(reader(i)) for i in range(writers // 2)]
    await asyncio.sleep(before_s)
    killed_at = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, kill)
    await asyncio.sleep(after_s)
    stop = True
    await asyncio.gather(*tasks)
    acks.sort()
    after = [t for t in acks if t > killed_at]
    if not after:
        return float("inf"), float("inf")
    # The window: the longest stretch with no write acknowledged that ends after
    # the kill (a write in flight at the kill may still be acknowledged just after
    # it, by the old leader's last reply; that does not end the outage).
    gaps = [b - a for a, b in itertools.pairwise(acks) if b > killed_at]
    first = after[0] - killed_at
    return max(gaps, default=first), first


class SynodSide:
    """synod's 3 replica processes and how to measure them."""

    name = "synod"

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.options = synod_options(cluster)
        self.spec = "bench.drivers_synod:synod_driver"

    def writes(self, in_flight: int, seconds: float) -> LoadResult:
        return run_load(self.spec, in_flight=in_flight, processes=LOAD_PROCESSES, duration_s=seconds,
                        options={**self.options, "kind": "put"})

    def reads(self, in_flight: int, seconds: float) -> LoadResult:
        return run_load(self.spec, in_flight=in_flight, processes=LOAD_PROCESSES, duration_s=seconds,
                        options={**self.options, "kind": "get", "mode": "lease"})

    def failover(self, recorder: Any) -> tuple[str, tuple[float, float]]:
        from synod.paxos.client import ClientConfig, PaxosClient
        from synod.paxos.messages import ReadMode

        cluster = self.cluster
        leader: str = cluster.wait_leader()
        info = cluster.connection()

        async def measure() -> tuple[float, float]:
            config = ClientConfig(timeout_s=5.0, attempt_timeout_s=0.5)
            async with PaxosClient(info.nodes, config=config, **info.client_options()) as client:
                await client.wait_leader()
                return await failover_window(
                    lambda k, v: client.put(k, v),
                    lambda k: client.get(k, mode=ReadMode.LEASE),
                    lambda: cluster.kill(leader), recorder=recorder)

        measured = asyncio.run(measure())
        restarted_at = time.monotonic()
        cluster.restart(leader)
        caught_up_s = wait_caught_up(cluster, leader) - restarted_at
        print(f"  synod restarted {leader}: caught up with the leader {caught_up_s:.1f} s after the restart",
              flush=True)
        return leader, measured


def etcd_leader_index(endpoints: list[str]) -> int:
    """Which member leads, from Maintenance/Status (header.member_id vs leader)."""
    import grpc
    from bench.etcd_client import parse

    for index, endpoint in enumerate(endpoints):
        with grpc.insecure_channel(endpoint) as channel:
            status = channel.unary_unary("/etcdserverpb.Maintenance/Status",
                                         request_serializer=lambda b: b, response_deserializer=lambda b: b)
            try:
                reply = parse(status(b"", timeout=2.0))
            except grpc.RpcError:
                continue
            member = parse(reply[1][0])[2][0]
            if reply.get(4, [0])[0] == member:
                return index
    raise RuntimeError("no etcd leader found")


class EtcdSide:
    """etcd 3.4's 3 members and how to measure them."""

    name = "etcd"

    def __init__(self, etcd: Any, port: int) -> None:
        self.etcd = etcd
        self.port = port
        self.endpoints: list[str] = etcd.client_endpoints
        self.spec = "bench.drivers_etcd:etcd_driver"

    def writes(self, in_flight: int, seconds: float) -> LoadResult:
        return run_load(self.spec, in_flight=in_flight, processes=LOAD_PROCESSES, duration_s=seconds,
                        options={"endpoints": self.endpoints, "kind": "put"})

    def reads(self, in_flight: int, seconds: float) -> LoadResult:
        return run_load(self.spec, in_flight=in_flight, processes=LOAD_PROCESSES, duration_s=seconds,
                        options={"endpoints": self.endpoints, "kind": "get"})

    def failover(self, recorder: Any) -> tuple[str, tuple[float, float]]:
        from bench.etcd_client import EtcdClient
        from bench.refs import wait_port

        leader = etcd_leader_index(self.endpoints)
        other = self.endpoints[(leader + 1) % len(self.endpoints)]

        async def measure() -> tuple[float, float]:
            client = EtcdClient(other)
            try:
                await client.put(b"warm", b"up")
                return await failover_window(
                    lambda k, v: client.put(k.encode(), v.encode()), None,
                    lambda: self.etcd.kill_member(leader))
            finally:
                await client.close()

        measured = asyncio.run(measure())
        self.etcd.start_member(leader)
        wait_port(self.port + 2 * leader)
        time.sleep(2.0)
        return f"etcd{leader}", measured


def run_all(args: argparse.Namespace, sides: list[Any]) -> dict[str, dict[str, Any]]:
    """Every measurement, alternating the systems point by point so that the
    machine's background load hits both alike."""
    from synod.check.history import HistoryRecorder
    from synod.check.linearizability import check_linearizability

    results: dict[str, dict[str, Any]] = {side.name: {"writes": {}, "failovers": []} for side in sides}
    for in_flight in IN_FLIGHT:
        for side in sides:
            result = side.writes(in_flight, args.seconds)
            results[side.name]["writes"][in_flight] = result
            print(f"  {side.name:5} writes {in_flight:4d} in flight: {result.summary()}", flush=True)
    for side in sides:
        result = side.reads(256, args.seconds)
        results[side.name]["reads"] = result
        print(f"  {side.name:5} reads   256 in flight: {result.summary()}", flush=True)
    synod = sides[0]
    if args.soak_s > 0:
        before = synod_statuses(synod.cluster)
        soak = synod.writes(256, args.soak_s)
        after = synod_statuses(synod.cluster)
        ballots = {s.ballot for s in before.values()} | {s.ballot for s in after.values()}
        elections = sum(s.elections_started for s in after.values()) - sum(
            s.elections_started for s in before.values())
        results["synod"]["soak"] = (soak, len(ballots) != 1, elections)
        print(f"  synod soak {args.soak_s:.0f} s at 256: {soak.summary()}  leader changed: {len(ballots) != 1}"
              f"  elections started: {elections}", flush=True)
    recorder = HistoryRecorder()
    for round_ in range(args.failovers):
        for side in sides:
            killed, (window, first) = side.failover(recorder if side is synod else None)
            results[side.name]["failovers"].append(window)
            print(f"  {side.name:5} failover {round_ + 1}: SIGKILL {killed}: no write acknowledged for "
                  f"{window * 1000:.0f} ms (first ack after the kill at {first * 1000:.0f} ms)", flush=True)
    if args.failovers:
        verdict = check_linearizability(recorder.history())
        results["synod"]["failover_history"] = (len(recorder.history()), verdict.ok)
    return results


# ---------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b else "  n/a"


def report(results: dict[str, dict[str, Any]], ceiling: LoadResult) -> None:
    synod, etcd = results["synod"], results.get("etcd")
    print()
    print(f"load generator ceiling (no-op driver, 256 in flight, {LOAD_PROCESSES} processes): "
          f"{ceiling.ops_per_s:,.0f} ops/s")
    print()
    print("| in flight | synod writes/s | p50 ms | p99 ms | etcd writes/s | p50 ms | p99 ms | synod/etcd |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(str(n), synod["writes"][n], etcd["writes"][n] if etcd else None) for n in IN_FLIGHT]
    rows.append(("reads 256 (synod lease; etcd linearizable)", synod["reads"], etcd["reads"] if etcd else None))
    for label, s, e in rows:
        line = f"| {label} | {s.ops_per_s:,.0f} | {s.percentile_ms(50):.2f} | {s.percentile_ms(99):.2f} | "
        if e is None:
            line += "- | - | - | - |"
        else:
            line += (f"{e.ops_per_s:,.0f} | {e.percentile_ms(50):.2f} | {e.percentile_ms(99):.2f} | "
                     f"{ratio(s.ops_per_s, e.ops_per_s)} |")
        print(line)
    print()
    for name, side in results.items():
        if side["failovers"]:
            windows = ", ".join(f"{w * 1000:.0f}" if w != float("inf") else "none acknowledged in 4 s"
                                for w in side["failovers"])
            print(f"{name:5} unavailability after SIGKILL of the leader (ms, per round): {windows}")
    if "soak" in synod:
        soak, changed, elections = synod["soak"]
        print(f"synod soak at 256 in flight: {soak.ops_per_s:,.0f} writes/s, errors {soak.errors}, "
              f"leader changed: {changed}, elections started: {elections}")
    if "failover_history" in synod:
        count, ok = synod["failover_history"]
        print(f"synod failover history ({count} operations, lease reads included) linearizable: {ok}")


def main() -> None:
    from bench.refs import EtcdCluster

    from synod.cli.cluster import LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per load point")
    parser.add_argument("--soak-s", type=float, default=60.0, help="synod soak at 256 in flight (0: skip)")
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--skip-etcd", action="store_true")
    parser.add_argument("--etcd-port", type=int, default=23790)
    args = parser.parse_args()
    print(f"bench/paxos.py  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}  "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    ceiling = run_load("bench.loadgen:noop_driver", in_flight=256, processes=LOAD_PROCESSES, duration_s=2)
    root = Path(tempfile.mkdtemp(prefix="synod-bench-paxos-"))
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(LocalCluster(root / "cluster", 3))
        cluster.wait_leader()
        sides: list[Any] = [SynodSide(cluster)]
        if not args.skip_etcd:
            etcd = stack.enter_context(EtcdCluster(members=3, base_port=args.etcd_port))
            time.sleep(2.0)
            sides.append(EtcdSide(etcd, args.etcd_port))
        results = run_all(args, sides)
    report(results, ceiling)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
