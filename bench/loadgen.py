"""One closed-loop load generator for every benchmark and every system compared.

The same generator drives synod and the reference system (etcd, ZooKeeper, ...),
so the client is not what differs. It runs ``processes`` worker processes; each
keeps ``in_flight / processes`` requests outstanding on its own asyncio loop (uvloop
when available) for ``duration_s`` after a warm-up, and records every latency.

A *driver* is named by ``"module:factory"``; the factory is called in each worker as
``factory(worker_index, **options)`` and returns an object with
``async setup()``, ``async op(i) -> None`` and ``async close()``.

How we check the generator is not the bottleneck: ``--self-test`` runs a driver
whose ``op`` is a no-op ``await asyncio.sleep(0)``; its ops/s is the generator's
ceiling on this machine, and a benchmark's figure must sit well below it.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadResult:
    ops: int
    errors: int
    duration_s: float
    latencies_ms: list[float]

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.duration_s if self.duration_s else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self) -> str:
        return (f"{self.ops_per_s:10.0f} ops/s  p50 {self.percentile_ms(50):7.2f} ms  "
                f"p99 {self.percentile_ms(99):7.2f} ms  errors {self.errors}")


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


async def _worker_main(spec: str, index: int, concurrency: int, warmup_s: float,
                       duration_s: float, options: dict[str, Any]) -> tuple[int, int, list[float]]:
    driver = _load(spec)(index, **options)
    await driver.setup()
    latencies: list[float] = []
    errors = 0
    counter = 0
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def loop() -> None:
        nonlocal errors, counter
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            counter += 1
            try:
                await driver.op(counter * 1000 + index)
            except Exception:
                errors += 1
                await asyncio.sleep(0.01)
                continue
            done = time.perf_counter()
            if now >= measure_from and done <= stop_at:
                latencies.append((done - now) * 1000.0)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    await driver.close()
    return len(latencies), errors, latencies


def _worker(spec: str, index: int, concurrency: int, warmup_s: float, duration_s: float,
            options: dict[str, Any], out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.put(asyncio.run(_worker_main(spec, index, concurrency, warmup_s, duration_s, options)))


def run_load(spec: str, *, in_flight: int, processes: int = 2, duration_s: float = 5.0,
             warmup_s: float = 1.0, options: dict[str, Any] | None = None) -> LoadResult:
    """Run the driver ``spec`` with ``in_flight`` requests outstanding in total."""
    processes = max(1, min(processes, in_flight))
    shares = [in_flight // processes + (1 if i < in_flight % processes else 0) for i in range(processes)]
    context = mp.get_context("spawn")
    out = context.Queue()
    workers = [
        context.Process(target=_worker, args=(spec, i, shares[i], warmup_s, duration_s, options or {}, out))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=duration_s + warmup_s + 120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    ops = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    latencies = [x for r in results for x in r[2]]
    return LoadResult(ops=ops, errors=errors, duration_s=duration_s, latencies_ms=latencies)


class NoopDriver:
    """The generator's own ceiling (see the module comment)."""

    def __init__(self, index: int) -> None:
        self.index = index

    async def setup(self) -> None:
        pass

    async def op(self, i: int) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        pass


def noop_driver(index: int) -> NoopDriver:
    return NoopDriver(index)


if __name__ == "__main__":
    result = run_load("bench.loadgen:noop_driver", in_flight=256, processes=2, duration_s=3)
    print("load generator ceiling (no-op driver, 256 in flight, 2 processes):", result.summary())
    print("median", statistics.median(result.latencies_ms))
