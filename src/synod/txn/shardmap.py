"""The shard map: which Paxos group serves which key range, on which replicas.

The map is kept in the lock service, as a small file (``shard_map_path(cell)``,
``/ls/<cell>/txn/shardmap``) holding ``shard_map_to_bytes``: clients cache it and
re-read it when a shard answers ``wrong_shard``. A client reads it through a
``ShardMapSource``: ``current()`` gives the cached map and ``await
refresh(seen_version)`` a newer one (or the same, if there is none).
``StaticShardMapSource`` serves a fixed map (tests, the simulator);
``synod.txn.mapsource.LockShardMapSource`` reads the lock service's file, and
``synod.txn.mapsource.publish_shard_map`` writes it (compare-and-set, and only
ever a higher version).

Ranges are half-open ``[start, end)`` over keys ordered as Python strings (code
points), ``end == ""`` meaning "to the end"; they tile the whole key space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from synod.core.errors import ConfigError
from synod.core.ids import NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    group: str
    start: str
    end: str
    replicas: tuple[NodeId, ...]

    def covers(self, key: str) -> bool:
        return self.start <= key and (not self.end or key < self.end)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardMap:
    """A versioned tiling of the key space by shards."""

    version: int
    shards: tuple[Shard, ...]

    def __post_init__(self) -> None:
        if not self.shards:
            raise ConfigError("a shard map needs at least one shard")
        if self.shards[0].start != "" or self.shards[-1].end != "":
            raise ConfigError("shard ranges must cover the whole key space")
        for before, after in zip(self.shards, self.shards[1:], strict=False):
            if before.end != after.start or not before.end:
                raise ConfigError(f"shard ranges must tile the key space ({before.group}, {after.group})")
        groups = [s.group for s in self.shards]
        if len(set(groups)) != len(groups):
            raise ConfigError("shard group names must be unique")

    def shard_for(self, key: str) -> Shard:
        for shard in self.shards:
            if shard.covers(key):
                return shard
        raise ConfigError(f"no shard covers {key!r}")  # unreachable: the ranges tile

    def shard(self, group: str) -> Shard:
        for shard in self.shards:
            if shard.group == group:
                return shard
        raise KeyError(group)

    def groups(self) -> tuple[str, ...]:
        return tuple(s.group for s in self.shards)

    def shards_overlapping(self, start: str, end: str) -> list[Shard]:
        return [s for s in self.shards if (not end or s.start < end) and (not s.end or start < s.end)]


def uniform_map(shard_count: int, replicas_per_shard: int, *, version: int = 1,
                node_prefix: str = "n") -> ShardMap:
    """``shard_count`` groups ``s1..``, split evenly over lower-case first letters,
    replicas ``n1..`` assigned in order (``n1..n3`` to ``s1``, ...)."""
    if shard_count < 1 or replicas_per_shard < 1:
        raise ConfigError("shard_count and replicas_per_shard must be positive")
    bounds = [""] + [chr(ord("a") + (26 * i) // shard_count) for i in range(1, shard_count)] + [""]
    shards = []
    for i in range(shard_count):
        replicas = tuple(NodeId(f"{node_prefix}{i * replicas_per_shard + r + 1}") for r in range(replicas_per_shard))
        shards.append(Shard(group=f"s{i + 1}", start=bounds[i], end=bounds[i + 1], replicas=replicas))
    return ShardMap(version=version, shards=tuple(shards))


#: Where the shard map lives in a lock cell's namespace (see ``shard_map_path``).
SHARD_MAP_FILE = "txn/shardmap"

#: A shard map file larger than this is refused (a map of a few hundred shards
#: is a few tens of kilobytes; the lock service's files are small by design).
SHARD_MAP_BYTES_MAX = 256 * 1024


def shard_map_path(cell: str) -> str:
    """The lock-service path of the shard map in ``cell``."""
    return f"/ls/{cell}/{SHARD_MAP_FILE}"


def shard_map_to_bytes(shard_map: ShardMap) -> bytes:
    """The map as the lock-service file holds it: JSON, readable with ``synod cat``."""
    return json.dumps({
        "version": shard_map.version,
        "shards": [{"group": s.group, "start": s.start, "end": s.end, "replicas": list(s.replicas)}
                   for s in shard_map.shards],
    }, indent=1).encode()


def shard_map_from_bytes(data: bytes) -> ShardMap:
    """Parse a shard map file; ``ConfigError`` for anything that is not a valid map."""
    if len(data) > SHARD_MAP_BYTES_MAX:
        raise ConfigError(f"shard map file of {len(data)} bytes over {SHARD_MAP_BYTES_MAX}")
    try:
        spec = json.loads(data)
        version = spec["version"]
        shards = tuple(
            Shard(group=_text(s["group"]), start=_text(s["start"]), end=_text(s["end"]),
                  replicas=tuple(NodeId(_text(r)) for r in s["replicas"]))
            for s in spec["shards"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"not a shard map: {error}") from None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"shard map version must be a positive integer, not {version!r}")
    if any(not s.replicas for s in shards):
        raise ConfigError("every shard needs at least one replica")
    return ShardMap(version=version, shards=shards)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


class ShardMapSource(Protocol):
    """Where a client gets the shard map."""

    def current(self) -> ShardMap: ...

    async def refresh(self, seen_version: int) -> ShardMap: ...


class StaticShardMapSource:
    """A fixed map (tests, the simulator, a static cluster file)."""

    def __init__(self, shard_map: ShardMap) -> None:
        self._map = shard_map

    def current(self) -> ShardMap:
        return self._map

    async def refresh(self, seen_version: int) -> ShardMap:
        return self._map
