"""Authentication of TCP connections: keyrings, the HMAC handshake, mutual TLS.

Theory of operation
-------------------
Every connection begins with a handshake before any other frame is accepted. The
side that connected is the *initiator*, the side that accepted is the *acceptor*;
each claims a *principal* (a node id, or a client user name) and a *kind*
(``"node"`` or ``"client"``).

HMAC mode (the default), a challenge-response over a shared secret::

    initiator -> AuthHello(mode="hmac", kind, principal=I, key_id, nonce=Ni)
    acceptor  -> AuthChallenge(principal=A, nonce=Na, proof=MAC(K, "acceptor", T))
    initiator -> AuthProof(proof=MAC(K, "initiator", T))
    acceptor  -> AuthAccepted(principal=I)

where ``T`` is the transcript (kind, I, A, key id, Ni, Na) and ``K`` the key of the
initiator's principal: the cluster key ``key_id`` for a node (every node holds the
cluster keyring), the user's own key for a client (the nodes hold every user's
key). Both sides thus prove knowledge of ``K``:

* the acceptor's fresh ``Na`` enters the initiator's proof, so a recorded
  handshake replayed later is wrong (and its ``Ni`` is remembered, so the replay is
  named as such in the counters);
* the direction label differs between the two proofs, so a proof the acceptor
  made cannot be reflected back to it as an initiator proof;
* both principal names are inside the MAC, so a proof cannot be moved to another
  claimed identity; the initiator checks that the acceptor is the node it dialled.

MACs are HMAC-SHA256 and compared with ``hmac.compare_digest``.

TLS mode: when certificate files are configured, the TCP stream is wrapped in
mutual TLS (both certificates must chain to the configured CA) and the principal
is the peer certificate's common name. The same hello exchange follows, with
``mode="tls"``, and the acceptor checks the claimed name against the certificate.

Insecure mode (``--insecure``, development only): ``mode="insecure"``, the claim
is believed and the acceptor answers ``AuthAccepted`` at once. A secure acceptor
refuses an insecure initiator, and a secure initiator refuses an acceptor that
answers without proving anything.

The two state machines here are sans-IO: ``transport.py`` feeds them messages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import ssl
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from synod.codec.registry import Message, message
from synod.core.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from synod.core.ids import node_id

AUTH_VERSION = 1
NONCE_BYTES = 32
SECRET_BYTES_MIN = 16
Kind = Literal["node", "client"]
Mode = Literal["hmac", "tls", "insecure"]

KIND_NODE: Kind = "node"
KIND_CLIENT: Kind = "client"
MODE_HMAC: Mode = "hmac"
MODE_TLS: Mode = "tls"
MODE_INSECURE: Mode = "insecure"


# ---------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class Key:
    """A shared secret and its public id (ids let a keyring hold several keys
    during a rotation; the id travels in the clear, the secret never does)."""

    key_id: int
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.key_id < 2**32:
            raise ConfigError(f"key id {self.key_id} out of range 0..2^32-1")
        if len(self.secret) < SECRET_BYTES_MIN:
            raise ConfigError(f"secret of key {self.key_id} shorter than {SECRET_BYTES_MIN} bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Keyring:
    """The keys a node holds: the cluster keys (first one is used to initiate;
    every one is accepted) and one key per client user.

    Rotation without downtime, as in memberlist: ``install`` a new cluster key on
    every node, then ``use`` it on every node, then ``remove`` the old one. A keyring
    is immutable; the runtime swaps in the new value.
    """

    cluster: tuple[Key, ...] = ()
    users: Mapping[str, Key] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [key.key_id for key in self.cluster]
        if len(ids) != len(set(ids)):
            raise ConfigError("keyring: duplicate cluster key id")

    @classmethod
    def from_secret(cls, cluster_secret: bytes, users: Mapping[str, bytes] | None = None) -> Keyring:
        """A keyring with one cluster key (id 0) and users' keys (id 0 each)."""
        return cls(
            cluster=(Key(0, cluster_secret),),
            users={name: Key(0, secret) for name, secret in (users or {}).items()},
        )

    @property
    def primary(self) -> Key:
        if not self.cluster:
            raise LocalProtocolError("keyring has no cluster key")
        return self.cluster[0]

    def cluster_key(self, key_id: int) -> Key | None:
        for key in self.cluster:
            if key.key_id == key_id:
                return key
        return None

    def install(self, key: Key) -> Keyring:
        """Add ``key`` as an accepted (not yet primary) cluster key."""
        if self.cluster_key(key.key_id) is not None:
            raise ConfigError(f"keyring: key id {key.key_id} already installed")
        return dataclasses.replace(self, cluster=(*self.cluster, key))

    def use(self, key_id: int) -> Keyring:
        """Make the installed cluster key ``key_id`` the primary one."""
        key = self.cluster_key(key_id)
        if key is None:
            raise ConfigError(f"keyring: key id {key_id} is not installed")
        rest = tuple(k for k in self.cluster if k.key_id != key_id)
        return dataclasses.replace(self, cluster=(key, *rest))

    def remove(self, key_id: int) -> Keyring:
        """Stop accepting cluster key ``key_id`` (never the primary one)."""
        if self.cluster and self.cluster[0].key_id == key_id:
            raise ConfigError(f"keyring: key id {key_id} is primary; use another first")
        if self.cluster_key(key_id) is None:
            raise ConfigError(f"keyring: key id {key_id} is not installed")
        return dataclasses.replace(
            self, cluster=tuple(k for k in self.cluster if k.key_id != key_id)
        )


