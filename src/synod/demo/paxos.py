"""Tour step for Multi-Paxos: a leader elected, killed with SIGKILL and replaced,
with no acknowledged write lost."""

from __future__ import annotations

import contextlib
import time

from synod.cli.cluster import LocalCluster
from synod.demo.tour import Step, StepContext

WRITES = 300


def _paxos(context: StepContext) -> None:
    workdir = context.workdir / "paxos"
    with LocalCluster(workdir, 3) as cluster:
        leader = cluster.wait_leader(timeout_s=30.0)
        context.check("3 replica processes elect a leader", bool(leader), f"leader {leader}")
        acknowledged: dict[str, str] = {}
        with cluster.sync_client() as client:
            started = time.monotonic()
            for i in range(WRITES):
                client.put(f"k{i:04d}", f"v{i}")
                acknowledged[f"k{i:04d}"] = f"v{i}"
            elapsed = time.monotonic() - started
        context.say(f"{WRITES} acknowledged writes (one at a time) in {elapsed:.2f} s")
        cluster.kill(leader)
        killed_at = time.monotonic()
        context.say(f"kill -9 {leader} (pid {cluster.pid(leader) if cluster.is_running(leader) else 'gone'})")
        with cluster.sync_client() as client:
            client.put("after-failover", "yes", timeout_s=20.0)
            served_after_s = time.monotonic() - killed_at
            new_leader = client.wait_leader(timeout_s=20.0)
            context.check("a new leader serves writes after the kill", new_leader != leader,
                          f"{new_leader} served {served_after_s:.2f} s after the kill")
            values = {key: client.get(key) for key in acknowledged}
        lost = [key for key, value in acknowledged.items() if values.get(key) != value]
        context.check("no acknowledged write was lost", not lost,
                      f"{len(acknowledged) - len(lost)} of {len(acknowledged)} read back (lease reads)")
        cluster.restart(leader)
        caught_up = False
        detail = ""
        with cluster.sync_client() as client:
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and not caught_up:
                with contextlib.suppress(Exception):
                    mine, theirs = client.status(leader), client.status(new_leader)
                    caught_up = mine.chosen_index >= theirs.chosen_index and mine.digest == theirs.digest
                    detail = f"{leader} at chosen index {mine.chosen_index}, state digest {mine.digest[:12]}"
                if not caught_up:
                    time.sleep(0.2)
        context.check("the restarted replica catches up to the same state", caught_up, detail)


STEPS = (
    Step(
        title="Multi-Paxos: leader failover",
        explanation="""
Three replica processes run a replicated key-value store. Each write is chosen by
a majority and fsynced before it is acknowledged. We kill the leader with
SIGKILL: a new leader is elected, and every acknowledged write is still there.""",
        run=_paxos,
    ),
)
