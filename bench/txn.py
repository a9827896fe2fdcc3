"""Transactions on real processes vs etcd 3.4's ``txn``, same machine, same run.

Run from the repository root (grpcio is only for the etcd client)::

    uv run --with grpcio python -m bench.txn                 # ~3 minutes
    uv run --with grpcio python -m bench.txn --seconds 3 --in-flight 32 --rounds 3

synod: 2 shards x 3 replica processes (``synod.txn.node:shard_core``, write-ahead
log with fsync, SQLite applied state), on 127.0.0.1. etcd: 3 members
(``bench/refs.py``). Both driven by ``bench/loadgen.py`` (2 load processes,
closed loop, ``--in-flight`` requests outstanding in total).

Every transaction writes two 100-byte values (etcd: one ``txn`` with two puts):

* ``single``: both keys on one shard -> synod's single-shard fast path;
* ``cross``: one key on each shard -> Two-Phase Commit over both Paxos groups;
* ``put``: one key, for the cluster's single-shard writes/s (the issue's 20%
  target for cross-shard transactions is against this figure);

at low contention (1,000 key pairs) and high contention (8 pairs). A
transaction is attempted once: a conflict counts as an abort (loadgen "errors"),
and the abort rate is aborts / (commits + aborts). Other work shares this
machine: the ratio in the same run is the meaningful figure, so both clusters
run side by side (the idle one costs only its heartbeats), each etcd run comes
right after the synod run it is compared with, the whole round is repeated
``--rounds`` times, and the ratios are given per round and as their median.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, run_load

LOAD_PROCESSES = 2


class TxnDriver:
    """A loadgen driver: one transaction per ``op`` against the synod shards."""

    def __init__(self, index: int, *, nodes: dict[str, list[Any]], key_hex: str, replicas: int,
                 kind: str, keys: int, value_bytes: int = 100) -> None:
        self.index = index
        self.nodes = {n: (str(a[0]), int(a[1])) for n, a in nodes.items()}
        self.key = key_hex.encode()   # the user key file holds hex text; that text is the key
        self.replicas = replicas
        self.kind = kind
        self.keys = keys
        self.value = os.urandom(value_bytes // 2).hex()[:value_bytes]
        self.client: Any = None
        # The loadgen's op numbers are i * 1000 + worker, so ``i % keys`` would
        # pin each worker to one key: pick the pair at random instead.
        self.rng = random.Random(index)

    async def setup(self) -> None:
        from synod.core.ids import NodeId
        from synod.txn.client import TxnClient
        from synod.txn.node import shard_map_for
        from synod.txn.shardmap import StaticShardMapSource

        shard_map = shard_map_for(tuple(NodeId(n) for n in self.nodes), self.replicas)
        self.client = TxnClient(StaticShardMapSource(shard_map), self.nodes, principal="bench", key=self.key)

    async def op(self, i: int) -> None:
        pair = self.rng.randrange(self.keys)
        txn = self.client.transaction()
        if self.kind == "put":
            txn.put(f"a{pair:06d}", self.value)
        elif self.kind == "single":
            txn.put(f"a{pair:06d}", self.value)
            txn.put(f"b{pair:06d}", self.value)
        elif self.kind == "cross":
            txn.put(f"a{pair:06d}", self.value)
            txn.put(f"z{pair:06d}", self.value)
        else:
            raise ValueError(self.kind)
        await txn.commit()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def txn_driver(index: int, **options: Any) -> TxnDriver:
    return TxnDriver(index, **options)


def _row(system: str, kind: str, contention: str, result: LoadResult, round_number: int) -> str:
    attempts = result.ops + result.errors
    abort_rate = result.errors / attempts if attempts else 0.0
    return (f"| {round_number} | {system} | {kind} | {contention} | {result.ops_per_s:,.0f} | "
            f"{result.percentile_ms(50):.1f} | {result.percentile_ms(99):.1f} | {abort_rate:.1%} |")


#: One round, in order: every run right next to the one it is compared with,
#: so that both see the same background load on a shared machine: cross-shard
#: transactions right after the single puts they are measured against, then
#: the single-shard transactions, each etcd run right after them. (Cross-shard
#: runs used to follow an etcd run directly, whose write-back after 4 s of
#: fsyncs then weighed on them alone.)
ROUND = (
    ("synod", "put", "low"),
    ("synod", "cross", "low"),
    ("synod", "single", "low"),
    ("etcd", "single", "low"),
    ("synod", "cross", "high"),
    ("synod", "single", "high"),
    ("etcd", "single", "high"),
)
CONTENTION_KEYS = {"low": 1000, "high": 8}
KIND_NAMES = {"put": "single put", "single": "single-shard txn (2 puts)", "cross": "cross-shard txn (2 puts)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every run, interleaved with etcd's")
    parser.add_argument("--no-etcd", action="store_true")
    args = parser.parse_args()

    from synod.txn.node import LocalTxnCluster

    rows = ["| round | system | transaction | contention | txn/s | p50 ms | p99 ms | aborts |",
            "|---|---|---|---|---|---|---|---|"]
    figures: dict[tuple[int, str, str, str], float] = {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="synod-bench-txn-") as workdir:
        cluster = LocalTxnCluster(Path(workdir), shards=2, replicas=3, user="bench")
        cluster.start()
        stack.callback(cluster.stop)
        synod_options = {"nodes": {n: list(a) for n, a in cluster.addresses.items()},
                         "key_hex": cluster.user_key.decode(), "replicas": 3}
        etcd_endpoints: list[str] = []
        if not args.no_etcd:
            from bench.refs import EtcdCluster

            etcd = stack.enter_context(EtcdCluster(members=3, base_port=23790))
            etcd_endpoints = etcd.client_endpoints
        for round_number in range(1, args.rounds + 1):
            for system, kind, contention in ROUND:
                keys = CONTENTION_KEYS[contention]
                if system == "etcd":
                    if not etcd_endpoints:
                        continue
                    result = run_load("bench.drivers_etcd:etcd_driver", in_flight=args.in_flight,
                                      processes=LOAD_PROCESSES, duration_s=args.seconds,
                                      options={"endpoints": etcd_endpoints, "kind": "txn", "keys": keys})
                    name = "etcd 3.4"
                    kind_name = "txn (2 puts)"
                else:
                    result = run_load("bench.txn:txn_driver", in_flight=args.in_flight, processes=LOAD_PROCESSES,
                                      duration_s=args.seconds,
                                      options={**synod_options, "kind": kind, "keys": keys})
                    name = "synod"
                    kind_name = KIND_NAMES[kind]
                figures[(round_number, system, kind, contention)] = result.ops_per_s
                rows.append(_row(name, kind_name, contention, result, round_number))
                print(rows[-1], flush=True)
    print()
    print("\n".join(rows))
    print()
    single_ratios, cross_ratios = [], []
    for round_number in range(1, args.rounds + 1):
        def figure(system: str, kind: str, contention: str = "low", r: int = round_number) -> float:
            return figures.get((r, system, kind, contention), 0.0)
        if figure("etcd", "single"):
            single_ratios.append(figure("synod", "single") / figure("etcd", "single"))
            high = figure("synod", "single", "high") / figure("etcd", "single", "high")
            print(f"round {round_number}: single-shard txn/s synod / etcd = {single_ratios[-1]:.2f} "
                  f"(high contention: {high:.2f})")
        if figure("synod", "put"):
            cross_ratios.append(figure("synod", "cross") / figure("synod", "put"))
            print(f"round {round_number}: cross-shard txn/s / single-shard writes/s = {cross_ratios[-1]:.2f}")
    if single_ratios:
        print(f"median single-shard txn/s synod / etcd = {statistics.median(single_ratios):.2f} (target >= 1)")
    if cross_ratios:
        print(f"median cross-shard / single-shard writes = {statistics.median(cross_ratios):.2f} (target >= 0.20)")


if __name__ == "__main__":
    main()