def new_secret() -> bytes:
    """A fresh random 32-byte secret."""
    return secrets.token_bytes(32)


# ---------------------------------------------------------------- messages


@message(110)
@dataclass(frozen=True, slots=True, kw_only=True)
class AuthHello(Message):
    version: int
    mode: str
    kind: str
    principal: str
    key_id: int
    nonce: bytes


@message(111)
@dataclass(frozen=True, slots=True, kw_only=True)
class AuthChallenge(Message):
    principal: str
    nonce: bytes
    proof: bytes


@message(112)
@dataclass(frozen=True, slots=True, kw_only=True)
class AuthProof(Message):
    proof: bytes


@message(113)
@dataclass(frozen=True, slots=True, kw_only=True)
class AuthAccepted(Message):
    principal: str


class AuthenticationError(RemoteProtocolError):
    """A handshake failed. ``reason`` names the counter it is filed under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"authentication refused ({reason}): {detail}")
        self.reason = reason


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def handshake_mac(
    secret: bytes,
    *,
    label: str,
    kind: str,
    initiator: str,
    acceptor: str,
    key_id: int,
    nonce_initiator: bytes,
    nonce_acceptor: bytes,
) -> bytes:
    """HMAC-SHA256 over the handshake transcript, bound to a direction label."""
    transcript = b"".join(
        _field(part)
        for part in (
            f"synod-auth-v{AUTH_VERSION}".encode(),
            label.encode(),
            kind.encode(),
            initiator.encode(),
            acceptor.encode(),
            struct.pack(">I", key_id),
            nonce_initiator,
            nonce_acceptor,
        )
    )
    return hmac.new(secret, transcript, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticated:
    """The outcome of a successful handshake: who the peer is."""

    principal: str
    kind: Kind


class ReplayCache:
    """Initiator nonces seen recently (bounded, oldest forgotten first)."""

    __slots__ = ("_seen", "entries_max")

    def __init__(self, entries_max: int) -> None:
        self.entries_max = entries_max
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def seen_before(self, nonce: bytes) -> bool:
        """Record ``nonce``; True if it was already there."""
        if nonce in self._seen:
            return True
        self._seen[nonce] = None
        while len(self._seen) > self.entries_max:
            self._seen.popitem(last=False)
        return False


def _valid_principal(kind: str, principal: str) -> bool:
    if kind == KIND_NODE:
        try:
            node_id(principal)
        except ConfigError:
            return False
        return True
    return kind == KIND_CLIENT and 0 < len(principal) <= 64 and principal.isprintable()


class InitiatorHandshake:
    """The connecting side's handshake (sans-IO).

    ``start()`` gives the first message; ``receive(msg)`` gives the messages to
    send next and sets ``result`` once accepted; failures raise
    ``AuthenticationError``.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        kind: Kind,
        principal: str,
        key: Key | None,
        expected_acceptor: str | None,
        tls_peer_principal: str | None = None,
    ) -> None:
        if mode == MODE_HMAC and key is None:
            raise LocalProtocolError("HMAC handshake needs a key")
        self.mode = mode
        self.kind = kind
        self.principal = principal
        self.key = key
        self.expected_acceptor = expected_acceptor
        self.tls_peer_principal = tls_peer_principal
        self.nonce = secrets.token_bytes(NONCE_BYTES) if mode == MODE_HMAC else b""
        self.acceptor: str | None = None
        self.result: Authenticated | None = None
        self._state = "start"

    def start(self) -> Message:
        if self._state != "start":
            raise LocalProtocolError("handshake already started")
        self._state = "hello_sent"
        return AuthHello(
            version=AUTH_VERSION,
            mode=self.mode,
            kind=self.kind,
            principal=self.principal,
            key_id=self.key.key_id if self.key is not None else 0,
            nonce=self.nonce,
        )

    def receive(self, msg: Message) -> list[Message]:
        if self._state == "hello_sent" and self.mode == MODE_HMAC:
            if not isinstance(msg, AuthChallenge):
                raise AuthenticationError(
                    "mode_mismatch", f"expected a challenge, got {type(msg).__name__}"
                )
            return self._on_challenge(msg)
        if self._state in ("hello_sent", "proof_sent") and isinstance(msg, AuthAccepted):
            if self.mode == MODE_HMAC and self._state != "proof_sent":
                raise AuthenticationError("mode_mismatch", "accepted without a proof")
            if msg.principal != self.principal:
                raise AuthenticationError("handshake_malformed", "accepted someone else")
            acceptor = self.acceptor
            if self.mode == MODE_TLS:
                acceptor = self.tls_peer_principal
            if self.mode == MODE_INSECURE:
                acceptor = self.expected_acceptor or "?"
            if acceptor is None:
                raise AuthenticationError("handshake_malformed", "acceptor unknown")
            if self.expected_acceptor is not None and acceptor != self.expected_acceptor:
                raise AuthenticationError(
                    "unknown_principal", f"dialled {self.expected_acceptor}, reached {acceptor}"
                )
            self._state = "done"
            self.result = Authenticated(principal=acceptor, kind="node")
            return []
        raise AuthenticationError(
            "handshake_malformed", f"unexpected {type(msg).__name__} in state {self._state}"
        )

    def _on_challenge(self, msg: AuthChallenge) -> list[Message]:
        assert self.key is not None
        if len(msg.nonce) != NONCE_BYTES:
            raise AuthenticationError("handshake_malformed", "bad nonce length")
        if self.expected_acceptor is not None and msg.principal != self.expected_acceptor:
            raise AuthenticationError(
                "unknown_principal", f"dialled {self.expected_acceptor}, reached {msg.principal}"
            )
        common = {
            "kind": self.kind,
            "initiator": self.principal,
            "acceptor": msg.principal,
            "key_id": self.key.key_id,
            "nonce_initiator": self.nonce,
            "nonce_acceptor": msg.nonce,
        }
        expected = handshake_mac(self.key.secret, label="acceptor", **common)  # type: ignore[arg-type]
        if not hmac.compare_digest(expected, msg.proof):
            raise AuthenticationError("bad_proof", f"acceptor {msg.principal!r} failed its proof")
        self.acceptor = msg.principal
        self._state = "proof_sent"
        proof = handshake_mac(self.key.secret, label="initiator", **common)  # type: ignore[arg-type]
        return [AuthProof(proof=proof)]


