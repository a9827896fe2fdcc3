"""A simulated transaction client: the bank and list-append workloads.

Theory of operation
-------------------
The client is a core on a node of its own. It runs one transaction at a time,
interactively: one ``TxnGet`` per key read, sent to the leader it believes
serves the key's shard, then one ``TxnCommit`` to the leader of the first
shard in the transaction (the coordinator). Writes are buffered here until the
commit. A transaction is one of:

* ``transfer`` (bank): read two accounts on (usually) different shards, move a
  small amount from one to the other if the balance allows. An absent account
  holds ``initial_balance``, so the bank needs no set-up step;
* ``audit`` (bank, read-only): read every account; a committed audit must see
  the bank's constant total;
* ``append`` (list-append, Elle): a few micro-operations ``("r", k)`` and
  ``("append", k, v)`` over a handful of list keys, each appended value unique;
* pairs (``pair_fraction``; off by default): two keys of one shard that every
  writer sets to the same unique value -- ``pair_write`` blindly (it reads
  nothing: the leader's shared blind-write lock), ``pair_rmw`` after reading
  one of them (exclusive locks) -- and ``pair_read``, which reads both: a
  committed ``pair_read`` must see them equal (no write seen half).

A conflict (wounded, locks lost with a leader) aborts the attempt: the client
releases its locks (best effort) and runs the transaction again under a new
transaction id but its FIRST timestamp, so wound-wait lets it win eventually.
``not_leader`` redirects; silence re-sends to another replica. A commit with no
answer is re-sent with the same transaction id (the coordinator answers a
duplicate from its record or outcome); one unanswered for ``op_timeout_ms`` is
recorded indeterminate. ``TxnRecord`` keeps client-clock times; the scenario maps
them to true time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from synod.codec.kernel import ClientReply, ClientRequest, ErrorReply
from synod.codec.registry import Message
from synod.core.effects import Effects, Recovered, Send, SetTimer
from synod.core.errors import ConfigError, invariant
from synod.core.ids import NodeId
from synod.paxos.messages import Ballot
from synod.txn.messages import Part, TxnCommit, TxnGet, TxnOutcome, TxnRelease, TxnValue, Write
from synod.txn.shardmap import ShardMap

NEXT_TIMER = "next_txn"
RETRY_TIMER = "retry"

#: Answers that end an attempt as aborted (the transaction may run again).
RETRYABLE = frozenset({"conflict", "aborted", "bad_state", "overloaded"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BankConfig:
    """The workload's shape."""

    accounts: int = 6
    initial_balance: int = 100
    list_keys: int = 4
    #: Shares of transfers and audits; the rest are list-append transactions.
    transfer_fraction: float = 0.45
    audit_fraction: float = 0.15
    txn_interval_ms: float = 10.0
    retry_ms: float = 60.0
    op_timeout_ms: float = 2500.0
    attempts_max: int = 8
    stop_ms: float = float("inf")
    txns_max: int = 100_000
    #: Send every read to every replica of its group at once and keep the first
    #: answer (a client hedging against a slow or unknown leader). A leader
    #: deposed without knowing it then answers often, from its stale state,
    #: while the real leader grants the lock: the simulation's way to make the
    #: stale-read hazard common (``txn.accept_stale_read`` is caught with it).
    hedged_reads: bool = False
    #: Share of pair transactions (taken from the list-append share) and pairs.
    pair_fraction: float = 0.0
    pairs: int = 2

    def __post_init__(self) -> None:
        if self.accounts < 2 or self.list_keys < 1 or self.attempts_max < 1 or self.pairs < 1:
            raise ConfigError("BankConfig: at least 2 accounts, 1 list key, 1 pair and 1 attempt")
        if self.transfer_fraction + self.audit_fraction + self.pair_fraction > 1.0:
            raise ConfigError("BankConfig: transfer_fraction + audit_fraction + pair_fraction must be <= 1")


def account_key(index: int) -> str:
    """Account names spread over the alphabet, so over every shard."""
    return f"{chr(ord('a') + (index * 11) % 26)}acct{index}"


def list_key(index: int) -> str:
    return f"{chr(ord('a') + (index * 7 + 3) % 26)}list{index}"


