"""The shard map kept in the lock service: read it, cache it, publish it.

Client glue, not a protocol core (it uses the lock service's asyncio client).
The map is one small file in a lock cell (``shard_map_path(cell)``), as the
issue asks and as Bigtable keeps its root tablet's location in Chubby: every
client reads it once, caches it, and reads it again only when a shard answers
``wrong_shard`` (the map it routed by is out of date). The lock service's own
cache (invalidated by the cell before any write completes) makes the read free
while nothing changed.

Publishing is a compare-and-set on the file's generation, and a map replaces
the stored one only with a higher version, so two operators racing cannot
install an older map over a newer one, and a client never goes backwards: it
keeps whichever of its cached and the stored map is newer.
"""

from __future__ import annotations

from synod.core.errors import ConfigError
from synod.lock.client import LockClient
from synod.lock.errors import ExistsError, GenerationMismatchError, NotFoundError
from synod.lock.messages import NodeMeta
from synod.txn.shardmap import ShardMap, shard_map_from_bytes, shard_map_to_bytes

#: Compare-and-set attempts of ``publish_shard_map`` when other writers race it.
PUBLISH_ATTEMPTS_MAX = 8


class LockShardMapSource:
    """A ``ShardMapSource`` reading the map file at ``path`` through ``lock``
    (an open ``LockClient``). Build it with ``await LockShardMapSource.open(...)``."""

    def __init__(self, lock: LockClient, path: str, shard_map: ShardMap) -> None:
        self.lock = lock
        self.path = path
        self._map = shard_map
        self.refreshes = 0

    @classmethod
    async def open(cls, lock: LockClient, path: str) -> LockShardMapSource:
        """Read the map at ``path``; ``NotFoundError`` if none was published and
        ``ConfigError`` if the file does not hold a valid map."""
        data = await lock.read(path)
        return cls(lock, path, shard_map_from_bytes(data.contents))

    def current(self) -> ShardMap:
        return self._map

    async def refresh(self, seen_version: int) -> ShardMap:
        """The stored map if it is newer than the cached one, else the cached one
        (``seen_version`` is the version the caller routed by). Read past the lock
        client's cache: a shard said the map is stale, so ask the cell."""
        self.refreshes += 1
        data = await self.lock.read(self.path, cache=False)
        stored = shard_map_from_bytes(data.contents)
        if stored.version > self._map.version:
            self._map = stored
        return self._map


async def publish_shard_map(lock: LockClient, path: str, shard_map: ShardMap) -> NodeMeta:
    """Store ``shard_map`` at ``path`` (creating the directories above it) unless
    the stored map is the same; ``ConfigError`` if the stored one has the same or
    a higher version with other contents (versions only grow)."""
    await _ensure_directories(lock, path)
    contents = shard_map_to_bytes(shard_map)
    for _ in range(PUBLISH_ATTEMPTS_MAX):
        try:
            current = await lock.read(path, cache=False)
        except NotFoundError:
            try:
                return await lock.create(path, contents)
            except ExistsError:
                continue   # someone published first: compare with theirs
        stored = shard_map_from_bytes(current.contents)
        if stored == shard_map:
            return current.meta
        if stored.version >= shard_map.version:
            raise ConfigError(f"the stored shard map has version {stored.version}; "
                              f"publish a version above it, not {shard_map.version}")
        try:
            return await lock.write(path, contents, expected_generation=current.meta.content_generation)
        except GenerationMismatchError:
            continue
    raise ConfigError(f"could not publish the shard map at {path}: {PUBLISH_ATTEMPTS_MAX} racing writers")


async def _ensure_directories(lock: LockClient, path: str) -> None:
    parts = path.strip("/").split("/")
    # /ls/<cell> is the cell's root, which always exists.
    for depth in range(3, len(parts)):
        await lock.ensure("/" + "/".join(parts[:depth]), directory=True)
