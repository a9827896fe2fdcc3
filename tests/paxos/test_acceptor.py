"""Claims about the acceptor (Paxos Made Simple 2.2-2.3; Paxos Made Live 5.2)."""

from __future__ import annotations

from synod.codec.registry import decode
from synod.core.faults import enable_mutant
from synod.paxos.messages import (
    NOOP,
    Accept,
    Accepted,
    AcceptRecord,
    Command,
    Entry,
    Prepare,
    Promise,
    PromiseRecord,
    Reject,
    Value,
    ValueKind,
)
from synod.paxos.replica import MUTANT_ANSWER_BEFORE_PERSIST, ROUND_MAX
from tests.paxos.helpers import CONFIG, N2, N3, READY_MS, ballot, fresh, records, sends


def _only_reply(effects: list, kind: type) -> object:
    replies = [s.message for s in sends(effects) if isinstance(s.message, kind)]
    assert len(replies) == 1, effects
    return replies[0]


def test_an_acceptor_never_promises_an_equal_or_lower_ballot() -> None:
    replica = fresh()
    first = replica.on_message(READY_MS, N2, Prepare(ballot=ballot(5, N2), from_slot=1))
    assert isinstance(_only_reply(first, Promise), Promise)
    again = replica.on_message(READY_MS, N2, Prepare(ballot=ballot(5, N2), from_slot=1))
    reject = _only_reply(again, Reject)
    assert isinstance(reject, Reject) and reject.promised == ballot(5, N2)
    lower = replica.on_message(READY_MS, N3, Prepare(ballot=ballot(4, N3), from_slot=1))
    assert isinstance(_only_reply(lower, Reject), Reject)
    assert replica.promised == ballot(5, N2)


def test_ballots_tie_break_on_node_id() -> None:
    assert ballot(3, N3) > ballot(3, N2) > ballot(2, N3)


def test_a_promise_is_persisted_before_it_is_sent() -> None:
    replica = fresh()
    effects = replica.on_message(READY_MS, N2, Prepare(ballot=ballot(1, N2), from_slot=1))
    assert not [s for s in effects if hasattr(s, "message")], "no Send outside the Persist"
    assert [s.message for s in sends(effects, durable_only=True)]
    assert decode(records(effects)[0]) == PromiseRecord(ballot=ballot(1, N2))


def test_an_accepted_answer_is_persisted_before_it_is_sent() -> None:
    replica = fresh()
    entry = Entry(slot=1, ballot=ballot(1, N2), value=NOOP)
    effects = replica.on_message(READY_MS, N2, Accept(ballot=ballot(1, N2), round=1, entries=(entry,), chosen_index=0))
    durable = [s.message for s in sends(effects, durable_only=True)]
    assert any(isinstance(m, Accepted) for m in durable)
    assert not any(isinstance(e, type(sends(effects)[0])) and isinstance(e.message, Accepted) for e in effects)
    assert any(isinstance(decode(r), AcceptRecord) for r in records(effects))


def test_the_answer_before_persist_mutant_sends_outside_the_persist() -> None:
    enable_mutant(MUTANT_ANSWER_BEFORE_PERSIST)
    replica = fresh()
    effects = replica.on_message(READY_MS, N2, Prepare(ballot=ballot(1, N2), from_slot=1))
    assert any(hasattr(e, "message") and isinstance(e.message, Promise) for e in effects)


def test_an_acceptor_rejects_an_accept_below_its_promise() -> None:
    replica = fresh()
    replica.on_message(READY_MS, N3, Prepare(ballot=ballot(2, N3), from_slot=1))
    entry = Entry(slot=1, ballot=ballot(1, N2), value=NOOP)
    effects = replica.on_message(READY_MS, N2, Accept(ballot=ballot(1, N2), round=1, entries=(entry,), chosen_index=0))
    assert isinstance(_only_reply(effects, Reject), Reject)
    assert 1 not in replica.log


def test_a_promise_reports_the_accepted_values_from_the_asked_slot() -> None:
    replica = fresh()
    value = Value(kind=ValueKind.COMMANDS, commands=(Command(client="c", seq=1, seen_below=1, op=b"x"),))
    entries = (Entry(slot=1, ballot=ballot(1, N2), value=NOOP), Entry(slot=3, ballot=ballot(1, N2), value=value))
    replica.on_message(READY_MS, N2, Accept(ballot=ballot(1, N2), round=1, entries=entries, chosen_index=0))
    # The lease granted to n2 must run out before n3 can be promised anything.
    later = READY_MS + CONFIG.lease_ms + 1
    effects = replica.on_message(later, N3, Prepare(ballot=ballot(2, N3), from_slot=2))
    promise = _only_reply(effects, Promise)
    assert isinstance(promise, Promise)
    assert [e.slot for e in promise.entries] == [3] and promise.entries[0].value == value


def test_no_promise_to_another_proposer_while_a_granted_lease_holds() -> None:
    replica = fresh()
    replica.on_message(READY_MS, N2, Accept(ballot=ballot(1, N2), round=1, entries=(), chosen_index=0))
    during = replica.on_message(READY_MS + CONFIG.lease_ms - 1, N3, Prepare(ballot=ballot(2, N3), from_slot=1))
    reject = _only_reply(during, Reject)
    assert isinstance(reject, Reject) and reject.reason == "lease"
    after = replica.on_message(READY_MS + CONFIG.lease_ms + 1, N3, Prepare(ballot=ballot(2, N3), from_slot=1))
    assert isinstance(_only_reply(after, Promise), Promise)


