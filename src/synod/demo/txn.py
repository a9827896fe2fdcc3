"""Tour steps for transactions: 2PC over Paxos groups in the simulator (with a
planted bug caught), then on six real processes with a leader killed."""

from __future__ import annotations

import asyncio
import time

import synod.txn.scenarios  # noqa: F401  (registers the "txn" scenario)
from synod.core.ids import NodeId
from synod.demo.tour import Step, StepContext
from synod.sim.scenarios import run_scenario
from synod.txn.client import Transaction, TxnClient
from synod.txn.errors import ConflictError, TxnError
from synod.txn.node import LocalTxnCluster
from synod.txn.shardmap import StaticShardMapSource


def _simulation(context: StepContext) -> None:
    started = time.monotonic()
    results = [run_scenario("txn", seed, {"chaos_ms": "2500", "heal_ms": "3000"}) for seed in range(2)]
    passed = sum(r.ok for r in results)
    committed = sum(int(r.statistics.get("txns_ok", 0)) for r in results)
    context.say(f"2 seeds of 2 shards x 3 replicas under loss, partitions, crashes and leader churn "
                f"({time.monotonic() - started:.1f} s, {committed} transactions committed)")
    context.check("bank total constant, audits consistent, list-append serializable, nothing in doubt",
                  passed == len(results), f"{passed} of {len(results)} seeds passed")
    caught = None
    tried = 0
    for seed in range(6):
        tried += 1
        planted = run_scenario("txn", seed, {"chaos_ms": "2500", "heal_ms": "3000"},
                               mutant="txn.commit_without_prepare")
        if not planted.ok:
            caught = planted
            break
    context.check("a planted bug (a participant commits without a prepare record) is caught",
                  caught is not None,
                  f"caught on seed {caught.seed} ({tried} tried): {caught.violations[0].splitlines()[0][:90]}; "
                  f"replay: synod sim txn --seed {caught.seed} --mutant txn.commit_without_prepare "
                  "-o chaos_ms=2500 -o heal_ms=3000" if caught is not None else f"not caught in {tried} seeds")


async def _bank(context: StepContext, cluster: LocalTxnCluster) -> None:
    client = TxnClient(StaticShardMapSource(cluster.shard_map), cluster.addresses, principal="kv",
                       key=cluster.user_key)
    try:
        await client.put("alice", "100")
        await client.put("zoe", "0")

        async def transfer(t: Transaction) -> None:
            alice, zoe = int(await t.get("alice") or 0), int(await t.get("zoe") or 0)
            t.put("alice", str(alice - 10))
            t.put("zoe", str(zoe + 10))

        for _ in range(3):
            await client.run(transfer)
        context.check("cross-shard transfers commit (alice on s1, zoe on s2)",
                      (await client.get("alice"), await client.get("zoe")) == ("70", "30"))
        older = client.transaction(ts=1)
        younger = client.transaction(ts=2)
        await younger.get("alice")
        await older.get("alice")
        older.put("alice", "71")
        await older.commit()
        try:
            younger.put("alice", "0")
            await younger.commit()
            context.check("an older transaction wounds a younger one", False, "the younger one committed")
        except ConflictError as error:
            context.check("an older transaction wounds a younger one; the younger gets a conflict naming the key",
                          error.key == "alice", f"ConflictError(key={error.key!r}), retryable={error.retryable}")
        leader = client._leader.get("s1") or cluster.shard_map.shard("s1").replicas[0]
        cluster.kill(NodeId(leader))
        started = time.monotonic()
        await client.run(transfer)
        context.check("after SIGKILL of shard s1's leader, a transfer commits",
                      await client.get("zoe") == "40", f"{time.monotonic() - started:.2f} s after the kill")
        cluster.start_node(NodeId(leader))
    except TxnError as error:
        context.check("the bank on real processes", False, f"{type(error).__name__}: {error}")
    finally:
        await client.close()


def _real_processes(context: StepContext) -> None:
    cluster = LocalTxnCluster(context.workdir / "txn", shards=2, replicas=3)
    cluster.start()
    context.say("six processes on 127.0.0.1: shards s1 [a..n) and s2 [n..) with three replicas each")
    try:
        asyncio.run(_bank(context, cluster))
    finally:
        cluster.stop()


STEPS = (
    Step(
        title="transactions in the simulator",
        explanation="""
synod.txn splits the keys into shards, each a Paxos group, and runs serializable
transactions across them: strict two-phase locking with wound-wait on each shard
leader, Two-Phase Commit whose every step is chosen in a Paxos log. The simulator
runs the bank and list-append workloads under every fault it has.""",
        run=_simulation,
    ),
    Step(
        title="transactions on real processes",
        explanation="""
The same cores served by the asyncio runtime: a client moves money between shards,
two transactions conflict, and a shard leader is killed with SIGKILL.""",
        run=_real_processes,
    ),
)