class AcceptorHandshake:
    """The accepting side's handshake (sans-IO). ``receive`` returns the messages
    to send; ``result`` is set once the initiator is authenticated."""

    def __init__(
        self,
        *,
        mode: Mode,
        principal: str,
        keyring: Keyring,
        replay_cache: ReplayCache,
        tls_peer_principal: str | None = None,
        tls_node_names: frozenset[str] = frozenset(),
    ) -> None:
        self.mode = mode
        self.principal = principal
        self.keyring = keyring
        self.replay_cache = replay_cache
        self.tls_peer_principal = tls_peer_principal
        self.tls_node_names = tls_node_names
        self.nonce = secrets.token_bytes(NONCE_BYTES)
        self.result: Authenticated | None = None
        self._hello: AuthHello | None = None
        self._key: Key | None = None
        self._state = "wait_hello"

    def receive(self, msg: Message) -> list[Message]:
        if self._state == "wait_hello":
            if not isinstance(msg, AuthHello):
                raise AuthenticationError("handshake_malformed", f"expected hello, got {type(msg).__name__}")
            return self._on_hello(msg)
        if self._state == "wait_proof":
            if not isinstance(msg, AuthProof):
                raise AuthenticationError("handshake_malformed", f"expected proof, got {type(msg).__name__}")
            return self._on_proof(msg)
        raise AuthenticationError("handshake_malformed", f"unexpected {type(msg).__name__}")

    def _accept(self, hello: AuthHello) -> list[Message]:
        self._state = "done"
        kind: Kind = "node" if hello.kind == KIND_NODE else "client"
        self.result = Authenticated(principal=hello.principal, kind=kind)
        return [AuthAccepted(principal=hello.principal)]

    def _on_hello(self, hello: AuthHello) -> list[Message]:
        if hello.version != AUTH_VERSION:
            raise AuthenticationError("handshake_malformed", f"auth version {hello.version}")
        if hello.kind not in (KIND_NODE, KIND_CLIENT) or not _valid_principal(hello.kind, hello.principal):
            raise AuthenticationError("handshake_malformed", f"bad principal {hello.principal!r}")
        if hello.mode != self.mode:
            raise AuthenticationError("mode_mismatch", f"peer uses {hello.mode!r}, we use {self.mode!r}")
        if self.mode == MODE_INSECURE:
            return self._accept(hello)
        if self.mode == MODE_TLS:
            if hello.principal != self.tls_peer_principal:
                raise AuthenticationError(
                    "unknown_principal",
                    f"claims {hello.principal!r}, certificate says {self.tls_peer_principal!r}",
                )
            if hello.kind == KIND_NODE and hello.principal not in self.tls_node_names:
                raise AuthenticationError("unknown_principal", f"{hello.principal!r} is not a node")
            return self._accept(hello)
        if len(hello.nonce) != NONCE_BYTES:
            raise AuthenticationError("handshake_malformed", "bad nonce length")
        if self.replay_cache.seen_before(hello.nonce):
            raise AuthenticationError("replayed_handshake", f"nonce reused by {hello.principal!r}")
        if hello.kind == KIND_NODE:
            key = None if hello.principal in self.keyring.users else self.keyring.cluster_key(hello.key_id)
        else:
            key = self.keyring.users.get(hello.principal)
            if key is not None and key.key_id != hello.key_id:
                key = None
        if key is None:
            raise AuthenticationError(
                "unknown_principal", f"no key for {hello.kind} {hello.principal!r} (id {hello.key_id})"
            )
        self._hello, self._key, self._state = hello, key, "wait_proof"
        proof = handshake_mac(key.secret, label="acceptor", **self._common())  # type: ignore[arg-type]
        return [AuthChallenge(principal=self.principal, nonce=self.nonce, proof=proof)]

    def _common(self) -> dict[str, object]:
        assert self._hello is not None
        return {
            "kind": self._hello.kind,
            "initiator": self._hello.principal,
            "acceptor": self.principal,
            "key_id": self._hello.key_id,
            "nonce_initiator": self._hello.nonce,
            "nonce_acceptor": self.nonce,
        }

    def _on_proof(self, msg: AuthProof) -> list[Message]:
        assert self._hello is not None and self._key is not None
        expected = handshake_mac(self._key.secret, label="initiator", **self._common())  # type: ignore[arg-type]
        if not hmac.compare_digest(expected, msg.proof):
            raise AuthenticationError("bad_proof", f"{self._hello.principal!r} failed its proof")
        return self._accept(self._hello)


# ---------------------------------------------------------------- TLS


def server_tls_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """Mutual TLS, accepting side: present our certificate, require the peer's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """Mutual TLS, connecting side. Host names are not checked: principals are
    certificate CNs, checked against the name we dialled after the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(ca_file)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_principal(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The common name of the (verified) peer certificate, if any."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    subject: tuple[tuple[tuple[str, str], ...], ...] = cert.get("subject", ())  # type: ignore[assignment]
    for rdn in subject:
        for attribute in rdn:
            if attribute[0] == "commonName":
                return str(attribute[1])
    return None