def pair_keys(index: int) -> tuple[str, str]:
    """The two keys of pair ``index``: the same first letter, so the same shard."""
    return f"p{index}pair.x", f"p{index}pair.y"


@dataclass(slots=True, kw_only=True)
class TxnRecord:
    """One transaction as the checks see it. ``kind`` is transfer/audit/append;
    ``micro`` the list-append micro-operations (reads filled in when ok);
    ``outcome`` ok/fail/info; ``seen`` the balances an ok audit read."""

    kind: str
    ts: int
    start_ms: float
    micro: list[tuple[str, str, object]] = field(default_factory=list)
    end_ms: float = -1.0
    outcome: str = "pending"
    seen: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    transfer: tuple[str, str, int] = ("", "", 0)
    #: What an ok ``pair_read`` saw: the pair's two values.
    pair: tuple[str | None, str | None] = (None, None)


class TxnClient:
    """A client core running bank and list-append transactions."""

    def __init__(self, node: NodeId, shard_map: ShardMap, rng: random.Random, config: BankConfig) -> None:
        self.node = node
        self.shard_map = shard_map
        self.rng = rng
        self.config = config
        self.history: list[TxnRecord] = []
        self.current: TxnRecord | None = None
        self._leader: dict[str, NodeId] = {}
        self._request_id = 0
        self._live_request: int | None = None
        self._live_group = ""
        self._live_body: Message | None = None
        self._attempt_seq = 0
        self._txn_id = ""
        self._step = 0
        self._plan: list[tuple[str, str, object]] = []
        self._values: dict[str, str | None] = {}
        self._writes: dict[str, str | None] = {}
        self._read_groups: dict[str, list[str]] = {}
        #: The ballots the reads at each group were served under (sent back with
        #: the commit, which only that ballot's leader may accept).
        self._read_ballots: dict[str, list[Ballot]] = {}
        self._appended = 0
        self._committing = False

    # ------------------------------------------------------------ Core

    def start(self, now_ms: float, recovered: Recovered) -> Effects:
        for shard in self.shard_map.shards:
            self._leader[shard.group] = self.rng.choice(shard.replicas)
        return [SetTimer(key=NEXT_TIMER, delay_ms=self.rng.uniform(0.0, self.config.txn_interval_ms))]

    def on_timer(self, now_ms: float, key: str) -> Effects:
        if key == NEXT_TIMER:
            return self._maybe_begin(now_ms)
        if key == RETRY_TIMER and self._live_body is not None:
            replicas = self.shard_map.shard(self._live_group).replicas
            current = self._leader[self._live_group]
            self._leader[self._live_group] = self.rng.choice([r for r in replicas if r != current] or list(replicas))
            return self._send(now_ms)
        return []

    def on_message(self, now_ms: float, source: NodeId, message: Message) -> Effects:
        if not isinstance(message, ClientReply) or message.request_id != self._live_request:
            return []
        body = message.body
        match body:
            case ErrorReply(code="not_leader") if self._hedged():
                return []    # another replica answers, or the retry timer asks all again
            case ErrorReply(code="not_leader", hint=hint):
                replicas = self.shard_map.shard(self._live_group).replicas
                if hint in replicas:
                    self._leader[self._live_group] = NodeId(hint)
                    return self._send(now_ms)
                return []    # the retry timer tries another replica
            case ErrorReply(code="unavailable"):
                return []    # re-send on the retry timer (a commit keeps its id)
            case ErrorReply(code=code) if code in RETRYABLE:
                return self._retry_txn(now_ms)
            case ErrorReply():
                return self._finish(now_ms, "fail")
            case TxnValue(value=value, ballot=ballot) if not self._committing and ballot is not None:
                return self._on_read(now_ms, value, ballot)
            case TxnOutcome(committed=committed) if self._committing:
                return self._finish(now_ms, "ok" if committed else "fail")
            case _:
                return []

    def check_invariants(self) -> None:
        invariant(len(self.history) <= self.config.txns_max, "history over txns_max")

    # ------------------------------------------------------------ transactions

    def _maybe_begin(self, now_ms: float) -> Effects:
        again: Effects = [SetTimer(key=NEXT_TIMER, delay_ms=self.config.txn_interval_ms)]
        current = self.current
        if current is not None:
            if now_ms - current.start_ms >= self.config.op_timeout_ms:
                # Reads only so far: nothing can have committed; a commit: unknown.
                self._record(now_ms, "info" if self._committing else "fail")
            else:
                return again
        if len(self.history) >= self.config.txns_max or now_ms >= self.config.stop_ms:
            return []
        draw = self.rng.random()
        cfg = self.config
        record: TxnRecord
        if draw < cfg.transfer_fraction:
            a, b = self.rng.sample(range(cfg.accounts), 2)
            amount = self.rng.randint(1, 30)
            record = TxnRecord(kind="transfer", ts=int(now_ms * 1000), start_ms=now_ms,
                               transfer=(account_key(a), account_key(b), amount))
            plan: list[tuple[str, str, object]] = [("r", account_key(a), None), ("r", account_key(b), None)]
        elif draw < cfg.transfer_fraction + cfg.audit_fraction:
            record = TxnRecord(kind="audit", ts=int(now_ms * 1000), start_ms=now_ms)
            plan = [("r", account_key(i), None) for i in range(cfg.accounts)]
        elif draw < cfg.transfer_fraction + cfg.audit_fraction + cfg.pair_fraction:
            kind = self.rng.choice(("pair_write", "pair_rmw", "pair_read"))
            record = TxnRecord(kind=kind, ts=int(now_ms * 1000), start_ms=now_ms)
            x, y = pair_keys(self.rng.randrange(cfg.pairs))
            self._appended += 1
            value = f"{self.node}.{self._appended}"
            plans: dict[str, list[tuple[str, str, object]]] = {
                "pair_write": [("w", x, value), ("w", y, value)],
                "pair_rmw": [("r", self.rng.choice((x, y)), None), ("w", x, value), ("w", y, value)],
                "pair_read": [("r", x, None), ("r", y, None)]}
            plan = plans[kind]
        else:
            record = TxnRecord(kind="append", ts=int(now_ms * 1000), start_ms=now_ms)
            plan = []
            for _ in range(self.rng.randint(1, 3)):
                key = list_key(self.rng.randrange(cfg.list_keys))
                if self.rng.random() < 0.5:
                    plan.append(("r", key, None))
                else:
                    self._appended += 1
                    plan.append(("append", key, f"{self.node}.{self._appended}"))
            record.micro = list(plan)
        self.current = record
        self._plan = plan
        return [*self._begin_attempt(now_ms), *again]

    def _begin_attempt(self, now_ms: float) -> Effects:
        current = self.current
        assert current is not None
        current.attempts += 1
        self._attempt_seq += 1
        self._txn_id = f"{self.node}.{self._attempt_seq}"
        self._step = 0
        self._values = {}
        self._writes = {}
        self._read_groups = {}
        self._read_ballots = {}
        self._committing = False
        return self._next_step(now_ms)

    def _next_step(self, now_ms: float) -> Effects:
        """Issue the next read the plan needs, or the commit."""
        while self._step < len(self._plan):
            name, key, argument = self._plan[self._step]
            if name == "w":   # a pair's write: no read first
                self._writes[key] = str(argument)
                self._step += 1
                continue
            if key in self._values or key in self._writes:
                self._apply_step(key)
                continue
            group = self.shard_map.shard_for(key).group
            current = self.current
            assert current is not None
            return self._request(now_ms, group, TxnGet(txn=self._txn_id, ts=current.ts, key=key))
        return self._commit(now_ms)

    def _on_read(self, now_ms: float, value: str | None, ballot: Ballot) -> Effects:
        _, key, _ = self._plan[self._step]
        self._values[key] = value
        group = self.shard_map.shard_for(key).group
        self._read_groups.setdefault(group, []).append(key)
        ballots = self._read_ballots.setdefault(group, [])
        if ballot not in ballots:
            ballots.append(ballot)
        self._apply_step(key)
        return self._next_step(now_ms)

    def _view(self, key: str) -> str | None:
        return self._writes[key] if key in self._writes else self._values.get(key)

    def _apply_step(self, key: str) -> None:
        name, _, argument = self._plan[self._step]
        current = self.current
        assert current is not None
        if current.kind == "append":
            if name == "append":
                listed = self._view(key)
                self._writes[key] = f"{listed},{argument}" if listed else str(argument)
            else:
                listed = self._view(key)
                current.micro[self._step] = ("r", key, tuple(listed.split(",")) if listed else ())
        self._step += 1
        if self._step == len(self._plan) and current.kind == "transfer":
            source, target, amount = current.transfer
            balance_source = self._balance(source)
            if balance_source >= amount:
                self._writes[source] = str(balance_source - amount)
                self._writes[target] = str(self._balance(target) + amount)

    def _balance(self, key: str) -> int:
        value = self._view(key)
        return self.config.initial_balance if value is None else int(value)

    def _commit(self, now_ms: float) -> Effects:
        current = self.current
        assert current is not None
        parts: dict[str, Part] = {}
        groups = list(self._read_groups)
        for key in self._writes:
            group = self.shard_map.shard_for(key).group
            if group not in groups:
                groups.append(group)
        writes_by_group: dict[str, list[Write]] = {}
        for key, value in self._writes.items():
            writes_by_group.setdefault(self.shard_map.shard_for(key).group, []).append(Write(key=key, value=value))
        # The coordinator is a group this transaction writes, if any.
        order = {g: i for i, g in enumerate(groups)}
        groups.sort(key=lambda g: (g not in writes_by_group, order[g]))
        for group in groups:
            parts[group] = Part(group=group, read_keys=tuple(dict.fromkeys(self._read_groups.get(group, []))),
                                writes=tuple(writes_by_group.get(group, [])),
                                read_ballots=tuple(self._read_ballots.get(group, [])))
        if current.kind == "audit":
            current.seen = {key: self._balance(key) for key in self._values}
        if current.kind == "pair_read":
            current.pair = (self._values.get(self._plan[0][1]), self._values.get(self._plan[1][1]))
        self._committing = True
        body = TxnCommit(txn=self._txn_id, ts=current.ts, parts=tuple(parts[g] for g in groups))
        return self._request(now_ms, groups[0], body)

    def _retry_txn(self, now_ms: float) -> Effects:
        current = self.current
        assert current is not None
        effects = self._release(now_ms)
        if current.attempts >= self.config.attempts_max:
            self._record(now_ms, "fail")
            return effects
        return [*effects, *self._begin_attempt(now_ms)]

    def _release(self, now_ms: float) -> Effects:
        """Best effort: tell every shard read so far to drop this attempt's locks."""
        effects: Effects = []
        for group in self._read_groups:
            self._request_id += 1
            effects.append(Send(to=self._leader[group],
                                message=ClientRequest(request_id=self._request_id, body=TxnRelease(txn=self._txn_id))))
        return effects

    def _finish(self, now_ms: float, outcome: str) -> Effects:
        self._record(now_ms, outcome)
        return []

    def _record(self, now_ms: float, outcome: str) -> None:
        current = self.current
        assert current is not None
        current.end_ms = now_ms
        current.outcome = outcome
        self.history.append(current)
        self.current = None
        self._live_request = None
        self._live_body = None
        self._committing = False

    def _request(self, now_ms: float, group: str, body: Message) -> Effects:
        self._live_group = group
        self._live_body = body
        return self._send(now_ms)

    def _hedged(self) -> bool:
        return self.config.hedged_reads and isinstance(self._live_body, TxnGet)

    def _send(self, now_ms: float) -> Effects:
        body = self._live_body
        assert body is not None
        self._request_id += 1
        self._live_request = self._request_id
        request = ClientRequest(request_id=self._request_id, body=body)
        targets = self.shard_map.shard(self._live_group).replicas if self._hedged() else (
            self._leader[self._live_group],)
        return [*(Send(to=target, message=request) for target in targets),
                SetTimer(key=RETRY_TIMER, delay_ms=self.config.retry_ms)]


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnClientFactory:
    """Builds a ``TxnClient`` (a ``synod.core.CoreFactory``)."""

    shard_map: ShardMap
    config: BankConfig

    def __call__(self, node: NodeId, rng: random.Random) -> TxnClient:
        return TxnClient(node, self.shard_map, rng, self.config)
