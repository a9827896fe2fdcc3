"""The HMAC handshake (sans-IO), one test per claim of ``auth.py``'s theory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.codec.registry import Message, decode, encode
from synod.core.errors import ConfigError, RemoteProtocolError
from synod.runtime.auth import (
    AcceptorHandshake,
    AuthChallenge,
    AuthenticationError,
    AuthHello,
    AuthProof,
    InitiatorHandshake,
    Key,
    Keyring,
    Mode,
    ReplayCache,
)

CLUSTER = Key(0, b"c" * 32)
ALICE = Key(0, b"a" * 32)
KEYRING = Keyring(cluster=(CLUSTER,), users={"alice": ALICE})


def wire(msg: Message) -> Message:
    """Through the codec, as on a socket."""
    return decode(encode(msg))


def acceptor(principal: str = "n1", keyring: Keyring = KEYRING, cache: ReplayCache | None = None,
             mode: Mode = "hmac") -> AcceptorHandshake:
    return AcceptorHandshake(
        mode=mode, principal=principal, keyring=keyring, replay_cache=cache or ReplayCache(100)
    )


def handshake(init: InitiatorHandshake, acc: AcceptorHandshake) -> list[Message]:
    """Run both sides to the end; returns the initiator's messages (a recording)."""
    sent: list[Message] = [wire(init.start())]
    to_initiator = acc.receive(sent[0])
    while to_initiator:
        to_acceptor: list[Message] = []
        for msg in to_initiator:
            to_acceptor += init.receive(wire(msg))
        sent += to_acceptor
        to_initiator = [reply for msg in to_acceptor for reply in acc.receive(wire(msg))]
    return sent


def node_initiator(principal: str = "n2", key: Key = CLUSTER, expected: str | None = "n1") -> InitiatorHandshake:
    return InitiatorHandshake(mode="hmac", kind="node", principal=principal, key=key, expected_acceptor=expected)


def test_two_nodes_sharing_the_cluster_key_authenticate_each_other() -> None:
    init, acc = node_initiator(), acceptor()
    handshake(init, acc)
    assert acc.result is not None and (acc.result.principal, acc.result.kind) == ("n2", "node")
    assert init.result is not None and init.result.principal == "n1"


def test_a_client_authenticates_with_its_own_key_as_a_client() -> None:
    init = InitiatorHandshake(mode="hmac", kind="client", principal="alice", key=ALICE, expected_acceptor="n1")
    acc = acceptor()
    handshake(init, acc)
    assert acc.result is not None and (acc.result.principal, acc.result.kind) == ("alice", "client")


def test_a_wrong_key_fails_the_proof() -> None:
    init = InitiatorHandshake(
        mode="hmac", kind="client", principal="alice", key=Key(0, b"x" * 32), expected_acceptor=None
    )
    acc = acceptor()
    challenge = acc.receive(wire(init.start()))
    # The initiator notices first: the acceptor proved a key it does not hold.
    with pytest.raises(AuthenticationError) as error:
        init.receive(wire(challenge[0]))
    assert error.value.reason == "bad_proof"


def test_an_initiator_proof_made_with_a_wrong_key_is_refused() -> None:
    acc = acceptor()
    hello = AuthHello(version=1, mode="hmac", kind="client", principal="alice", key_id=0, nonce=b"1" * 32)
    acc.receive(hello)
    with pytest.raises(AuthenticationError) as error:
        acc.receive(AuthProof(proof=b"\x00" * 32))
    assert error.value.reason == "bad_proof"
    assert acc.result is None


def test_a_recorded_handshake_replayed_is_refused_even_after_the_nonce_is_forgotten() -> None:
    cache = ReplayCache(100)
    recording = handshake(node_initiator(), acceptor(cache=cache))
    # The same node remembers the nonce: the replay is refused and named.
    with pytest.raises(AuthenticationError) as replay:
        acceptor(cache=cache).receive(recording[0])
    assert replay.value.reason == "replayed_handshake"
    # A node that forgot it (restarted, or evicted it): its fresh challenge nonce
    # makes the recorded proof wrong.
    fresh = acceptor(cache=ReplayCache(100))
    fresh.receive(recording[0])
    with pytest.raises(AuthenticationError) as error:
        fresh.receive(recording[1])
    assert error.value.reason == "bad_proof"
    assert fresh.result is None


def test_a_reflected_acceptor_proof_is_not_an_initiator_proof() -> None:
    # The attacker claims to be n2 to n1, gets n1's challenge proof, and sends it back.
    acc = acceptor()
    hello = AuthHello(version=1, mode="hmac", kind="node", principal="n2", key_id=0, nonce=b"r" * 32)
    (challenge,) = acc.receive(hello)
    assert isinstance(challenge, AuthChallenge)
    with pytest.raises(AuthenticationError) as error:
        acc.receive(AuthProof(proof=challenge.proof))
    assert error.value.reason == "bad_proof"


