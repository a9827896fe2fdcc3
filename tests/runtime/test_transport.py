"""Bounded queues, back-off, connection limits, client timeouts, config checks."""

from __future__ import annotations

import asyncio
import logging
import random
import socket

import pytest

from synod.core.errors import ConfigError, TimeoutError_
from synod.runtime.client import connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.transport import SendQueue, backoff_delay_ms
from tests.runtime.cores import Answer, Command
from tests.runtime.helpers import ALICE_KEY, make_config, notes_when, run, running_host, wait_until


def test_send_queue_refuses_past_its_message_bound_and_frees_room_when_taken() -> None:
    async def scenario() -> None:
        queue = SendQueue(messages_max=3, bytes_max=1000)
        assert [queue.offer(b"x" * 10) for _ in range(4)] == [True, True, True, False]
        waiter = asyncio.ensure_future(queue.wait_writable())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # a client waits for room instead of growing the queue
        assert await queue.take(bytes_max=1_000_000) == [b"x" * 10] * 3
        await asyncio.wait_for(waiter, 5)
        assert queue.offer(b"y")

    run(scenario())


def test_send_queue_bounds_bytes_but_always_takes_one_frame_when_empty() -> None:
    async def scenario() -> None:
        queue = SendQueue(messages_max=100, bytes_max=100)
        assert queue.offer(b"a" * 60)
        assert not queue.offer(b"b" * 60)
        assert queue.queued_bytes == 60
        await queue.take(bytes_max=10)
        assert queue.offer(b"c" * 500)  # empty queue: one frame of any allowed size fits
        assert len(queue) == 1

    run(scenario())


def test_send_queue_take_batches_up_to_the_byte_limit() -> None:
    async def scenario() -> None:
        queue = SendQueue(messages_max=100, bytes_max=10_000)
        for i in range(10):
            queue.offer(bytes([i]) * 100)
        first = await queue.take(bytes_max=250)
        assert len(first) == 2
        rest = await queue.take(bytes_max=10_000)
        assert len(rest) == 8 and rest[0] == bytes([2]) * 100  # order kept

    run(scenario())


def test_backoff_grows_exponentially_with_full_jitter_and_is_capped() -> None:
    config = RuntimeConfig(reconnect_delay_ms_min=10.0, reconnect_delay_ms_max=1000.0)
    rng = random.Random(3)
    for failures in range(20):
        ceiling = min(1000.0, 10.0 * 2**failures)
        delays = [backoff_delay_ms(failures, config, rng) for _ in range(200)]
        assert all(10.0 <= d <= ceiling for d in delays)
    late = [backoff_delay_ms(12, config, rng) for _ in range(500)]
    assert max(late) > 500.0  # jitter spreads over the whole window
    assert min(late) < 500.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_full_peer_queue_drops_its_oldest_frames_instead_of_growing() -> None:
    async def scenario() -> None:
        # The peer's port has no listener: the link retries, its queue fills up.
        port = free_port()
        config = make_config(peers={"n2": ("127.0.0.1", port)}, send_queue_messages_max=3)
        async with running_host("n1", config=config) as n1:
            assert n1.address is not None
            async with await connect(n1.address, "alice", ALICE_KEY) as client:
                for i in range(10):
                    await client.request(Command(op="forward", arg=f"n2:m{i}"), 20)
            stats = n1.statistics()
            assert stats.send_queue_dropped_oldest == 7
            assert stats.send_queue_full == 0
            await wait_until(lambda: n1.statistics().peer_connect_failures >= 1, "connect failures")
            # The peer comes up at that address: it gets the three newest.
            async with running_host("n2", port=port) as n2:
                assert await notes_when(n2, 3) == ("n1:m7", "n1:m8", "n1:m9")

    run(scenario())


def test_connections_past_the_limit_are_refused_and_counted() -> None:
    async def scenario() -> None:
        async with running_host(config=make_config(connections_max=1)) as host:
            assert host.address is not None
            first = await connect(host.address, "alice", ALICE_KEY)
            with pytest.raises(Exception):  # noqa: B017 - closed during the handshake
                await connect(host.address, "alice", ALICE_KEY)
            assert host.statistics().connections_refused_limit == 1
            assert await first.request(Command(op="echo", arg="still"), 20) == Answer(items=("still",))
            await first.close()

    run(scenario())


