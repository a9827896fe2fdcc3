"""The server glue (``synod.paxos.server.PaxosServer``) driven by hand, sans I/O:
batches in, one batch reply out, answers routed out of ``Persist.then`` too."""

from __future__ import annotations

import random

from synod.codec.kernel import ClientRequest, ErrorReply
from synod.codec.registry import decode, encode
from synod.core.effects import ClientResult, Effect, Persist, Recovered, Send, SetTimer
from synod.core.ids import NodeId
from synod.paxos import kv
from synod.paxos.config import PaxosConfig
from synod.paxos.kv import KeyValue
from synod.paxos.messages import Command, CommandResult, Read, ReadMode, ReadResult
from synod.paxos.replica import PaxosReplica
from synod.paxos.server import (
    ClientBatch,
    ClientBatchReply,
    PaxosServer,
    ServerConfig,
    StatusQuery,
    StatusReply,
    kv_factory,
)

N1 = NodeId("n1")
CLIENT = NodeId("app#1")


class Driver:
    """One single-member group: every Persist is durable at once, zero-delay
    timers fire at once, other timers when ``advance`` passes them."""

    def __init__(self, server: PaxosServer) -> None:
        self.server = server
        self.now_ms = 0.0
        self.timers: dict[str, float] = {}
        self.results: list[ClientResult] = []
        self.held: list[Persist] = []
        self.hold_persists = False
        self.run(server.start(self.now_ms, Recovered()))

    def run(self, effects: list[Effect]) -> None:
        queue = list(effects)
        while queue:
            effect = queue.pop(0)
            match effect:
                case Persist() if self.hold_persists:
                    self.held.append(effect)   # the disk has not answered yet
                case Persist():
                    queue[0:0] = list(effect.then)
                case SetTimer() if effect.delay_ms == 0:
                    queue.extend(self.server.on_timer(self.now_ms, effect.key))
                case SetTimer():
                    self.timers[effect.key] = self.now_ms + effect.delay_ms
                case ClientResult():
                    self.results.append(effect)
                case Send() if effect.to == N1:
                    queue.extend(self.server.on_message(self.now_ms, N1, effect.message))
                case _:
                    pass
        self.server.check_invariants()

    def advance(self, ms: float) -> None:
        end = self.now_ms + ms
        while True:
            due = sorted((at, key) for key, at in self.timers.items() if at <= end)
            if not due:
                break
            at, key = due[0]
            del self.timers[key]
            self.now_ms = at
            self.run(self.server.on_timer(self.now_ms, key))
        self.now_ms = end

    def request(self, request_id: int, body: object) -> None:
        message = decode(encode(ClientRequest(request_id=request_id, body=body)))  # type: ignore[arg-type]
        self.run(self.server.on_message(self.now_ms, CLIENT, message))


def leader_server(config: ServerConfig | None = None) -> Driver:
    replica = PaxosReplica(N1, random.Random(3), members=(N1,), machine=KeyValue(), config=PaxosConfig.sim())
    driver = Driver(PaxosServer(replica, config))
    driver.advance(5_000)
    assert replica.is_leader
    return driver


def command(seq: int, op: bytes) -> Command:
    return Command(client="c", seq=seq, seen_below=1, op=op)


def test_a_batch_gets_one_reply_with_an_answer_per_item_in_order() -> None:
    driver = leader_server()
    driver.request(7, ClientBatch(items=(
        command(1, kv.op_put("a", "1")),
        Read(op=kv.op_get("a"), mode=ReadMode.STALE),
        command(2, kv.op_cas("a", "1", "2")),
        command(3, b"\xc1garbage"),
    )))
    assert len(driver.results) == 1
    (result,) = driver.results
    assert result.client == CLIENT and result.request_id == 7
    reply = result.result
    assert isinstance(reply, ClientBatchReply) and len(reply.items) == 4
    put, read, cas, bad = reply.items
    assert isinstance(put, CommandResult) and put.seq == 1
    assert isinstance(read, ReadResult)   # stale: served before the put applied
    assert isinstance(cas, CommandResult) and kv.decode_result(cas.result) == (True, "2")
    assert isinstance(bad, CommandResult) and "error" in kv.decode_result(bad.result)
    assert not driver.server._items and not driver.server._batches


