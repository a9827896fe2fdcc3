"""Three ``Node`` objects in one process with mutual TLS between them: the
groups elect leaders, a lock client authenticated by its certificate works, and
each node stops gracefully. Needs the ``openssl`` command."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from synod.lock.client import LockClient
from synod.lock.config import LockConfig
from synod.node.config import NodeConfig
from synod.node.process import Node
from synod.runtime.auth import new_secret
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import run
from synod.runtime.local import free_ports as _free_ports

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path, names: tuple[str, ...]) -> None:
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl(directory, "req", "-x509", *curve, "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem")
    for name in names:
        openssl(directory, "req", *curve, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.pem")


def test_nodes_with_mutual_tls_elect_serve_and_stop(tmp_path: Path) -> None:
    make_pki(tmp_path, ("n1", "n2", "n3", "alice"))
    (tmp_path / "cluster.key").write_bytes(new_secret().hex().encode())
    tcp = _free_ports(3)
    nodes = tuple(f"n{i + 1}=127.0.0.1:{port}" for i, port in enumerate(tcp))
    configs = [NodeConfig(
        node_id=f"n{i + 1}", data_dir=tmp_path / f"n{i + 1}", bind=f"127.0.0.1:{tcp[i]}",
        http_bind="", secret_file=tmp_path / "cluster.key", nodes=nodes, shards=1, preset="local",
        tls_cert_file=tmp_path / f"n{i + 1}.pem", tls_key_file=tmp_path / f"n{i + 1}.key",
        tls_ca_file=tmp_path / "ca.pem", stop_wait_s=0.5) for i in range(3)]

    async def scenario() -> None:
        started = [Node(config) for config in configs]
        for node in started:
            await node.start()
        gossip = [node.gossip.address for node in started if node.gossip is not None]
        assert len(gossip) == 3
        try:
            async with asyncio.timeout(30):
                while not any(node.mux.lock_server() is not None and node.mux.lock_server().is_master  # type: ignore[union-attr]
                              for node in started):
                    await asyncio.sleep(0.05)
            addresses = {f"n{i + 1}": ("127.0.0.1", port) for i, port in enumerate(tcp)}
            client_tls = RuntimeConfig(tls_cert_file=tmp_path / "alice.pem", tls_key_file=tmp_path / "alice.key",
                                       tls_ca_file=tmp_path / "ca.pem")
            client = LockClient(addresses, principal="alice", key=None, runtime=client_tls,
                                config=LockConfig.local())
            try:
                async with asyncio.timeout(30):
                    await client.open()
                    await client.create("/ls/local/tls", b"over tls")
                    data = await client.read("/ls/local/tls")
                assert data.contents == b"over tls"
                # the session belongs to the certificate's common name
                cells = [n.mux.lock_server() for n in started]
                namespace = next(c for c in cells if c is not None and c.is_master).namespace
                assert {namespace.principal_of(s) for s in namespace.session_ids()} == {"alice"}
            finally:
                await client.close()
        finally:
            for node in started:
                await node.stop()
        assert all(node.host is not None and node.host.failure is None for node in started)

    run(scenario())
