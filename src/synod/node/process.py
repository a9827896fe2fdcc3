"""``Node``: one ``synod node`` process, composed from the blocks' own glue.

Theory of operation
-------------------
A node is three servers on one asyncio loop:

* an ``AsyncioHost`` (``synod.runtime``) running the node's core, a ``NodeMux``
  of the lock-cell replica and the shard replicas placed here
  (``synod.node.groups``), on the TCP ``bind`` address: peers and clients;
  its write-ahead log in ``data_dir/wal`` (one log, every group: group commit),
  compacted into ``data_dir/snap`` whenever a group takes a snapshot (the
  mux's snapshot holds every group's newest snapshot and records after it);
* a ``GossipAgent`` (``synod.gossip``) on UDP ``gossip_bind``, its incarnation
  log in ``data_dir/gossip``; its metadata advertises the node's TCP and HTTP
  addresses, so any node's dashboard finds every other;
* the dashboard (``synod.web``) on ``http_bind``.

Start: host first (recovering the log), then gossip, then HTTP. While it runs,
the node gives its host the TCP address of any node that gossip knows and
``nodes`` does not list (one added later: ``synod member add``), from that
node's gossip metadata. After a kill -9
the same start recovers: the Paxos replicas from their records, gossip with a
higher incarnation. A graceful ``stop`` hands every Paxos leadership held here
to another live member (``TransferLeader``, waiting a bounded time), leaves the
gossip group (the leave spreads before the socket closes), makes each replica's
chosen index durable, then stops the servers in reverse order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import TextIO

from synod.codec.kernel import ClientRequest, Routed
from synod.codec.registry import encode
from synod.core.effects import Persist
from synod.core.errors import ConfigError
from synod.core.ids import NodeId
from synod.gossip.agent import GossipAgent
from synod.gossip.config import GossipConfig
from synod.gossip.messages import MemberStatus
from synod.lock.config import LockConfig
from synod.node.config import NodeConfig, parse_host_port
from synod.node.groups import NodeCoreFactory, NodeMux, node_paxos_config, place_shards
from synod.paxos.messages import LearnedRecord, TransferLeader
from synod.paxos.replica import PaxosReplica
from synod.runtime.auth import Keyring
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import AsyncioHost, open_durable_store
from synod.runtime.serve import read_secret
from synod.txn.config import TxnConfig

log = logging.getLogger("synod.node")

#: The gossip key of an ``insecure`` node: public, so it authenticates nothing.
INSECURE_GOSSIP_KEY = b"synod-insecure-development-only"

#: The file in ``data_dir`` whose lock says a live process uses the directory.
LOCK_FILE = "node.lock"

#: Seconds a graceful stop waits for each leadership handed over.
TRANSFER_WAIT_S = 3.0

#: Seconds between two looks at gossip for the TCP address of unlisted nodes.
PEER_REFRESH_S = 0.5


def _meta_tcp(meta: bytes) -> tuple[str, int] | None:
    """The ``tcp`` address in a node's gossip metadata, or None."""
    try:
        decoded = json.loads(meta.decode())
        host, _, port = str(decoded["tcp"]).rpartition(":")
        return (host, int(port)) if host else None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def lock_data_dir(data_dir: Path) -> TextIO:
    """Refuse to share ``data_dir`` with another live process: two replicas on
    one log would each vote, and both append to it. The lock is an ``flock``, so
    the kernel drops it when the process dies, even by kill -9. Returns the open
    lock file: the lock lasts until it is closed. ``ConfigError`` if taken."""
    path = data_dir / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held for as long as the caller needs
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(f"NodeConfig.data_dir: {data_dir} is in use by another "
                          f"synod process (pid {owner})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def build_keyring(config: NodeConfig) -> Keyring:
    users = {name: read_secret(Path(path)) for name, _, path in (u.partition("=") for u in config.users)}
    if config.secret_file is not None:
        return Keyring.from_secret(read_secret(config.secret_file), users)
    # insecure = true: nothing is checked, but gossip datagrams still need a key
    # to be sealed with, so a fixed, public one is used.
    return Keyring.from_secret(INSECURE_GOSSIP_KEY, users)


def runtime_config(config: NodeConfig) -> RuntimeConfig:
    base = RuntimeConfig.local() if config.preset == "local" else RuntimeConfig.lan()
    peers = {name: address for name, address in config.members().items() if name != config.node_id}
    try:
        return RuntimeConfig(
            reconnect_delay_ms_min=base.reconnect_delay_ms_min, reconnect_delay_ms_max=base.reconnect_delay_ms_max,
            insecure=config.insecure, tls_cert_file=config.tls_cert_file, tls_key_file=config.tls_key_file,
            tls_ca_file=config.tls_ca_file, peers=peers)
    except ConfigError as error:
        raise ConfigError(f"NodeConfig: {error}") from None


class Node:
    """One node process (see the module comment). ``await start()``, then
    ``await stop()`` (graceful) or just exit (a crash, which it recovers from)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node = NodeId(config.node_id)
        self.keyring = build_keyring(config)
        members = tuple(NodeId(n) for n in config.voters())
        self.members = members
        local = config.preset == "local"
        self.shard_map = place_shards(members, config.shards, config.replicas) if config.shards else None
        self.factory = NodeCoreFactory(
            members=members, shard_map=self.shard_map,
            paxos=node_paxos_config(config.preset),
            lock=LockConfig.local() if local else LockConfig.lan(),
            txn=TxnConfig.local() if local else TxnConfig.lan(),
            shard_dir=config.data_dir / "shards", backup_principals=config.backup_principals,
        )
        self.gossip_config = GossipConfig.local() if local else GossipConfig.lan()
        self.host: AsyncioHost | None = None
        self.gossip: GossipAgent | None = None
        self.web: object | None = None
        self.started_s = time.time()
        self.http_address: tuple[str, int] | None = None
        self._lock_handle: TextIO | None = None
        self._peer_task: asyncio.Task[None] | None = None
        self.learner_at_start = False

    @property
    def mux(self) -> NodeMux:
        assert self.host is not None, "node not started"
        core = self.host.core
        assert isinstance(core, NodeMux)
        return core

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        wal, recovered = open_durable_store(config.data_dir)
        fresh = not recovered.records and recovered.snapshot is None
        self.learner_at_start = config.join and fresh
        factory = dataclasses.replace(self.factory, learner=self.learner_at_start)
        self.host = AsyncioHost(node=self.node, core_factory=factory, config=runtime_config(config),
                                keyring=self.keyring, listen=parse_host_port("bind", config.bind),
                                durable_log=wal, recovered=recovered)
        await self.host.start()
        http_text = ""
        if config.http_bind:
            from synod.web.server import DashboardServer

            web = DashboardServer(self, parse_host_port("http_bind", config.http_bind))
            self.http_address = await web.start()
            self.web = web
            http_text = f"{self.http_address[0]}:{self.http_address[1]}"
        meta = json.dumps({"tcp": self.advertised_tcp(), "http": http_text}, separators=(",", ":")).encode()
        seeds = []
        for seed in config.seeds:
            name, _, address = seed.partition("@")
            seeds.append((NodeId(name), parse_host_port("seeds", address)))
        self.gossip = GossipAgent(self.node, keyring=self.keyring, bind=parse_host_port("gossip_bind", config.gossip_bind),
                                  advertise=config.gossip_advertise, seeds=seeds, config=self.gossip_config,
                                  meta=meta, data_dir=config.data_dir / "gossip")
        await self.gossip.start()
        self._peer_task = asyncio.create_task(self._learn_peers())
        log.info("node %s up: tcp %s gossip %s http %s", self.node, self.host.address,
                 self.gossip.address, self.http_address)

    def _lock_data_dir(self) -> None:
        self._lock_handle = lock_data_dir(self.config.data_dir)

    def advertised_tcp(self) -> str:
        if self.config.advertise:
            return self.config.advertise
        host, port = self.config.members()[self.config.node_id]
        return f"{host}:{port}"

    async def _learn_peers(self) -> None:
        """Keep the host's peer table in step with gossip: a node that is not in
        ``nodes`` (one added later, see ``synod member add``) is reachable at the
        TCP address its gossip metadata advertises. The ``nodes`` entries win."""
        listed = set(self.config.members())
        while True:
            await asyncio.sleep(PEER_REFRESH_S)
            host, agent = self.host, self.gossip
            if host is None or agent is None or agent.member is None:
                continue
            known = host.peers()
            for info in agent.member.view(agent.now_ms()).members:
                name = str(info.node)
                if name in listed or name == self.node or info.status is not MemberStatus.ALIVE:
                    continue
                address = _meta_tcp(info.meta)
                if address is not None and known.get(name) != address:
                    log.info("node %s: peer %s at %s:%d (from gossip)", self.node, name, *address)
                    await host.set_peer(name, address)

    def live_members(self) -> set[str]:
        """Nodes gossip believes alive (this one included)."""
        if self.gossip is None or self.gossip.member is None:
            return {self.node}
        view = self.gossip.member.view(self.gossip.now_ms())
        return {str(m.node) for m in view.members if m.status is MemberStatus.ALIVE} | {self.node}

    async def transfer_leadership(self) -> list[str]:
        """Hand every Paxos group this node leads to another live member; the
        groups handed over. Bounded by ``TRANSFER_WAIT_S`` per group."""
        host = self.host
        if host is None or host.failure is not None:
            return []
        live = self.live_members()
        moved: list[str] = []
        for number, (group, child) in enumerate(self.mux.children.items(), start=1):
            replica = getattr(child, "replica", None)
            if not isinstance(replica, PaxosReplica) or not replica.is_leader:
                continue
            targets = [m for m in replica.statistics().members if m != self.node and m in live]
            if not targets:
                continue
            request = ClientRequest(request_id=number, body=Routed(group=group, body=TransferLeader(to=targets[0])))
            host.execute(host.core.on_message(host.now_ms(), NodeId(f"{self.node}#admin"), request))
            deadline = time.monotonic() + TRANSFER_WAIT_S
            while replica.is_leader and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if not replica.is_leader:
                moved.append(group)
        return moved

    def _persist_learned(self) -> None:
        """Make each replica's chosen index durable before a graceful exit.

        A replica writes its learned index lazily (with its next record, or every
        ``window_slots_max`` slots), so the log of a stopped node may know fewer
        slots chosen than the node did; the last writes would then be missing
        from a backup taken from it (``synod backup``) until it rejoins. Every
        slot up to the chosen index already has its value in the log (accepted
        entries are durable before they are acknowledged, caught-up ones are
        logged in order), so one ``LearnedRecord`` per group, in the group's
        record format (``synod.core.mux``), is enough."""
        host = self.host
        if host is None or host.failure is not None:
            return
        records = []
        for group, child in self.mux.children.items():
            replica = getattr(child, "replica", None)
            if isinstance(replica, PaxosReplica) and replica.chosen_index > replica.learned_persisted:
                records.append(group.encode() + b"\x00" + encode(LearnedRecord(chosen_index=replica.chosen_index)))
        if records:
            host.execute([Persist(records=tuple(records))])

    async def stop(self) -> None:
        """Graceful stop: leadership transfer, gossip leave, then the servers."""
        if self._peer_task is not None:
            self._peer_task.cancel()
            self._peer_task = None
        try:
            moved = await self.transfer_leadership()
            if moved:
                log.info("node %s handed over leadership of %s", self.node, ", ".join(moved))
        except Exception:  # a failed courtesy must not block the stop
            log.exception("node %s: leadership transfer failed", self.node)
        if self.gossip is not None and self.gossip.member is not None:
            alone = self.live_members() == {self.node}
            await self.gossip.leave(0.0 if alone else self.config.stop_wait_s)
            self.gossip.stop()
        if self.web is not None:
            from synod.web.server import DashboardServer

            assert isinstance(self.web, DashboardServer)
            await self.web.stop()
        if self.host is not None:
            self._persist_learned()
            await self.host.stop()
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None
