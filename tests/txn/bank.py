"""The bank workload against real processes (tests and the benchmark share it)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from synod.txn.client import Transaction, TxnClient
from synod.txn.errors import TxnError, UnavailableError

INITIAL = 100


def accounts(count: int) -> list[str]:
    """Account keys spread over the alphabet (so over every shard)."""
    return [f"{chr(ord('a') + (i * 11) % 26)}acct{i}" for i in range(count)]


@dataclass
class BankStats:
    transfers: int = 0
    audits: int = 0
    aborted: int = 0
    unknown: int = 0
    bad_audits: list[int] = field(default_factory=list)


async def worker(client: TxnClient, keys: list[str], stats: BankStats, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        if rng.random() < 0.2:
            async def audit(t: Transaction) -> int:
                return sum([int(await t.get(k) or INITIAL) for k in keys])
            try:
                total = await client.run(audit, attempts_max=5)
            except UnavailableError:
                stats.unknown += 1
                continue
            except TxnError:
                stats.aborted += 1
                continue
            stats.audits += 1
            if total != INITIAL * len(keys):
                stats.bad_audits.append(total)
            continue
        source, target = rng.sample(keys, 2)
        amount = rng.randint(1, 20)

        async def transfer(t: Transaction, source: str = source, target: str = target, amount: int = amount) -> None:
            have = int(await t.get(source) or INITIAL)
            other = int(await t.get(target) or INITIAL)
            if have >= amount:
                t.put(source, str(have - amount))
                t.put(target, str(other + amount))
        try:
            await client.run(transfer, attempts_max=5)
            stats.transfers += 1
        except UnavailableError:
            stats.unknown += 1
        except TxnError:
            stats.aborted += 1


async def final_balances(client: TxnClient, keys: list[str]) -> dict[str, int]:
    async def read(t: Transaction) -> dict[str, int]:
        return {k: int(await t.get(k) or INITIAL) for k in keys}
    deadline = time.monotonic() + 30
    while True:
        try:
            return await client.run(read)
        except TxnError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
