"""A shard leader's lock table: strict two-phase locking with wound-wait.

Theory of operation
-------------------
Serializability comes from strict 2PL: a transaction takes a shared lock on
every key (and every key range, against phantoms) it reads and an exclusive lock
on every key it writes, and keeps them all until its outcome is applied. The
table lives in the shard leader's memory only; it is NOT replicated. What
survives a leader change is the prepare record in the shard's Paxos log, from
which a new leader re-takes the locks of every prepared transaction.

So every lock is tagged with the ballot of the leader that granted it. A leader
that becomes ready at a ballot drops every lock of an older ballot (``purge``),
and a participant votes yes only for a transaction whose locks all carry its
current ballot (``holds``): a lock taken under an old ballot may have been
ignored by another leader in between.

A single-shard transaction that only writes (a *blind write*) takes ``BLIND``
locks instead of exclusive ones: blind writers of a key hold it together, so a
hot key is not held by one of them across a whole Paxos round after another.
This keeps serializability: a blind writer reads nothing, its writes apply
atomically in log order, and it still conflicts with every reader and every
other writer, so the serialization order is the commit log order throughout
(a reader that got its shared lock first is committed before the blind write
is even proposed; one that asks later waits for it to be applied). A blind
request does not overtake an older transaction's request queued for the same
key, so readers are not starved by a stream of (younger) blind writes.

Deadlocks are avoided by wound-wait (Rosenkrantz, Stearns and Lewis, 1978): a
transaction's priority is its first timestamp, kept across retries, so it
eventually becomes the oldest and wins. When R asks for a lock held in a
conflicting mode by H: if R is older, R *wounds* H (H is aborted here, its locks
released, its waiting requests failed with a conflict naming the key) -- unless
H is prepared, which is never wounded (it may already be committed elsewhere);
otherwise R waits. Waits only go from younger to older or to a prepared
transaction (which needs no further lock), so no cycle of waits can form.

The table returns what happened (granted, waiting, wounded transactions,
requests granted from the queue) and leaves replies to the server.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field

from synod.core.errors import invariant
from synod.core.faults import declare_mutant, mutant
from synod.paxos.messages import Ballot

MUTANT_WOUND_PREPARED = declare_mutant(
    "txn.wound_prepared",
    "wound-wait wounds a prepared transaction (releasing the locks of a transaction "
    "that may already be committed)",
)
MUTANT_STALE_BALLOT_LOCKS = declare_mutant(
    "txn.vote_with_stale_ballot_locks",
    "a participant counts locks taken under an old ballot of its own as held: they "
    "survive a leadership change and a vote is given on them",
)


MUTANT_BLIND_SHARES_WITH_READERS = declare_mutant(
    "txn.blind_shares_with_readers",
    "a blind write lock is granted alongside shared (read) locks, as it is alongside other "
    "blind writes: a reader can see one key before a blind write and another after it",
)


class Mode(enum.Enum):
    SHARED = "S"
    EXCLUSIVE = "X"
    #: A blind write: a single-shard transaction that writes without reading.
    #: Blind writers of a key share it (with each other only): none reads, so
    #: any order of them is serializable, and the log gives them one.
    BLIND = "B"


def _compatible(held: Mode, asked: Mode) -> bool:
    if held is asked:
        return held is not Mode.EXCLUSIVE
    # The planted bug: blind writes also share with readers.
    return Mode.EXCLUSIVE not in (held, asked) and mutant(MUTANT_BLIND_SHARES_WITH_READERS)


@dataclass(slots=True, kw_only=True)
class TxnLocks:
    """One transaction's locks at this shard."""

    txn: str
    ts: int
    ballot: Ballot
    keys: dict[str, Mode] = field(default_factory=dict)
    ranges: list[tuple[str, str]] = field(default_factory=list)
    prepared: bool = False
    last_active_ms: float = 0.0

    @property
    def priority(self) -> tuple[int, str]:
        return (self.ts, self.txn)


@dataclass(slots=True, kw_only=True)
class Request:
    """A lock request: on ``key`` (or, with ``end`` not None, the range [key, end))."""

    token: int
    txn: str
    key: str
    mode: Mode
    end: str | None = None


