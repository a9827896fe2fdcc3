"""The asyncio runtime: runs any ``synod.core.Core`` on real sockets, timers and files.

* ``host.AsyncioHost`` -- the ``Host`` for one node: effects carried out on TCP
  peer links, ``loop.call_at`` timers and a group-committed write-ahead log;
* ``transport`` -- framed, authenticated TCP connections with bounded queues;
* ``auth`` -- keyrings, the HMAC challenge-response handshake, mutual TLS;
* ``datagram`` -- HMAC-tagged UDP datagrams (for gossip);
* ``client.connect`` -- the client side: ``await conn.request(body, timeout_s)``;
* ``serve`` -- ``python -m synod.runtime.serve``: host a core on a port.
"""

from synod.runtime.auth import AuthenticationError, Key, Keyring, new_secret
from synod.runtime.client import ClientConnection, connect
from synod.runtime.config import RuntimeConfig
from synod.runtime.datagram import DatagramEndpoint
from synod.runtime.host import (
    AsyncioHost,
    new_event_loop,
    open_durable_log,
    principal_of,
    run,
    start_local_cluster,
)
from synod.runtime.stats import DatagramStatistics, RuntimeStatistics
from synod.runtime.transport import ConnectionClosed

__all__ = [
    "AsyncioHost",
    "AuthenticationError",
    "ClientConnection",
    "ConnectionClosed",
    "DatagramEndpoint",
    "DatagramStatistics",
    "Key",
    "Keyring",
    "RuntimeConfig",
    "RuntimeStatistics",
    "connect",
    "new_event_loop",
    "new_secret",
    "open_durable_log",
    "principal_of",
    "run",
    "start_local_cluster",
]
