"""Several cores on one node: the multiplexer.

Theory of operation
-------------------
A node process hosts more than one protocol core: its gossip member, and one
replica for each Paxos group placed on it (the lock cell, each KV shard). The
drivers host exactly one ``Core`` per node; ``Mux`` is that core, and it hosts
named child cores, keeping them apart on every channel:

* messages: a child's ``Send(to, m)`` leaves as ``Send(to, Routed(group, m))``; an
  arriving ``Routed(group, m)`` goes to child ``group`` as ``m``. A client request
  for a group is ``ClientRequest(request_id, Routed(group, body))`` and reaches the
  child as ``ClientRequest(request_id, body)``; its ``ClientResult`` passes through.
* timers: a child's timer key ``k`` is armed as ``"<group>/<k>"``;
* durability: a child's WAL record ``r`` is stored as ``<group>\\x00r`` in the
  node's one write-ahead log (one fsync serves every group: group commit across
  groups), and at ``start`` each child gets back exactly its own records.
* snapshots: a child's snapshot is stored as one record
  ``\x00<group>\x00<framed chunks>`` (a plain record never starts with ``\x00``:
  group names are not empty). At ``start`` a child gets its newest such record as
  ``Recovered.snapshot`` and only its records persisted after it.
* compaction: the shared log cannot be cut at one group's snapshot (it still
  holds the other groups' records), so the mux keeps, per group, the records
  that group would need at a restart: its newest snapshot record and every
  record it persisted after it (``retained``; bounded by the children's
  snapshot intervals). When a child returns ``SaveSnapshot``, the mux returns a
  ``SaveSnapshot`` of its own whose chunks are all groups' retained records, in
  the log's own record format: a compacted prefix of the log. The driver writes
  it behind every earlier Persist and truncates the log below it, and at
  ``start`` the mux reads its snapshot's chunks exactly as it reads log records,
  before the records after it. A log written before compaction existed (child
  snapshots as plain records, no mux snapshot) is read the same way.

Messages for an unknown group are dropped and counted, never a crash. The mux is
itself sans-IO; its state is the table of children and the retained records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from synod.codec.kernel import ClientRequest, Routed
from synod.codec.registry import Message
from synod.core.effects import (
    CancelTimer,
    ClientResult,
    Core,
    Effect,
    Effects,
    Persist,
    Recovered,
    SaveSnapshot,
    Send,
    SetTimer,
    frame_chunks,
    unframe_chunks,
)
from synod.core.errors import ConfigError, invariant
from synod.core.ids import NodeId

_SEPARATOR = b"\x00"


class Mux:
    """A ``Core`` hosting named child cores (see the module comment)."""

    def __init__(self, children: Mapping[str, Core]) -> None:
        for name in children:
            if not name or "/" in name or "\x00" in name:
                raise ConfigError(f"invalid group name {name!r}")
        self.children: dict[str, Core] = dict(children)
        self.dropped: Counter[str] = Counter()
        #: Per group, in log order: its newest snapshot record (if any) and the
        #: records it persisted after it (see "compaction" above).
        self.retained: dict[str, list[bytes]] = {name: [] for name in children}
        self.snapshots_saved = 0

    # ------------------------------------------------------------ handlers

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        per_group: dict[str, list[bytes]] = {name: [] for name in self.children}
        snapshots: dict[str, tuple[bytes, ...]] = {}
        retained: dict[str, list[bytes]] = {name: [] for name in self.children}
        for record in (*(recovered.snapshot or ()), *recovered.records):
            is_snapshot = record.startswith(_SEPARATOR)
            group, sep, body = (record[1:] if is_snapshot else record).partition(_SEPARATOR)
            name = group.decode("utf-8", "replace")
            if not sep or name not in per_group:
                self.dropped["record for unknown group"] += 1
            elif is_snapshot:
                snapshots[name] = unframe_chunks((body,))
                per_group[name] = []
                retained[name] = [record]
            else:
                per_group[name].append(body)
                retained[name].append(record)
        self.retained = retained
        effects: Effects = []
        for name, child in self.children.items():
            child_effects = child.start(now_ms, Recovered(records=tuple(per_group[name]),
                                                          snapshot=snapshots.get(name)))
            effects.extend(self._wrap(name, child_effects))
        return effects

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        match message:
            case Routed(group=group, body=body):
                child = self.children.get(group)
                if child is None:
                    self.dropped["message for unknown group"] += 1
                    return []
                return self._wrap(group, child.on_message(now_ms, source, body))
            case ClientRequest(request_id=request_id, body=Routed(group=group, body=body)):
                child = self.children.get(group)
                if child is None:
                    self.dropped["request for unknown group"] += 1
                    return []
                request = ClientRequest(request_id=request_id, body=body)
                return self._wrap(group, child.on_message(now_ms, source, request))
            case _:
                self.dropped["unrouted message"] += 1
                return []

    def on_timer(self, now_ms: float, key: str) -> Effects:
        group, sep, child_key = key.partition("/")
        child = self.children.get(group)
        if not sep or child is None:
            self.dropped["timer for unknown group"] += 1
            return []
        return self._wrap(group, child.on_timer(now_ms, child_key))

    def check_invariants(self) -> None:
        for child in self.children.values():
            child.check_invariants()

    # ------------------------------------------------------------ wrapping

    def _wrap(self, group: str, effects: Effects) -> Effects:
        return [self._wrap_one(group, effect) for effect in effects]

    def _wrap_one(self, group: str, effect: Effect) -> Effect:
        prefix = group.encode() + _SEPARATOR
        match effect:
            case Send(to=to, message=message):
                return Send(to=to, message=Routed(group=group, body=message))
            case SetTimer(key=key, delay_ms=delay_ms):
                return SetTimer(key=f"{group}/{key}", delay_ms=delay_ms)
            case CancelTimer(key=key):
                return CancelTimer(key=f"{group}/{key}")
            case Persist(records=records, then=then):
                wrapped = tuple(prefix + r for r in records)
                self.retained[group].extend(wrapped)
                return Persist(records=wrapped, then=self._wrap_then(group, then))
            case SaveSnapshot(chunks=chunks, then=then):
                self.retained[group] = [_SEPARATOR + prefix + b"".join(frame_chunks(chunks))]
                self.snapshots_saved += 1
                compacted = tuple(record for name in self.children for record in self.retained[name])
                return SaveSnapshot(chunks=compacted, then=self._wrap_then(group, then))
            case ClientResult():
                return effect

    def _wrap_then(self, group: str, then: tuple[Effect, ...]) -> tuple[Effect, ...]:
        # The retained records must be exactly those submitted to the log, in
        # order; a durability effect run later (from a ``then``) would break that.
        invariant(not any(isinstance(e, Persist | SaveSnapshot) for e in then),
                  f"group {group}: a Persist or SaveSnapshot inside a then (not supported by the mux)")
        return tuple(self._wrap_one(group, e) for e in then)
