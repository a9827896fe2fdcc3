"""The dashboard's HTTP surface against a real one-node process: what it
serves, and what it refuses."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from synod.node.local import LocalNodeCluster
from synod.web.status import cluster_view


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNodeCluster]:
    local = LocalNodeCluster(Path(tmp_path_factory.mktemp("web")) / "cluster", 1, shards=1)
    try:
        local.start()
        yield local
    finally:
        local.stop()


def raw(cluster: LocalNodeCluster, request: bytes) -> bytes:
    host, port = cluster.http("n1").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_page_is_served_and_polls_status(node: LocalNodeCluster) -> None:
    response = raw(node, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Security-Policy: default-src 'self'" in response
    assert b'fetch("/status"' in response and b"setInterval(poll, 1000)" in response


def test_status_is_json_with_every_section(node: LocalNodeCluster) -> None:
    response = raw(node, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"application/json" in head
    status = json.loads(body)
    for key in ("node", "members", "groups", "lock", "transactions", "mapreduce", "cluster"):
        assert key in status
    assert [g["group"] for g in status["groups"]] == ["lock", "s1"]


def test_metrics_parse_as_prometheus_text(node: LocalNodeCluster) -> None:
    response = raw(node, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    _, _, body = response.partition(b"\r\n\r\n")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert "synod_paxos_chosen_index" in families
    labels = {s.labels["group"] for s in families["synod_paxos_chosen_index"].samples}
    assert labels == {"lock", "s1"}


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
    (b"DELETE / HTTP/1.1\r\n\r\n", b"405"),
    (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", b"404"),
    (b"GET /nothing HTTP/1.1\r\n\r\n", b"404"),
    (b"nonsense\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", b"413"),
    (b"GET / HTTP/1.1\r\n", b"400"),   # closed before the head ends
])
def test_bad_requests_get_an_error_and_the_node_carries_on(
        node: LocalNodeCluster, request_bytes: bytes, status: bytes) -> None:
    host, port = node.http("n1").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        response = sock.recv(65536)
    assert response.split(b" ")[1] == status
    assert raw(node, b"GET /status?local=1 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert node.is_running("n1")


def test_the_cluster_view_computes_leaders_and_lag() -> None:
    def group(role: str, chosen: int, leader: str) -> dict[str, object]:
        return {"group": "g", "role": role, "chosen_index": chosen, "leader": leader, "ballot": "3.a",
                "members": ["a", "b", "c"]}
    view = cluster_view({
        "a": {"groups": [group("leader", 10, "a")]},
        "b": {"groups": [group("follower", 7, "a")]},
        "c": None,
    })
    assert view == [{"group": "g", "leader": "a", "ballot": "3.a", "chosen_index": 10, "replicas": {
        "a": {"role": "leader", "chosen_index": 10, "lag": 0},
        "b": {"role": "follower", "chosen_index": 7, "lag": 3},
        "c": {"role": "unreachable", "chosen_index": None, "lag": None}}}]


@pytest.mark.slow
def test_a_mapreduce_worker_in_gossip_is_listed(node: LocalNodeCluster, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    seed = f"n1@{node.layout['n1']['gossip']}"
    worker = subprocess.Popen(
        [sys.executable, "-c", "from synod.cli import main; main()", "mr", "worker", "--cluster",
         str(node.data_dir), "--node", "mr-w1", "--seed", seed, "--scratch", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        listed: list[dict[str, str]] = []
        while time.monotonic() < deadline and not listed:
            _, _, body = raw(node, b"GET /status HTTP/1.1\r\n\r\n").partition(b"\r\n\r\n")
            listed = json.loads(body)["mapreduce"]
            time.sleep(0.3)
        assert listed == [{"node": "mr-w1", "role": "mr-worker", "status": "alive"}], \
            worker.stderr.read1().decode() if worker.poll() is not None and worker.stderr else listed
        _, _, body = raw(node, b"GET /status HTTP/1.1\r\n\r\n").partition(b"\r\n\r\n")
        assert "mr-w1" not in json.loads(body)["cluster"]["nodes"]     # no dashboard to ask
    finally:
        os.kill(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