def test_the_initiator_checks_it_reached_the_node_it_dialled() -> None:
    init, acc = node_initiator(expected="n3"), acceptor("n1")
    with pytest.raises(AuthenticationError) as error:
        handshake(init, acc)
    assert error.value.reason == "unknown_principal"


def test_a_user_cannot_speak_as_a_node_nor_an_unknown_user_at_all() -> None:
    with pytest.raises(AuthenticationError) as as_node:
        handshake(
            InitiatorHandshake(mode="hmac", kind="node", principal="alice", key=ALICE, expected_acceptor=None),
            acceptor(),
        )
    assert as_node.value.reason == "unknown_principal"
    with pytest.raises(AuthenticationError) as unknown:
        handshake(
            InitiatorHandshake(mode="hmac", kind="client", principal="bob", key=ALICE, expected_acceptor=None),
            acceptor(),
        )
    assert unknown.value.reason == "unknown_principal"


def test_insecure_and_secure_sides_refuse_each_other() -> None:
    insecure = InitiatorHandshake(mode="insecure", kind="node", principal="n2", key=None, expected_acceptor="n1")
    with pytest.raises(AuthenticationError) as error:
        handshake(insecure, acceptor())
    assert error.value.reason == "mode_mismatch"
    # A secure initiator refuses an acceptor that accepts without proving anything.
    with pytest.raises(AuthenticationError) as refused:
        handshake(node_initiator(), acceptor(mode="insecure"))
    assert refused.value.reason == "mode_mismatch"
    # Two insecure sides get along (development only).
    insecure = InitiatorHandshake(mode="insecure", kind="node", principal="n2", key=None, expected_acceptor="n1")
    acc = acceptor(mode="insecure")
    handshake(insecure, acc)
    assert acc.result is not None and acc.result.principal == "n2"


def test_key_rotation_install_use_remove() -> None:
    new = Key(7, b"n" * 32)
    old_ring = KEYRING
    both = old_ring.install(new)
    # Installed but not used: nodes still initiate with the old key, and a node
    # that already uses the new one is accepted.
    handshake(node_initiator(key=both.primary), acceptor(keyring=both))
    handshake(node_initiator(key=new), acceptor(keyring=both))
    switched = both.use(7)
    assert switched.primary == new
    handshake(node_initiator(key=switched.primary), acceptor(keyring=both))
    done = switched.remove(0)
    with pytest.raises(AuthenticationError) as error:
        handshake(node_initiator(key=CLUSTER), acceptor(keyring=done))
    assert error.value.reason == "unknown_principal"
    with pytest.raises(ConfigError):
        done.remove(7)  # never the primary key
    with pytest.raises(ConfigError):
        done.install(Key(7, b"z" * 32))


def test_keys_refuse_short_secrets_and_bad_ids() -> None:
    with pytest.raises(ConfigError):
        Key(0, b"short")
    with pytest.raises(ConfigError):
        Key(-1, b"k" * 32)


def test_replay_cache_is_bounded() -> None:
    cache = ReplayCache(3)
    for nonce in (b"1", b"2", b"3", b"4"):
        assert not cache.seen_before(nonce)
    assert cache.seen_before(b"4")
    assert not cache.seen_before(b"1")  # forgotten: the oldest went first


@settings(max_examples=300, deadline=None)
@given(message_index=st.integers(min_value=0, max_value=3), bit=st.integers(min_value=0, max_value=10_000))
def test_any_bit_flipped_in_transit_fails_the_handshake(message_index: int, bit: int) -> None:
    """Property: tamper with one bit of one handshake message on the wire and the
    handshake never completes (the frame is refused or a proof fails)."""
    init = InitiatorHandshake(mode="hmac", kind="client", principal="alice", key=ALICE, expected_acceptor="n1")
    acc = acceptor()
    messages = [init.start()]
    position = 0

    def transmit(msg: Message) -> Message:
        nonlocal position
        data = bytearray(encode(msg))
        if position == message_index:
            data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
        position += 1
        return decode(bytes(data))

    try:
        replies = acc.receive(transmit(messages[0]))
        proofs = init.receive(transmit(replies[0]))
        accepted = acc.receive(transmit(proofs[0]))
        init.receive(transmit(accepted[0]))
    except RemoteProtocolError:
        return  # refused: undecodable, or authentication failed
    raise AssertionError(f"tampered handshake completed: acceptor {acc.result}, initiator {init.result}")
