"""Transactions on real processes vs etcd 3.4's ``txn``, same machine, same run.

Run from the repository root (grpcio is only for the etcd client)::

    uv run --with grpcio python -m bench.txn                 # ~3 minutes
    uv run --with grpcio python -m bench.txn --seconds 3 --in-flight 32

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
machine: the ratio in the same run is the meaningful figure.
"""

from __future__ import annotations

import argparse
import os
import random
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


def _row(system: str, kind: str, contention: str, result: LoadResult) -> str:
    attempts = result.ops + result.errors
    abort_rate = result.errors / attempts if attempts else 0.0
    return (f"| {system} | {kind} | {contention} | {result.ops_per_s:,.0f} | {result.percentile_ms(50):.1f} | "
            f"{result.percentile_ms(99):.1f} | {abort_rate:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--no-etcd", action="store_true")
    args = parser.parse_args()

    from synod.txn.node import LocalTxnCluster

    rows = ["| system | transaction | contention | txn/s | p50 ms | p99 ms | aborts |", "|---|---|---|---|---|---|---|"]
    figures: dict[tuple[str, str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="synod-bench-txn-") as workdir:
        cluster = LocalTxnCluster(Path(workdir), shards=2, replicas=3, user="bench")
        cluster.start()
        try:
            options = {"nodes": {n: list(a) for n, a in cluster.addresses.items()},
                       "key_hex": cluster.user_key.decode(), "replicas": 3}
            for kind in ("put", "single", "cross"):
                for contention, keys in (("low", 1000), ("high", 8)):
                    if kind == "put" and contention == "high":
                        continue
                    result = run_load("bench.txn:txn_driver", in_flight=args.in_flight, processes=LOAD_PROCESSES,
                                      duration_s=args.seconds, options={**options, "kind": kind, "keys": keys})
                    figures[("synod", kind, contention)] = result.ops_per_s
                    rows.append(_row("synod", kind, contention, result))
                    print(rows[-1], flush=True)
        finally:
            cluster.stop()
    if not args.no_etcd:
        from bench.refs import EtcdCluster

        with EtcdCluster(members=3, base_port=23790) as etcd:
            for contention, keys in (("low", 1000), ("high", 8)):
                result = run_load("bench.drivers_etcd:etcd_driver", in_flight=args.in_flight,
                                  processes=LOAD_PROCESSES, duration_s=args.seconds,
                                  options={"endpoints": etcd.client_endpoints, "kind": "txn", "keys": keys})
                figures[("etcd", "single", contention)] = result.ops_per_s
                rows.append(_row("etcd 3.4", "txn (2 puts)", contention, result))
                print(rows[-1], flush=True)
    print()
    print("\n".join(rows))
    single = figures.get(("synod", "single", "low"), 0.0)
    if ("etcd", "single", "low") in figures:
        etcd_single = figures[("etcd", "single", "low")]
        print(f"single-shard txn/s: synod / etcd = {single / etcd_single:.2f} (target >= 1)")
    put = figures.get(("synod", "put", "low"), 0.0)
    cross = figures.get(("synod", "cross", "low"), 0.0)
    if put:
        print(f"cross-shard txn/s / single-shard writes/s = {cross / put:.2f} (target >= 0.20)")


if __name__ == "__main__":
    main()