@dataclass(slots=True, kw_only=True)
class Outcome:
    """What a lock operation did: ``granted`` tokens, ``wounded`` transactions
    (txn -> key they lost), and whether the request itself now waits."""

    granted: list[int] = field(default_factory=list)
    wounded: dict[str, str] = field(default_factory=dict)
    waiting: bool = False
    refused: str = ""


def _in_range(key: str, start: str, end: str) -> bool:
    return start <= key and (not end or key < end)


def _ranges_overlap(a_start: str, a_end: str, b_start: str, b_end: str) -> bool:
    return (not b_end or a_start < b_end) and (not a_end or b_start < a_end)


class LockTable:
    """Locks and waiters of one shard leader."""

    def __init__(self, *, waiters_max: int, txns_max: int, aborted_max: int) -> None:
        self.waiters_max = waiters_max
        self.txns_max = txns_max
        self.txns: dict[str, TxnLocks] = {}
        self.holders: dict[str, dict[str, Mode]] = {}
        self.waiters: list[Request] = []
        #: Transactions holding at least one range lock: an exclusive request
        #: checks only these for a range covering its key, not every transaction.
        self.ranged: set[str] = set()
        #: Transactions aborted here (wounded, released, timed out) -> the key
        #: that did it; remembered so a late request is refused, not re-admitted.
        self.aborted: OrderedDict[str, str] = OrderedDict()
        self.aborted_max = aborted_max
        self.wounds = 0

    # ------------------------------------------------------------ queries

    def holds(self, txn: str, keys: tuple[str, ...], ranges: tuple[tuple[str, str], ...],
              ballot: Ballot) -> str | None:
        """None if ``txn`` holds a lock on every key and range under ``ballot``;
        else the first key it does not hold (the conflict to report)."""
        entry = self.txns.get(txn)
        if entry is None:
            return keys[0] if keys else (ranges[0][0] if ranges else "")
        if entry.ballot != ballot and not mutant(MUTANT_STALE_BALLOT_LOCKS):
            return keys[0] if keys else (ranges[0][0] if ranges else "")
        for key in keys:
            if key not in entry.keys:
                return key
        for start_end in ranges:
            if list(start_end) not in [list(r) for r in entry.ranges]:
                return start_end[0]
        return None

    def entry(self, txn: str) -> TxnLocks | None:
        return self.txns.get(txn)

    def waits_for_active_older(self, txn: str) -> str | None:
        """The key of a queued request of ``txn`` that an OLDER, unprepared
        transaction holds a conflicting lock on, if any (that one may itself be
        waiting for ``txn`` at another shard: see ``ShardServer``)."""
        entry = self.txns.get(txn)
        if entry is None:
            return None
        for waiter in self.waiters:
            if waiter.txn != txn:
                continue
            for holder in self._conflicts(waiter):
                other = self.txns[holder]
                if not other.prepared and other.priority < entry.priority:
                    return waiter.key
        return None

    # ------------------------------------------------------------ changes

    def begin(self, txn: str, ts: int, ballot: Ballot, now_ms: float) -> TxnLocks | None:
        """The transaction's entry, created if new; None when the table is full."""
        entry = self.txns.get(txn)
        if entry is None:
            if len(self.txns) >= self.txns_max:
                return None
            entry = self.txns[txn] = TxnLocks(txn=txn, ts=ts, ballot=ballot)
        entry.last_active_ms = now_ms
        return entry

    def acquire(self, request: Request, ts: int, ballot: Ballot, now_ms: float) -> Outcome:
        """Ask for a lock (wound-wait). The caller already refused aborted txns."""
        outcome = Outcome()
        entry = self.begin(request.txn, ts, ballot, now_ms)
        if entry is None:
            outcome.refused = "overloaded"
            return outcome
        if not self._queued_before(request, len(self.waiters)) and self._grantable(request, entry, outcome):
            self._grant(request, entry)
            outcome.granted.append(request.token)
            outcome.granted += self._wake(outcome)
            return outcome
        if len(self.waiters) >= self.waiters_max:
            outcome.refused = "overloaded"
            return outcome
        self.waiters.append(request)
        outcome.waiting = True
        outcome.granted += self._wake(outcome)
        return outcome

    def mark_prepared(self, txn: str) -> None:
        entry = self.txns.get(txn)
        invariant(entry is not None, f"prepared transaction {txn} holds no locks")
        assert entry is not None
        entry.prepared = True

    def install_prepared(self, txn: str, ts: int, ballot: Ballot, read_keys: tuple[str, ...],
                         ranges: tuple[tuple[str, str], ...], write_keys: tuple[str, ...]) -> None:
        """Re-take the locks of a prepare record found in the log (new leader)."""
        entry = self.txns.get(txn) or TxnLocks(txn=txn, ts=ts, ballot=ballot)
        self.txns[txn] = entry
        entry.ballot = ballot
        entry.prepared = True
        for key in read_keys:
            if entry.keys.get(key) is not Mode.EXCLUSIVE:
                entry.keys[key] = Mode.SHARED
                self.holders.setdefault(key, {})[txn] = Mode.SHARED
        for key in write_keys:
            entry.keys[key] = Mode.EXCLUSIVE
            self.holders.setdefault(key, {})[txn] = Mode.EXCLUSIVE
        for start_end in ranges:
            if start_end not in entry.ranges:
                entry.ranges.append(start_end)
        if entry.ranges:
            self.ranged.add(txn)

    def release(self, txn: str, *, aborted_by: str | None = None) -> tuple[Outcome, list[Request]]:
        """Drop every lock and waiting request of ``txn``. Returns what waking the
        queue did (tokens granted to others, transactions they wounded) and the
        dropped requests of ``txn`` itself."""
        entry = self.txns.pop(txn, None)
        self.ranged.discard(txn)
        dropped = [w for w in self.waiters if w.txn == txn]
        if dropped:
            self.waiters = [w for w in self.waiters if w.txn != txn]
        if entry is not None:
            for key in entry.keys:
                holders = self.holders.get(key)
                if holders is not None:
                    holders.pop(txn, None)
                    if not holders:
                        del self.holders[key]
        if aborted_by is not None:
            self.aborted[txn] = aborted_by
            while len(self.aborted) > self.aborted_max:
                self.aborted.popitem(last=False)
        outcome = Outcome()
        outcome.granted = self._wake(outcome)
        return outcome, dropped

    def purge(self, ballot: Ballot) -> list[str]:
        """A new leadership at ``ballot``: forget every lock of another ballot and
        every waiter (their requests were answered ``not_leader``)."""
        self.waiters.clear()
        if mutant(MUTANT_STALE_BALLOT_LOCKS):
            for entry in self.txns.values():
                entry.ballot = ballot
            return []
        stale = [txn for txn, entry in self.txns.items() if entry.ballot != ballot]
        for txn in stale:
            self.release(txn)
        return stale

    def idle(self, now_ms: float, idle_ms: float) -> list[str]:
        """Unprepared transactions that sent nothing for ``idle_ms``."""
        return [txn for txn, entry in self.txns.items()
                if not entry.prepared and now_ms - entry.last_active_ms >= idle_ms]

    # ------------------------------------------------------------ internals

    def _conflicts(self, request: Request) -> list[str]:
        """Other transactions holding a lock that conflicts with ``request``."""
        found: list[str] = []
        if request.end is None:
            for holder, mode in self.holders.get(request.key, {}).items():
                if holder != request.txn and not _compatible(mode, request.mode):
                    found.append(holder)
            if request.mode is not Mode.SHARED:
                for holder in self.ranged:
                    if holder != request.txn and holder not in found and any(
                            _in_range(request.key, s, e) for s, e in self.txns[holder].ranges):
                        found.append(holder)
        else:
            for key, holders in self.holders.items():
                if _in_range(key, request.key, request.end):
                    for holder, mode in holders.items():
                        if holder != request.txn and mode is not Mode.SHARED and holder not in found:
                            found.append(holder)
        return found

    def _queued_before(self, request: Request, position: int) -> bool:
        """A blind request waits behind any OLDER transaction's request for the
        same key queued before it (``position``: its place in the queue), so a
        stream of blind writers, which share the key, cannot starve a reader.
        Only older ones: every wait then still goes from younger to older (or to
        a prepared transaction), so wound-wait's argument that no cycle of waits
        can form still holds (deferring to a younger waiter could close one)."""
        if request.mode is not Mode.BLIND:
            return False
        entry = self.txns.get(request.txn)
        if entry is None:
            return False
        for waiter in self.waiters[:position]:
            if waiter.key == request.key and waiter.txn != request.txn:
                other = self.txns.get(waiter.txn)
                if other is not None and other.priority < entry.priority:
                    return True
        return False

    def _grantable(self, request: Request, entry: TxnLocks, outcome: Outcome) -> bool:
        """Wound every younger unprepared conflicting holder; True if nothing
        conflicting is left."""
        blocked = False
        for holder in self._conflicts(request):
            other = self.txns[holder]
            wound_ok = not other.prepared or mutant(MUTANT_WOUND_PREPARED)
            if entry.priority < other.priority and wound_ok:
                key = request.key
                outcome.wounded[holder] = key
                self.wounds += 1
                self._drop(holder, key)
            else:
                blocked = True
        return not blocked

    def _drop(self, txn: str, key: str) -> None:
        entry = self.txns.pop(txn, None)
        self.ranged.discard(txn)
        if entry is not None:
            for held in entry.keys:
                holders = self.holders.get(held)
                if holders is not None:
                    holders.pop(txn, None)
                    if not holders:
                        del self.holders[held]
        self.waiters = [w for w in self.waiters if w.txn != txn]
        self.aborted[txn] = key
        while len(self.aborted) > self.aborted_max:
            self.aborted.popitem(last=False)

    def _grant(self, request: Request, entry: TxnLocks) -> None:
        if request.end is not None:
            if (request.key, request.end) not in entry.ranges:
                entry.ranges.append((request.key, request.end))
            self.ranged.add(request.txn)
            return
        current = entry.keys.get(request.key)
        if current is Mode.EXCLUSIVE or (current is Mode.BLIND and request.mode is Mode.SHARED):
            return
        entry.keys[request.key] = request.mode
        self.holders.setdefault(request.key, {})[request.txn] = request.mode

    def _wake(self, outcome: Outcome) -> list[int]:
        """Grant queued requests that can now go, in arrival order."""
        granted: list[int] = []
        progress = True
        while progress:
            progress = False
            for waiter in list(self.waiters):
                if waiter not in self.waiters:
                    continue
                entry = self.txns.get(waiter.txn)
                if entry is None:
                    self.waiters.remove(waiter)
                    continue
                if waiter.mode is Mode.BLIND and self._queued_before(waiter, self.waiters.index(waiter)):
                    continue
                if self._grantable(waiter, entry, outcome):
                    self.waiters.remove(waiter)
                    self._grant(waiter, entry)
                    granted.append(waiter.token)
                    progress = True
        return granted

    def check_invariants(self) -> None:
        for key, holders in self.holders.items():
            exclusive = [t for t, m in holders.items() if m is Mode.EXCLUSIVE]
            invariant(len(exclusive) <= 1, f"key {key!r} locked exclusively by {exclusive}")
            invariant(not exclusive or len(holders) == 1, f"key {key!r} exclusive and shared at once")
            modes = set(holders.values())
            invariant(Mode.BLIND not in modes or len(modes) == 1 or mutant(MUTANT_BLIND_SHARES_WITH_READERS),
                      f"key {key!r} held for blind writes and otherwise at once")
            for txn, mode in holders.items():
                entry = self.txns.get(txn)
                invariant(entry is not None and entry.keys.get(key) is mode,
                          f"holder table and {txn}'s locks disagree on {key!r}")
        invariant(len(self.waiters) <= self.waiters_max, "lock waiters over their bound")
        invariant(self.ranged == {t for t, e in self.txns.items() if e.ranges},
                  "the set of range holders disagrees with the transactions' ranges")
        invariant(len(self.txns) <= self.txns_max + len([e for e in self.txns.values() if e.prepared]),
                  "transactions over their bound")
