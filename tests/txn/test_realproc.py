"""Real processes: 2 shards x 3 replicas on 127.0.0.1, the bank workload from
several clients, SIGKILL of the coordinator's leader and of a participant's
leader (holding prepared transactions under load), restarts; the bank's
invariants must hold."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from synod.core.ids import NodeId
from synod.txn.client import TxnClient
from synod.txn.node import LocalTxnCluster
from synod.txn.shardmap import StaticShardMapSource
from tests.runtime.helpers import run
from tests.txn.bank import INITIAL, BankStats, accounts, final_balances, worker

pytestmark = [pytest.mark.realproc, pytest.mark.slow]


def test_bank_survives_sigkill_of_coordinator_and_participant_leaders(tmp_path: Path) -> None:
    cluster = LocalTxnCluster(tmp_path, shards=2)
    cluster.start()
    keys = accounts(6)

    def client() -> TxnClient:
        return TxnClient(StaticShardMapSource(cluster.shard_map), cluster.addresses, principal="kv",
                         key=cluster.user_key, operation_timeout_s=5.0)

    async def scenario() -> tuple[BankStats, dict[str, int]]:
        clients = [client() for _ in range(4)]
        stats = BankStats()
        stop = asyncio.Event()
        workers = [asyncio.create_task(worker(c, keys, stats, stop, seed)) for seed, c in enumerate(clients)]
        await asyncio.sleep(2.0)
        for group in ("s1", "s2"):     # s1 coordinates most transfers; s2 participates
            victim = clients[0]._leader.get(group) or cluster.shard_map.shard(group).replicas[0]
            cluster.kill(NodeId(victim))
            await asyncio.sleep(1.0)
            cluster.start_node(NodeId(victim))
            await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*workers)
        balances = await final_balances(clients[0], keys)
        for c in clients:
            await c.close()
        return stats, balances

    try:
        stats, balances = run(scenario(), deadline_s=120.0)
    finally:
        cluster.stop()
    assert stats.transfers > 10, stats
    assert stats.bad_audits == [], stats
    assert sum(balances.values()) == INITIAL * len(keys), balances
    assert min(balances.values()) >= 0, balances