def test_unbatched_requests_pass_through_untouched() -> None:
    driver = leader_server()
    driver.request(3, command(1, kv.op_put("x", "y")))
    (result,) = driver.results
    assert result.request_id == 3 and isinstance(result.result, CommandResult)


def test_a_retried_batch_item_is_answered_from_the_exactly_once_table() -> None:
    driver = leader_server()
    cas = command(1, kv.op_cas("k", None, "v"))
    driver.request(1, ClientBatch(items=(cas,)))
    driver.request(2, ClientBatch(items=(cas, command(2, kv.op_get("k")))))
    first, second = (r.result for r in driver.results)
    assert isinstance(first, ClientBatchReply) and isinstance(second, ClientBatchReply)
    assert first.items[0] == second.items[0]
    assert kv.decode_result(second.items[1].result) == "v"  # type: ignore[attr-defined]
    assert driver.server.replica.statistics().commands_applied == 2


def test_empty_and_oversized_batches_are_refused() -> None:
    driver = leader_server(ServerConfig(batch_items_max=2))
    driver.request(1, ClientBatch(items=()))
    driver.request(2, ClientBatch(items=tuple(command(i, kv.op_put("k", "v")) for i in range(1, 4))))
    empty, big = (r.result for r in driver.results)
    assert isinstance(empty, ErrorReply) and empty.code == "bad_request"
    assert isinstance(big, ErrorReply) and big.code == "too_large"
    assert driver.server.replica.statistics().commands_applied == 0


def test_a_follower_answers_every_item_not_leader() -> None:
    replica = PaxosReplica(N1, random.Random(3), members=(N1, NodeId("n2"), NodeId("n3")),
                           machine=KeyValue(), config=PaxosConfig.sim())
    driver = Driver(PaxosServer(replica))
    driver.request(5, ClientBatch(items=(command(1, kv.op_put("a", "1")), Read(op=kv.op_get("a")))))
    (result,) = driver.results
    assert isinstance(result.result, ClientBatchReply)
    assert [item.code for item in result.result.items] == ["not_leader", "not_leader"]  # type: ignore[attr-defined]


def test_status_reports_role_leader_and_digest() -> None:
    driver = leader_server()
    driver.request(9, StatusQuery())
    (result,) = driver.results
    status = result.result
    assert isinstance(status, StatusReply)
    assert status.node == "n1" and status.role == "leader" and status.leader == "n1"
    assert status.digest == driver.server.replica.digest() and status.leaderships == 1


def test_unanswered_batches_are_bounded() -> None:
    """Batches whose items get no answer yet (here: the leader's disk never
    finishes an fsync) are forgotten oldest first past batches_max."""
    driver = leader_server(ServerConfig(batches_max=3))
    driver.hold_persists = True
    for i in range(1, 6):
        driver.request(i, ClientBatch(items=(command(i, kv.op_put("k", str(i))),)))
    server = driver.server
    assert not driver.results and driver.held
    assert len(server._batches) == 3 and server.batches_forgotten == 2
    assert all(key in server._batches for key, _ in server._items.values())
    # The disk catches up: the three remembered batches are answered, the two
    # forgotten ones are not (their clients time out and retry with the same seq).
    driver.hold_persists = False
    held, driver.held = driver.held, []
    driver.run(list(held))
    assert sorted(r.request_id for r in driver.results) == [3, 4, 5]


def test_the_process_builder_uses_a_small_phase2_window() -> None:
    factory = kv_factory((NodeId("n2"), NodeId("n1"), NodeId("n3")))
    assert factory.members == ("n1", "n2", "n3")
    assert factory.paxos.window_slots_max == 4 and factory.paxos.snapshot_interval_slots == 1000
    server = factory(NodeId("n1"), random.Random(1))
    assert isinstance(server, PaxosServer) and server.replica.config.window_slots_max == 4
