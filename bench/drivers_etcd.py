"""Load-generator drivers for etcd (see ``bench/loadgen.py``)."""

from __future__ import annotations

import os

from bench.etcd_client import EtcdClient, request_op_put


class EtcdDriver:
    """``kind``: ``put`` (100-byte values over ``keys`` keys), ``get`` (linearizable
    range), ``txn`` (a two-key put transaction), ``lock`` (lock + unlock)."""

    def __init__(self, index: int, *, endpoints: list[str], kind: str = "put", keys: int = 1000,
                 value_bytes: int = 100) -> None:
        self.index = index
        self.endpoint = endpoints[index % len(endpoints)] if kind == "get" else endpoints[0]
        self.kind = kind
        self.keys = keys
        self.value = os.urandom(value_bytes // 2).hex().encode()[:value_bytes]
        self.client: EtcdClient | None = None
        self.lease = 0

    async def setup(self) -> None:
        self.client = EtcdClient(self.endpoint)
        if self.kind == "lock":
            self.lease = await self.client.lease_grant(60)

    async def op(self, i: int) -> None:
        assert self.client is not None
        key = b"k%06d" % (i % self.keys)
        if self.kind == "put":
            await self.client.put(key, self.value)
        elif self.kind == "get":
            await self.client.get(key)
        elif self.kind == "txn":
            await self.client.txn([], [request_op_put(key, self.value),
                                       request_op_put(key + b"-b", self.value)], [])
        elif self.kind == "lock":
            held = await self.client.lock(b"lock-%d" % (i % self.keys), self.lease)
            await self.client.unlock(held)
        else:
            raise ValueError(self.kind)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def etcd_driver(index: int, **options: object) -> EtcdDriver:
    return EtcdDriver(index, **options)  # type: ignore[arg-type]
