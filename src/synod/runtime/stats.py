"""Counters of the runtime and their frozen snapshots (``statistics()``).

Every refused input is counted under its reason, so an operator (and a test) can
tell garbage from an oversized frame from a failed handshake. Counters only grow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

from synod.core.errors import invariant


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeStatistics:
    """A snapshot of one node's runtime counters: TCP transport, handshakes, host."""

    connections_accepted: int = 0
    connections_refused_limit: int = 0
    connections_authenticated: int = 0
    connections_closed: int = 0
    # authentication refusals, by reason
    auth_bad_proof: int = 0
    auth_unknown_principal: int = 0
    auth_replayed_handshake: int = 0
    auth_handshake_timeout: int = 0
    auth_handshake_malformed: int = 0
    auth_mode_mismatch: int = 0
    auth_tls_failure: int = 0
    # bad frames on authenticated connections, by reason
    frames_garbage: int = 0
    frames_unknown_type: int = 0
    frames_too_large: int = 0
    frames_truncated: int = 0
    frames_unexpected_message: int = 0
    # traffic
    messages_received: int = 0
    messages_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    send_queue_full: int = 0
    send_queue_dropped_oldest: int = 0
    send_to_unknown_peer: int = 0
    reply_to_gone_client: int = 0
    peer_connect_failures: int = 0
    # host
    timers_fired: int = 0
    persists: int = 0
    records_persisted: int = 0
    fsyncs: int = 0
    fsyncs_inline: int = 0
    reads_paused: int = 0
    client_results: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramStatistics:
    """A snapshot of one UDP endpoint's counters."""

    datagrams_sent: int = 0
    datagrams_received: int = 0
    datagrams_delivered: int = 0
    datagrams_bad_mac: int = 0
    datagrams_unknown_key: int = 0
    datagrams_truncated: int = 0
    datagrams_oversized: int = 0
    datagrams_undecodable: int = 0
    datagrams_send_refused: int = 0


S = TypeVar("S", RuntimeStatistics, DatagramStatistics)


class Counters(Generic[S]):
    """Mutable counters whose names are the fields of the snapshot class ``S``."""

    __slots__ = ("_kind", "_values")

    def __init__(self, kind: type[S]) -> None:
        self._kind: type[S] = kind
        self._values = {f.name: 0 for f in dataclasses.fields(kind)}

    def add(self, name: str, amount: int = 1) -> None:
        invariant(name in self._values, f"unknown counter {name!r}")
        invariant(amount >= 0, "counters only grow")
        self._values[name] += amount

    def get(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> S:
        snapshot: S = self._kind(**self._values)
        return snapshot
