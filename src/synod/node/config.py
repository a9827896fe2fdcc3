"""``NodeConfig``: what one ``synod node`` process needs, in one frozen dataclass.

A node's TOML file holds the fields below at top level::

    node_id = "n1"
    data_dir = "/var/lib/synod"
    bind = "0.0.0.0:7001"            # TCP: peers and clients
    advertise = "10.0.0.1:7001"
    gossip_bind = "0.0.0.0:7946"     # UDP: SWIM
    http_bind = "127.0.0.1:8001"     # dashboard, /status, /metrics
    secret_file = "/etc/synod/cluster.key"
    users = ["client=/etc/synod/client.key"]
    nodes = ["n1=10.0.0.1:7001", "n2=10.0.0.2:7001", "n3=10.0.0.3:7001"]
    seeds = ["n2@10.0.0.2:7946"]
    shards = 2

``nodes`` gives the TCP address of each node; ``initial_members`` (default: all of
``nodes``) is the groups' member set at creation, the same on every node, from
which the shard placement is computed. Later member sets come from each group's
log (``synod member add|remove``); a node that is not a member of a group it
hosts is a learner. Gossip membership is dynamic and needs only ``seeds``. Every error is a ``ConfigError`` whose message names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synod.core.config import config_from_mapping, load_toml
from synod.core.errors import ConfigError

PRESETS = ("local", "lan")


def parse_host_port(field_name: str, text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0 asks the system for a free one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"NodeConfig.{field_name}: {text!r} is not HOST:PORT")
    return host, int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Configuration of one node process (see the module comment)."""

    node_id: str = ""
    """This node's id: letters, digits, ``-`` and ``_``; one of ``nodes``."""

    data_dir: Path = Path()
    """Directory of the node's write-ahead log (``wal/``), gossip log (``gossip/``)
    and shard databases (``shards/``). Back it up as a whole (docs/deploy.md)."""

    bind: str = "127.0.0.1:7001"
    """TCP address to listen on for peers and clients (``HOST:PORT``)."""

    advertise: str = ""
    """TCP address other nodes and clients use to reach this node; empty means the
    entry for ``node_id`` in ``nodes``."""

    gossip_bind: str = "127.0.0.1:0"
    """UDP address of the SWIM member (``HOST:PORT``; port 0: any free port)."""

    gossip_advertise: str = ""
    """UDP address the member advertises to others; empty: the bound address."""

    http_bind: str = "127.0.0.1:0"
    """TCP address of the dashboard (``/``, ``/status``, ``/metrics``); empty
    disables it. Loopback by default: the page shows the cluster's state to
    whoever can reach it, so expose it only behind your own access control."""

    secret_file: Path | None = None
    """File holding the cluster secret (at least 16 bytes) for the HMAC handshake
    and the gossip datagrams' MACs. Required unless ``insecure``: with TLS it
    still authenticates gossip."""

    users: tuple[str, ...] = ()
    """Client principals as ``NAME=KEYFILE``; each may connect with its key."""

    backup_principals: tuple[str, ...] = ()
    """Client principals (of ``users``, or TLS common names) allowed to take an
    online backup of this node (``synod backup --node``). A backup holds every
    lock file and key whatever the cell's ACLs, so this is an administrator's
    right; empty: nobody (a stopped node can still be backed up from its files)."""

    tls_cert_file: Path | None = None
    """PEM certificate of this node (mutual TLS between nodes and with clients)."""

    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""

    tls_ca_file: Path | None = None
    """PEM CA bundle that peers' and clients' certificates must chain to."""

    insecure: bool = False
    """No authentication at all. Development only."""

    nodes: tuple[str, ...] = ()
    """Every node of the cluster as ``ID=HOST:PORT`` (TCP), this one included:
    the members of the Paxos groups."""

    initial_members: tuple[str, ...] = ()
    """The voting members of every Paxos group when the cluster was created (node
    ids, each listed in ``nodes``); empty: every node of ``nodes``. The shard
    placement is computed from this set, so every node of a cluster must list the
    same one. A node added later lists the original set here: it is not one of
    them, so it joins each group it hosts as a *learner* (it receives the log and
    never votes) until ``synod member add`` makes it a member. Afterwards the
    member sets come from the log, not from this field."""

    join: bool = False
    """Start this node's replicas as learners even if it is one of
    ``initial_members``: for a node whose data directory was lost and that comes
    back empty (it must not vote with promises it has forgotten). Only takes
    effect on an empty data directory; ``synod member add`` makes it vote again."""

    seeds: tuple[str, ...] = ()
    """Gossip seeds as ``ID@HOST:PORT`` (UDP); a new member joins through them."""

    shards: int = 2
    """Number of KV shards (each a Paxos group); 0 runs the lock cell only."""

    replicas: int = 3
    """Replicas per KV shard (capped at the number of nodes). The lock cell is
    replicated on every node."""

    preset: str = "lan"
    """Timing presets of the blocks: ``lan`` (separate machines) or ``local``
    (processes on one machine: shorter leases and timeouts)."""

    stop_wait_s: float = 2.0
    """Seconds a graceful stop waits for the gossip leave to spread."""

    def __post_init__(self) -> None:
        if not self.node_id or not all(c.isalnum() or c in "-_" for c in self.node_id):
            raise ConfigError(f"NodeConfig.node_id: {self.node_id!r} is not a node id (letters, digits, - and _)")
        if isinstance(self.data_dir, str):
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        if str(self.data_dir) in ("", "."):
            raise ConfigError("NodeConfig.data_dir: required")
        for name in ("secret_file", "tls_cert_file", "tls_key_file", "tls_ca_file"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value) if value else None)
        parse_host_port("bind", self.bind)
        parse_host_port("gossip_bind", self.gossip_bind)
        if self.advertise:
            parse_host_port("advertise", self.advertise)
        if self.gossip_advertise:
            parse_host_port("gossip_advertise", self.gossip_advertise)
        if self.http_bind:
            parse_host_port("http_bind", self.http_bind)
        members = self.members()
        if self.node_id not in members:
            raise ConfigError(f"NodeConfig.nodes: must list this node {self.node_id!r}")
        unknown = [name for name in self.initial_members if name not in members]
        if unknown:
            raise ConfigError(f"NodeConfig.initial_members: {', '.join(unknown)} not in nodes")
        if len(set(self.initial_members)) != len(self.initial_members):
            raise ConfigError("NodeConfig.initial_members: a node is listed twice")
        for seed in self.seeds:
            name, sep, address = seed.partition("@")
            if not sep or not name:
                raise ConfigError(f"NodeConfig.seeds: {seed!r} is not ID@HOST:PORT")
            parse_host_port("seeds", address)
        for user in self.users:
            name, sep, path = user.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"NodeConfig.users: {user!r} is not NAME=KEYFILE")
        if not 0 <= self.shards <= 26:
            raise ConfigError(f"NodeConfig.shards: must be 0 to 26, got {self.shards}")
        if self.replicas < 1:
            raise ConfigError(f"NodeConfig.replicas: must be >= 1, got {self.replicas}")
        if self.preset not in PRESETS:
            raise ConfigError(f"NodeConfig.preset: must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.stop_wait_s < 0:
            raise ConfigError(f"NodeConfig.stop_wait_s: must be >= 0, got {self.stop_wait_s}")
        tls = (self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        if any(tls) and not all(tls):
            raise ConfigError("NodeConfig.tls_cert_file: tls_cert_file, tls_key_file and tls_ca_file go together")
        if self.insecure and any(tls):
            raise ConfigError("NodeConfig.insecure: insecure and TLS are exclusive")
        if not self.insecure and self.secret_file is None:
            # Gossip datagrams are authenticated with the cluster secret even when
            # TCP uses TLS: UDP has no TLS here.
            raise ConfigError("NodeConfig.secret_file: required (it also authenticates gossip), "
                              "unless insecure = true")

    def members(self) -> dict[str, tuple[str, int]]:
        """The ``nodes`` table as id -> (host, port)."""
        table: dict[str, tuple[str, int]] = {}
        for entry in self.nodes:
            name, sep, address = entry.partition("=")
            if not sep or not name:
                raise ConfigError(f"NodeConfig.nodes: {entry!r} is not ID=HOST:PORT")
            if name in table:
                raise ConfigError(f"NodeConfig.nodes: {name!r} is listed twice")
            table[name] = parse_host_port("nodes", address)
        return table

    def voters(self) -> tuple[str, ...]:
        """``initial_members``, or every node when it is empty (sorted)."""
        return tuple(sorted(self.initial_members or self.members()))

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None


def load_node_config(path: Path, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Read ``path`` (TOML) and apply ``overrides``; ``ConfigError`` naming the field."""
    values = dict(load_toml(path))
    values.update(overrides or {})
    node = values.get("node_id")
    if not isinstance(node, str) or not node:
        raise ConfigError(f"NodeConfig.node_id: required, a string (in {path})")
    # config_from_mapping replaces fields on a valid base, so the base's stand-in
    # values must all be overwritten: every field it fakes gets its default here.
    values.setdefault("data_dir", "")
    values.setdefault("nodes", [])
    values.setdefault("insecure", False)
    base = NodeConfig(node_id=node, data_dir=Path("/"), insecure=True, nodes=(f"{node}=127.0.0.1:1",))
    return config_from_mapping(NodeConfig, values, base=base)
