"""The asyncio runtime: runs any ``synod.core.Core`` on real sockets, timers and files.

* ``host.AsyncioHost`` -- the ``Host`` for one node: effects carried out on TCP
  peer links, ``loop.call_at`` timers and a group-committed write-ahead log;
* ``transport`` -- framed, authenticated TCP connections with bounded queues;
* ``auth`` -- keyrings, the HMAC challenge-response handshake, mutual TLS;
* ``datagram`` -- HMAC-tagged UDP datagrams (for gossip);
* ``client.connect`` -- the client side: ``await conn.request(body, timeout_s)``;
* ``serve`` -- ``python -m synod.runtime.serve``: host a core on a port.

In short::

    keyring = Keyring.from_secret(cluster_secret, users={"alice": alice_key})
    wal, recovered = open_durable_log(Path("/var/lib/synod/n1"))
    host = AsyncioHost(node=NodeId("n1"), core_factory=factory, keyring=keyring,
                       config=RuntimeConfig(peers={"n2": ("10.0.0.2", 7002)}),
                       listen=("0.0.0.0", 7001), durable_log=wal, recovered=recovered)
    await host.start()                      # the core's start() runs here
    ...
    async with await connect(("10.0.0.1", 7001), "alice", alice_key) as client:
        reply = await client.request(SomeRequest(...), timeout_s=5.0)

The core sees a client's request as ``on_message(now, "alice#3", ClientRequest)``;
``principal_of("alice#3") == "alice"`` is who it is (for ACLs). Peers' messages
arrive with their node id as source. ``host.statistics()`` counts everything
refused, by reason.
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
