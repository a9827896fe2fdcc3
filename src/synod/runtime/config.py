"""``RuntimeConfig``: every knob of the asyncio runtime, in one frozen dataclass.

The defaults are tuned for a LAN of a handful of nodes on commodity machines.
Presets: ``RuntimeConfig.lan()`` (the defaults) and ``RuntimeConfig.local()``
(loopback tests and demos: shorter back-off so restarted peers are found fast).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from synod.codec.frames import FRAME_BYTES_MAX_DEFAULT
from synod.core.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeConfig:
    """Configuration of one node's runtime (transport, auth, timers, durability)."""

    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT
    """Largest frame (bytes) accepted or sent on an authenticated TCP connection. A
    peer that declares a longer frame is cut off at once, before any buffering.
    16 MiB fits a Paxos snapshot chunk or a MapReduce shuffle block."""

    handshake_frame_bytes_max: int = 1024
    """Largest frame (bytes) accepted BEFORE authentication. Small on purpose: an
    unauthenticated peer must not make us buffer much."""

    handshake_timeout_s: float = 5.0
    """Seconds a new connection has to finish the authentication handshake before
    it is closed and counted (``handshake_timeout``). Bounds idle half-open peers."""

    send_queue_messages_max: int = 4096
    """Messages a per-peer (or per-client-connection) send queue holds at most.
    Past it, a send towards a node drops the oldest queued frames to make room
    (``send_queue_dropped_oldest``), other best-effort sends are refused and
    counted (``send_queue_full``), and ``wait_writable`` blocks: back-pressure
    instead of unbounded memory."""

    send_queue_bytes_max: int = 64 * 1024 * 1024
    """Bytes a send queue holds at most (frames encoded). Same rule as above."""

    read_chunk_bytes: int = 256 * 1024
    """Bytes asked of the socket per read."""

    connect_timeout_s: float = 3.0
    """Seconds an outbound connection attempt may take (TCP + TLS)."""

    reconnect_delay_ms_min: float = 50.0
    """First back-off delay (ms) after a failed connection to a peer; doubles per
    failure up to ``reconnect_delay_ms_max``, with full jitter (AWS style), so that a
    restarted node is not hit by every peer at the same instant."""

    reconnect_delay_ms_max: float = 5000.0
    """Longest back-off delay (ms) between connection attempts to one peer."""

    connections_max: int = 1024
    """Inbound connections served at once; further ones are closed and counted."""

    replay_cache_max: int = 65536
    """Handshake nonces remembered to recognise (and count) a replayed handshake.
    Replays are refused regardless (the acceptor's fresh nonce makes an old proof
    wrong); the cache only names the reason."""

    datagram_bytes_max: int = 1472
    """Largest UDP datagram (bytes, our header and MAC included) sent or accepted:
    a 1500-byte Ethernet MTU minus the IPv4 (20) and UDP (8) headers, so gossip
    never fragments. The header and MAC take 38 bytes plus the sender's node id,
    which leaves the 1400-byte payloads of ``synod.gossip`` room for node ids of
    up to 34 bytes."""

    group_commit_pending_bytes_max: int = 64 * 1024 * 1024
    """Record bytes of Persists waiting for an fsync, at most. Past half of it the
    node stops reading from its connections until fsyncs catch up (back-pressure;
    the other half is headroom for Persists already on their way)."""

    group_commit_batch_bytes_max: int = 16 * 1024 * 1024
    """Record bytes one fsync covers at most; bounds the latency one fsync adds.
    A larger single Persist still forms a batch of its own."""

    fsync_inline_ms_max: float = 0.5
    """An fsync expected to take at most this long (ms) runs on the event-loop
    thread instead of the fsync worker thread. Handing a sync to a thread and back
    costs two thread wake-ups, which on a fast disk (and on a busy machine, where
    each wake-up waits for a CPU) cost more than the fsync itself; a slow disk must
    not block the loop, so the expectation is a moving average of the last syncs'
    durations, and a batch over 64 KiB always goes to the thread. 0 sends every
    sync to the thread."""

    insecure: bool = False
    """Skip authentication (peers' claimed names are believed). Development only:
    a warning is logged at start."""

    tls_cert_file: Path | None = None
    """PEM certificate of this node (or client). With ``tls_key_file`` and
    ``tls_ca_file`` set, connections use mutual TLS and a peer's principal is its
    certificate's common name (CN) instead of the HMAC handshake."""

    tls_key_file: Path | None = None
    """PEM private key matching ``tls_cert_file``."""

    tls_ca_file: Path | None = None
    """PEM CA bundle that peers' certificates must chain to."""

    peers: dict[str, tuple[str, int]] = field(default_factory=dict)
    """TCP address of every other node, by node id (``{"n2": ("127.0.0.1", 7002)}``)."""

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            if not getattr(self, name) > 0:
                raise ConfigError(f"RuntimeConfig.{name} must be > 0, got {getattr(self, name)!r}")

        for name in (
            "frame_bytes_max",
            "handshake_frame_bytes_max",
            "handshake_timeout_s",
            "send_queue_messages_max",
            "send_queue_bytes_max",
            "read_chunk_bytes",
            "connect_timeout_s",
            "reconnect_delay_ms_min",
            "reconnect_delay_ms_max",
            "connections_max",
            "replay_cache_max",
            "datagram_bytes_max",
            "group_commit_pending_bytes_max",
            "group_commit_batch_bytes_max",
        ):
            positive(name)
        if self.fsync_inline_ms_max < 0:
            raise ConfigError(f"RuntimeConfig.fsync_inline_ms_max must be >= 0, got {self.fsync_inline_ms_max!r}")
        if self.reconnect_delay_ms_max < self.reconnect_delay_ms_min:
            raise ConfigError("RuntimeConfig.reconnect_delay_ms_max must be >= reconnect_delay_ms_min")
        if self.send_queue_bytes_max < self.frame_bytes_max:
            # One largest frame must always fit, or a big message could never go.
            raise ConfigError("RuntimeConfig.send_queue_bytes_max must be >= frame_bytes_max")
        if self.datagram_bytes_max > 65507:
            raise ConfigError("RuntimeConfig.datagram_bytes_max must be <= 65507 (UDP limit)")
        # Values loaded from TOML arrive as strings and lists: normalise them.
        for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        peers: dict[str, tuple[str, int]] = {}
        for peer, address in dict(self.peers).items():
            if not (isinstance(address, list | tuple) and len(address) == 2):
                raise ConfigError(f"RuntimeConfig.peers[{peer!r}] must be [host, port]")
            host, port = address
            if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
                raise ConfigError(f"RuntimeConfig.peers[{peer!r}] = {address!r} is not a host and a port")
            peers[peer] = (host, port)
        object.__setattr__(self, "peers", peers)
        tls = (self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        if any(f is not None for f in tls) and not all(f is not None for f in tls):
            raise ConfigError(
                "RuntimeConfig: tls_cert_file, tls_key_file and tls_ca_file go together"
            )
        if self.insecure and self.tls_enabled:
            raise ConfigError("RuntimeConfig: insecure and TLS are exclusive")

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    @classmethod
    def lan(cls) -> RuntimeConfig:
        return cls()

    @classmethod
    def local(cls) -> RuntimeConfig:
        return dataclasses.replace(
            cls(), reconnect_delay_ms_min=10.0, reconnect_delay_ms_max=500.0
        )
