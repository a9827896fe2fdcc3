"""Wire messages of the toy replicated register (tags 200-219 of the ``sim`` range).

ONLY APPEND: a tag once shipped is never reused or renumbered.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.codec.registry import Message, message


@message(200)
@dataclass(frozen=True, slots=True, kw_only=True)
class Entry(Message):
    """One version of one key. Versions are totally ordered by
    ``(counter, origin, value)`` -- see ``Entry.order`` -- so that every node
    picks the same winner. Also the record format of the write-ahead log."""

    key: str
    value: str
    counter: int
    origin: str

    def order(self) -> tuple[int, str, str]:
        return (self.counter, self.origin, self.value)


@message(201)
@dataclass(frozen=True, slots=True, kw_only=True)
class Write(Message):
    """Client request: set ``key`` to ``value``."""

    key: str
    value: str


@message(202)
@dataclass(frozen=True, slots=True, kw_only=True)
class Read(Message):
    """Client request: the value of ``key`` on the node asked."""

    key: str


@message(203)
@dataclass(frozen=True, slots=True, kw_only=True)
class WriteOk(Message):
    """Answer to ``Write``: the write is durable on the node that answers, as
    ``entry`` (which carries the version it was given)."""

    entry: Entry


@message(204)
@dataclass(frozen=True, slots=True, kw_only=True)
class ReadOk(Message):
    """Answer to ``Read``: the node's current entry for the key, if any."""

    key: str
    entry: Entry | None


@message(205)
@dataclass(frozen=True, slots=True, kw_only=True)
class Replicate(Message):
    """Peer to peer: entries the receiver should keep if they are newer than its
    own. Sent after a write is durable, and by anti-entropy."""

    entries: tuple[Entry, ...]