def test_a_request_without_reply_times_out_with_a_typed_error() -> None:
    async def scenario() -> None:
        async with running_host() as host:
            assert host.address is not None
            async with await connect(host.address, "alice", ALICE_KEY) as client:
                with pytest.raises(TimeoutError_):
                    await client.request(Command(op="ignore"), 0.2)
                # The connection is still usable afterwards.
                assert await client.request(Command(op="echo", arg="x"), 20) == Answer(items=("x",))

    run(scenario())


def test_insecure_mode_works_between_insecure_ends_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        config = make_config(insecure=True)
        async with running_host(config=config) as host:
            assert host.address is not None
            async with await connect(host.address, "alice", None, config=config) as client:
                reply = await client.request(Command(op="whoami"), 20)
                assert isinstance(reply, Answer) and reply.items[1] == "alice"

    with caplog.at_level(logging.WARNING, logger="synod.runtime.host"):
        run(scenario())
    assert any("INSECURE" in record.message for record in caplog.records)


def test_a_secure_client_refuses_an_insecure_node() -> None:
    from synod.runtime.auth import AuthenticationError

    async def scenario() -> None:
        async with running_host(config=make_config(insecure=True)) as host:
            assert host.address is not None
            with pytest.raises(AuthenticationError):
                await connect(host.address, "alice", ALICE_KEY)

    run(scenario())


@pytest.mark.parametrize(
    "changes",
    [
        {"frame_bytes_max": 0},
        {"handshake_timeout_s": -1.0},
        {"reconnect_delay_ms_min": 100.0, "reconnect_delay_ms_max": 10.0},
        {"send_queue_bytes_max": 1024},
        {"datagram_bytes_max": 70_000},
        {"tls_cert_file": "cert.pem"},
        {"insecure": True, "tls_cert_file": "c", "tls_key_file": "k", "tls_ca_file": "a"},
        {"peers": {"n2": ("127.0.0.1", 70000)}},
        {"peers": {"n2": "127.0.0.1:7002"}},
    ],
)
def test_config_refuses_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RuntimeConfig(**changes)  # type: ignore[arg-type]



def test_config_loads_from_toml_values() -> None:
    import tomllib

    from synod.core.config import config_from_mapping

    table = tomllib.loads(
        """
        frame_bytes_max = 1048576
        handshake_timeout_s = 2
        tls_cert_file = "n1.pem"
        tls_key_file = "n1.key"
        tls_ca_file = "ca.pem"
        peers = { n2 = ["127.0.0.1", 7002] }
        """
    )
    config = config_from_mapping(RuntimeConfig, table)
    assert config.frame_bytes_max == 1048576 and config.handshake_timeout_s == 2.0
    assert config.tls_enabled and config.tls_ca_file is not None and config.tls_ca_file.name == "ca.pem"
    assert config.peers == {"n2": ("127.0.0.1", 7002)}


def test_a_direct_write_never_overtakes_queued_frames() -> None:
    """``Connection.write_now`` sends the first frame of a loop iteration at once;
    a frame offered while others wait in the queue must go behind them."""
    from synod.codec.frames import FrameDecoder
    from synod.codec.registry import decode
    from synod.runtime.auth import Authenticated
    from synod.runtime.stats import Counters, RuntimeStatistics
    from synod.runtime.transport import Connection

    async def scenario() -> None:
        left, right = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=left)
        peer_reader, peer_writer = await asyncio.open_connection(sock=right)
        config = make_config()
        connection = Connection(reader=reader, writer=writer, decoder=FrameDecoder(),
                                peer=Authenticated(principal="n2", kind="node"), config=config,
                                counters=Counters(RuntimeStatistics))
        # A backlog from before the connection was up (as a PeerLink's queue has).
        for i in range(3):
            connection.queue.offer(connection._frame(Command(op="echo", arg=f"queued{i}")))
        task = asyncio.create_task(connection.run(lambda conn, msg: None))
        await asyncio.sleep(0)   # the writer task exists, the backlog is not yet sent
        assert connection.offer(Command(op="echo", arg="late"))
        await asyncio.sleep(0.05)   # a later iteration: this one may go directly
        assert connection.offer(Command(op="echo", arg="later"))
        decoder = FrameDecoder()
        got: list[str] = []
        while len(got) < 5:
            data = await asyncio.wait_for(peer_reader.read(65536), 5)
            assert data
            got += [decode(f).arg for f in decoder.feed(data)]  # type: ignore[attr-defined]
        assert got == ["queued0", "queued1", "queued2", "late", "later"]
        assert connection.counters.snapshot().messages_sent == 5
        connection.close("done")
        await task
        peer_writer.close()

    run(scenario())
