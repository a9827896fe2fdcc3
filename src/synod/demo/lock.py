"""Tour step for the lock service: two clients race for a lock on a real cell,
and the winner's sequencer fences off the loser of a later race."""

from __future__ import annotations

import asyncio
import time

import synod.lock.scenarios  # noqa: F401  (registers the "lock" scenario)
from synod.cli.cluster import LocalCluster
from synod.demo.tour import Step, StepContext
from synod.lock.client import LockClient
from synod.lock.errors import LockBusyError
from synod.lock.sequencer import Fence, StaleSequencerError
from synod.runtime.host import run
from synod.sim.scenarios import run_scenario

LOCK = "/ls/local/demo-lock"


async def _race(context: StepContext, cluster: LocalCluster) -> None:
    info = cluster.connection()
    resource = Fence()   # what a storage server that accepts sequencers keeps
    a = LockClient(info.nodes, **info.client_options())
    b = LockClient(info.nodes, **info.client_options())
    await a.open()
    await b.open()
    try:
        await a.ensure(LOCK)
        first, second = await asyncio.gather(a.try_acquire(LOCK), b.try_acquire(LOCK), return_exceptions=True)
        winners = [(name, s) for name, s in (("a", first), ("b", second)) if not isinstance(s, BaseException)]
        losers = [s for s in (first, second) if isinstance(s, LockBusyError)]
        context.check("two clients race for one lock: exactly one wins", len(winners) == 1 and len(losers) == 1,
                      f"{winners[0][0] if winners else '-'} holds {winners[0][1] if winners else '-'}")
        if len(winners) != 1:
            return
        name, old = winners[0]
        holder, other = (a, b) if name == "a" else (b, a)
        resource.admit(old)
        # The holder freezes (a long pause, a crash): it stops sending KeepAlives.
        await holder.abandon()
        started = time.monotonic()
        new = await other.acquire(LOCK, timeout_s=30.0)
        waited = time.monotonic() - started
        context.check("the other client gets the lock once the frozen holder's lease and lock-delay ran out",
                      new.lock_generation > old.lock_generation,
                      f"after {waited:.1f} s (lease 1.5 s + lock-delay 1 s); now {new}")
        resource.admit(new)
        try:
            resource.admit(old)
            fenced = False
        except StaleSequencerError:
            fenced = True
        context.check("the stale holder's late write is refused by its sequencer", fenced,
                      f"generation {old.lock_generation} < {new.lock_generation}")
        context.check("the cell agrees: the old sequencer is no longer valid",
                      not await other.check_sequencer(old) and await other.check_sequencer(new))
    finally:
        await a.close()
        await b.close()


def _lock(context: StepContext) -> None:
    with LocalCluster(context.workdir / "lock-cell", 3, core="synod.lock.server:lock_factory") as cluster:
        cluster.wait_leader()
        run(_race(context, cluster))
    caught = None
    for seed in range(8):
        planted = run_scenario("lock", seed, mutant="lock.skip_lock_delay")
        if not planted.ok and any("fencing" in v for v in planted.violations):
            caught = seed
            break
    context.check("in simulation, a planted bug (no lock-delay) is caught by the fencing checker",
                  caught is not None,
                  f"replay with: synod sim lock --seed {caught} --mutant lock.skip_lock_delay")


STEPS = (
    Step(
        title="lock service",
        explanation="""
synod.lock is a Chubby-style cell: a small-file namespace whose every node is also
a reader/writer lock, kept by a Paxos group. Two clients race for a lock; the
winner freezes; once its lease and the lock-delay have run out the other gets the
lock with a higher generation, and the winner's old sequencer is refused by the
resource it used to write to.""",
        run=_lock,
    ),
)
