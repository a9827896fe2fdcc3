"""Sequencers: the fencing token a lock holder passes to other servers.

Theory of operation
-------------------
Burrows, *The Chubby lock service*, section 2.4. A lock holder asks for a
*sequencer*: the lock's name, the mode it was acquired in, and the lock's
generation number, which the cell raises every time the lock goes from free to
held. A server that acts on behalf of the holder (a storage server, a shard)
receives the sequencer with each request and either asks the cell whether it is
still valid (``check_sequencer``) or, cheaper and what this module offers
without any round trip, keeps the highest generation it has seen per lock and
refuses requests that carry a lower one (``Fence``). Because generations only
grow, a request from a holder whose lock was since taken by someone else is
refused as soon as the new holder has been seen once.

This is a kernel type: the replicated KV and the transaction store can accept a
sequencer as a write fence without importing the lock service. Its wire tag (600)
stays in the lock service's range, where it was first shipped (tags are
append-only); ``synod.lock.sequencer`` re-exports it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from synod.codec.registry import Message, message
from synod.core.errors import SynodError


class LockMode(enum.IntEnum):
    """How a lock is held: one writer, or any number of readers."""

    FREE = 0
    EXCLUSIVE = 1
    SHARED = 2


@message(600)
@dataclass(frozen=True, slots=True, kw_only=True)
class Sequencer(Message):
    """An opaque-to-users fencing token: which lock, in which mode, at which
    generation. ``instance`` tells a lock apart from an earlier node of the same
    name that was deleted and created again."""

    path: str
    mode: LockMode
    lock_generation: int
    instance: int

    def __str__(self) -> str:
        return f"{self.path}#{self.instance}:{self.mode.name.lower()}@{self.lock_generation}"


class StaleSequencerError(SynodError):
    """A request carried a sequencer older than one already seen for its lock."""


class Fence:
    """What a resource keeps to refuse stale lock holders: per lock (path and
    instance), the highest generation seen. ``admit`` raises
    ``StaleSequencerError`` for a lower one and remembers a higher one. Bounded by
    ``locks_max`` (a resource fenced by more locks than that refuses new ones)."""

    __slots__ = ("_highest", "locks_max")

    def __init__(self, *, locks_max: int = 100_000) -> None:
        self.locks_max = locks_max
        self._highest: dict[str, int] = {}

    def admit(self, sequencer: Sequencer) -> None:
        key = sequencer.path
        seen = self._highest.get(key)
        if seen is None:
            if len(self._highest) >= self.locks_max:
                raise StaleSequencerError(f"fence full ({self.locks_max} locks)")
            self._highest[key] = sequencer.lock_generation
            return
        if sequencer.lock_generation < seen:
            raise StaleSequencerError(
                f"sequencer {sequencer} is older than generation {seen} already seen"
            )
        self._highest[key] = sequencer.lock_generation

    def highest(self, path: str) -> int | None:
        return self._highest.get(path)