def test_the_lease_holder_itself_may_raise_its_ballot_during_its_lease() -> None:
    replica = fresh()
    replica.on_message(READY_MS, N2, Accept(ballot=ballot(1, N2), round=1, entries=(), chosen_index=0))
    effects = replica.on_message(READY_MS + 1, N2, Prepare(ballot=ballot(2, N2), from_slot=1))
    assert isinstance(_only_reply(effects, Promise), Promise)


def test_a_restarted_acceptor_waits_lease_plus_drift_before_promising() -> None:
    replica = fresh()
    effects = replica.on_message(READY_MS, N2, Prepare(ballot=ballot(1, N2), from_slot=1))
    disk = tuple(records(effects))
    restart_ms = 10_000.0
    restarted = fresh(records=disk, now_ms=restart_ms)
    assert restarted.promised == ballot(1, N2)
    wait_ms = CONFIG.lease_ms + CONFIG.clock_drift_bound_ms
    early = restarted.on_message(restart_ms + wait_ms - 1, N3, Prepare(ballot=ballot(2, N3), from_slot=1))
    reject = _only_reply(early, Reject)
    assert isinstance(reject, Reject) and reject.reason == "waiting"
    late = restarted.on_message(restart_ms + wait_ms + 1, N3, Prepare(ballot=ballot(2, N3), from_slot=1))
    assert isinstance(_only_reply(late, Promise), Promise)


def test_a_restarted_acceptor_keeps_its_promise_and_accepted_values() -> None:
    replica = fresh()
    disk = list(records(replica.on_message(READY_MS, N2, Prepare(ballot=ballot(3, N2), from_slot=1))))
    entry = Entry(slot=1, ballot=ballot(3, N2), value=NOOP)
    disk += records(replica.on_message(READY_MS, N2, Accept(ballot=ballot(3, N2), round=1, entries=(entry,), chosen_index=0)))
    restarted = fresh(records=tuple(disk), now_ms=50_000.0)
    assert restarted.promised == ballot(3, N2)
    assert restarted.log[1] == entry
    stale = restarted.on_message(60_000.0, N2, Prepare(ballot=ballot(3, N2), from_slot=1))
    assert isinstance(_only_reply(stale, Reject), Reject)


def test_a_ballot_from_the_future_is_ignored_and_counted() -> None:
    replica = fresh()
    effects = replica.on_message(READY_MS, N2, Prepare(ballot=ballot(ROUND_MAX, N2), from_slot=1))
    assert effects == []
    assert dict(replica.statistics().ignored)["prepare_forged"] == 1
    assert replica.promised.round == 0


def test_a_ballot_not_from_its_sender_is_ignored() -> None:
    replica = fresh()
    effects = replica.on_message(READY_MS, N3, Prepare(ballot=ballot(1, N2), from_slot=1))
    assert effects == [] and replica.promised.round == 0


def test_a_forged_slot_number_is_ignored_and_never_applied() -> None:
    replica = fresh()
    far = Entry(slot=10**12, ballot=ballot(1, N2), value=NOOP)
    effects = replica.on_message(READY_MS, N2, Accept(ballot=ballot(1, N2), round=1, entries=(far,), chosen_index=0))
    assert effects == []
    assert dict(replica.statistics().ignored)["accept_forged_slot"] == 1
    assert not replica.log


def test_an_oversized_batch_is_ignored_and_never_applied() -> None:
    replica = fresh()
    commands = tuple(Command(client="c", seq=i, seen_below=0, op=b"x") for i in range(CONFIG.batch_commands_max + 1))
    entry = Entry(slot=1, ballot=ballot(1, N2), value=Value(kind=ValueKind.COMMANDS, commands=commands))
    effects = replica.on_message(READY_MS, N2, Accept(ballot=ballot(1, N2), round=1, entries=(entry,), chosen_index=1))
    assert effects == []
    assert dict(replica.statistics().ignored)["accept_oversized_batch"] == 1
    assert replica.chosen_index == 0 and not replica.log


def test_an_oversized_command_inside_a_batch_is_ignored() -> None:
    replica = fresh()
    big = Command(client="c", seq=1, seen_below=0, op=b"x" * (CONFIG.command_bytes_max + 1))
    entry = Entry(slot=1, ballot=ballot(1, N2), value=Value(kind=ValueKind.COMMANDS, commands=(big,)))
    effects = replica.on_message(READY_MS, N2, Accept(ballot=ballot(1, N2), round=1, entries=(entry,), chosen_index=1))
    assert effects == [] and not replica.log


def test_the_promise_equal_ballot_mutant_promises_a_lower_ballot_of_the_same_round() -> None:
    from synod.paxos.replica import MUTANT_PROMISE_EQUAL_BALLOT

    enable_mutant(MUTANT_PROMISE_EQUAL_BALLOT)
    replica = fresh()
    replica.on_message(READY_MS, N3, Prepare(ballot=ballot(5, N3), from_slot=1))
    effects = replica.on_message(READY_MS, N2, Prepare(ballot=ballot(5, N2), from_slot=1))
    assert isinstance(_only_reply(effects, Promise), Promise)
    assert replica.promised == ballot(5, N2), "the promise went down: two leaders can share round 5"
