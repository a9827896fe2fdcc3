"""Load-generator drivers for synod's Paxos KV (see ``bench/loadgen.py``).

The same workload shape as ``bench/drivers_etcd.py``: ``put`` writes 100-byte
values over ``keys`` keys; ``get`` reads them (lease reads by default). Each load
generator process holds ONE ``PaxosClient`` (one connection), which coalesces the
requests in flight into batches, as a real application's client would.
"""

from __future__ import annotations

import os
from typing import Any

from synod.paxos.client import ClientConfig, PaxosClient
from synod.paxos.messages import ReadMode
from synod.runtime.config import RuntimeConfig


class SynodDriver:
    def __init__(self, index: int, *, nodes: dict[str, list[Any]], principal: str, key_hex: str | None,
                 insecure: bool = False, kind: str = "put", keys: int = 1000, value_bytes: int = 100,
                 mode: str = "lease") -> None:
        self.index = index
        self.nodes = {name: (str(a[0]), int(a[1])) for name, a in nodes.items()}
        self.principal = principal
        self.key = bytes.fromhex(key_hex) if key_hex else None
        self.insecure = insecure
        self.kind = kind
        self.keys = keys
        self.value = os.urandom(value_bytes // 2).hex()[:value_bytes]
        self.mode = ReadMode[mode.upper()]
        self.client: PaxosClient | None = None

    async def setup(self) -> None:
        self.client = PaxosClient(self.nodes, principal=self.principal, key=self.key,
                                  runtime=RuntimeConfig(insecure=self.insecure),
                                  config=ClientConfig(timeout_s=10.0))
        await self.client.wait_leader(timeout_s=10.0)

    async def op(self, i: int) -> None:
        assert self.client is not None
        key = f"k{i % self.keys:06d}"
        if self.kind == "put":
            await self.client.put(key, self.value)
        elif self.kind == "get":
            await self.client.get(key, mode=self.mode)
        else:
            raise ValueError(self.kind)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def synod_driver(index: int, **options: Any) -> SynodDriver:
    return SynodDriver(index, **options)
