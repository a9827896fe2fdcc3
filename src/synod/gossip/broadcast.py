"""The retransmit-limited broadcast queue (memberlist's TransmitLimitedQueue).

Theory of operation
-------------------
SWIM disseminates membership updates "infection-style" (section 4.1): each
update is piggybacked on the datagrams a member sends anyway (probes, acks) and
on the gossip round, a bounded number of times, ``retransmit_mult *
ceil(log10(n + 1))`` for ``n`` live members; after O(log n) rounds every member
has it with high probability, at a constant cost per member per period.

* **Least-sent first.** Each packet takes the updates sent the fewest times so
  far, so a fresh update goes out at once and no update starves. Among equals,
  the one that reached that count last goes first (a LIFO per count: cheap, and
  it keeps the newest updates ahead).
* **Bounded bytes per packet.** ``select`` fills at most ``bytes_max`` bytes of
  updates (each update's encoded size is measured once, when queued); an update
  that does not fit is skipped for a smaller one.
* **Newer invalidates older.** Updates are keyed: every update about member X
  shares the key X, so queueing "X is dead" drops a pending "X is suspect".
  User events are keyed by (origin, id) and never invalidate each other.
* **Bounded queue.** Beyond ``queue_max`` entries, the most-sent (then oldest)
  are dropped: they have done most of their work already.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

from synod.codec.registry import encode
from synod.core.errors import invariant
from synod.core.faults import declare_mutant, mutant
from synod.gossip.messages import Dead, Update

NO_DEAD_RETRANSMIT = declare_mutant(
    "gossip.no_dead_retransmit",
    "a dead verdict leaves the broadcast queue after its first transmission",
)

#: Bytes a piggybacked update costs beyond its own encoding (array framing).
ITEM_OVERHEAD_BYTES = 2
#: Entries examined per ``select``, so one packet costs O(1) however long the queue.
SCAN_MAX = 256


def retransmit_limit(retransmit_mult: int, members: int) -> int:
    """``retransmit_mult * ceil(log10(n + 1))``: sends per update for ``n`` members."""
    return retransmit_mult * max(1, math.ceil(math.log10(members + 1)))


def update_size_bytes(update: Update) -> int:
    """Encoded size of ``update`` as piggybacked (measured once per update)."""
    return len(encode(update)) + ITEM_OVERHEAD_BYTES


class _Entry:
    __slots__ = ("key", "order", "size_bytes", "transmits", "update")

    def __init__(self, key: Hashable, update: Update, size_bytes: int, order: int) -> None:
        self.key = key
        self.update = update
        self.size_bytes = size_bytes
        self.transmits = 0
        self.order = order


class BroadcastQueue:
    __slots__ = (
        "_by_key",
        "_levels",
        "_order",
        "dropped",
        "queue_max",
        "retransmit_mult",
        "sent",
    )

    def __init__(self, *, retransmit_mult: int, queue_max: int) -> None:
        self.retransmit_mult = retransmit_mult
        self.queue_max = queue_max
        self._by_key: dict[Hashable, _Entry] = {}
        # transmits -> entries with that many transmits, in queueing order.
        self._levels: dict[int, dict[Hashable, _Entry]] = {}
        self._order = 0
        self.dropped = 0  # entries dropped by the queue bound
        self.sent = 0  # piggybacked update transmissions

    def __len__(self) -> int:
        return len(self._by_key)

    def enqueue(self, key: Hashable, update: Update, size_bytes: int | None = None) -> None:
        """Queue ``update`` under ``key``, replacing any older update with that key."""
        old = self._by_key.pop(key, None)
        if old is not None:
            self._remove_from_level(old)
        self._order += 1
        entry = _Entry(key, update, size_bytes if size_bytes is not None
                       else update_size_bytes(update), self._order)
        self._by_key[key] = entry
        self._levels.setdefault(0, {})[key] = entry
        if len(self._by_key) > self.queue_max:
            self._drop_most_sent()

    def pending(self, key: Hashable) -> Update | None:
        entry = self._by_key.get(key)
        return entry.update if entry is not None else None

    def select(self, members: int, bytes_max: int) -> list[Update]:
        """Updates for one packet: least-sent first, at most ``bytes_max`` bytes.
        Each one's transmit count rises; those at the limit leave the queue."""
        if not self._by_key or bytes_max <= 0:
            return []
        limit = retransmit_limit(self.retransmit_mult, members)
        chosen: list[_Entry] = []
        room = bytes_max
        scanned = 0
        for level in sorted(self._levels):
            for entry in reversed(self._levels[level].values()):
                scanned += 1
                if entry.size_bytes <= room:
                    chosen.append(entry)
                    room -= entry.size_bytes
                if scanned >= SCAN_MAX or room < 16:
                    break
            if scanned >= SCAN_MAX or room < 16:
                break
        for entry in chosen:
            self._remove_from_level(entry)
            entry.transmits += 1
            entry_limit = limit
            if mutant(NO_DEAD_RETRANSMIT) and isinstance(entry.update, Dead):
                entry_limit = 1
            if entry.transmits >= entry_limit:
                del self._by_key[entry.key]
            else:
                self._levels.setdefault(entry.transmits, {})[entry.key] = entry
        self.sent += len(chosen)
        return [entry.update for entry in chosen]

    def _remove_from_level(self, entry: _Entry) -> None:
        level = self._levels[entry.transmits]
        del level[entry.key]
        if not level:
            del self._levels[entry.transmits]

    def _drop_most_sent(self) -> None:
        top = max(self._levels)
        level = self._levels[top]
        oldest = next(iter(level.values()))
        self._remove_from_level(oldest)
        del self._by_key[oldest.key]
        self.dropped += 1

    def check(self) -> None:
        invariant(len(self._by_key) <= self.queue_max, "broadcast queue over its bound")
        invariant(sum(len(level) for level in self._levels.values()) == len(self._by_key),
                  "broadcast queue levels drifted")
