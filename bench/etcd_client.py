"""A minimal asyncio gRPC client for etcd v3 (KV, Txn, Lease, Lock), for benchmarks.

It hand-encodes the few protobuf messages it needs (protobuf's wire format is
simple: a tag varint, then a varint or a length-delimited value), so it needs only
``grpcio`` (run bench scripts with ``uv run --with grpcio ...``), not etcd's
generated stubs. Field numbers are from etcd 3.4's ``rpc.proto`` and ``v3lock.proto``.
"""

from __future__ import annotations

from typing import Any


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, data: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def field_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def parse(data: bytes) -> dict[int, list[Any]]:
    """Decode one protobuf message into {field number: [values]} (bytes or int)."""
    fields: dict[int, list[Any]] = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            length, i = _read_varint(data, i)
            value = data[i : i + length]
            i += length
        elif wire == 1:
            value = data[i : i + 8]
            i += 8
        elif wire == 5:
            value = data[i : i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def put_request(key: bytes, value: bytes, lease: int = 0) -> bytes:
    return field_bytes(1, key) + field_bytes(2, value) + (field_int(3, lease) if lease else b"")


def range_request(key: bytes, serializable: bool = False) -> bytes:
    return field_bytes(1, key) + (field_int(7, 1) if serializable else b"")


def request_op_put(key: bytes, value: bytes) -> bytes:
    return field_bytes(2, put_request(key, value))


def request_op_range(key: bytes) -> bytes:
    return field_bytes(1, range_request(key))


def compare_mod_revision(key: bytes, revision: int) -> bytes:
    # Compare{result=EQUAL(0), target=MOD(2), key=3, mod_revision=6}
    return field_int(2, 2) + field_bytes(3, key) + field_int(6, revision)


def txn_request(compares: list[bytes], success: list[bytes], failure: list[bytes]) -> bytes:
    return (
        b"".join(field_bytes(1, c) for c in compares)
        + b"".join(field_bytes(2, op) for op in success)
        + b"".join(field_bytes(3, op) for op in failure)
    )


def _identity(data: bytes) -> bytes:
    return data


class EtcdClient:
    """One gRPC channel to one etcd endpoint (grpc.aio)."""

    def __init__(self, endpoint: str) -> None:
        import grpc  # bench-only dependency

        self._channel = grpc.aio.insecure_channel(endpoint)

        def method(path: str) -> Any:
            return self._channel.unary_unary(path, request_serializer=_identity,
                                             response_deserializer=_identity)

        self._put = method("/etcdserverpb.KV/Put")
        self._range = method("/etcdserverpb.KV/Range")
        self._txn = method("/etcdserverpb.KV/Txn")
        self._lease_grant = method("/etcdserverpb.Lease/LeaseGrant")
        self._lock = method("/v3lockpb.Lock/Lock")
        self._unlock = method("/v3lockpb.Lock/Unlock")

    async def put(self, key: bytes, value: bytes) -> None:
        await self._put(put_request(key, value))

    async def get(self, key: bytes) -> bytes | None:
        reply = parse(await self._range(range_request(key)))
        kvs = reply.get(2, [])
        if not kvs:
            return None
        value: bytes = parse(kvs[0]).get(5, [b""])[0]
        return value

    async def txn(self, compares: list[bytes], success: list[bytes], failure: list[bytes]) -> bool:
        reply = parse(await self._txn(txn_request(compares, success, failure)))
        return bool(reply.get(2, [0])[0])

    async def lease_grant(self, ttl_s: int) -> int:
        reply = parse(await self._lease_grant(field_int(1, ttl_s)))
        lease: int = reply[2][0]
        return lease

    async def lock(self, name: bytes, lease: int) -> bytes:
        reply = parse(await self._lock(field_bytes(1, name) + field_int(2, lease)))
        key: bytes = reply[2][0]
        return key

    async def unlock(self, key: bytes) -> None:
        await self._unlock(field_bytes(1, key))

    async def close(self) -> None:
        await self._channel.close()
