"""Mutual TLS: the principal is the certificate's CN; a stranger's certificate is refused."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from synod.runtime.auth import AuthenticationError, Keyring
from synod.runtime.client import connect
from tests.runtime.cores import Answer, Command
from tests.runtime.helpers import make_config, run, running_host, wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def make_cert(directory: Path, ca: str, cn: str) -> tuple[Path, Path]:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{cn}.key", "-out", f"{cn}.csr", cwd=directory)
    openssl("x509", "-req", "-in", f"{cn}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{cn}.pem", cwd=directory)
    return directory / f"{cn}.pem", directory / f"{cn}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "stranger-ca")
    for cn in ("n1", "n2", "alice"):
        make_cert(directory, "ca", cn)
    make_cert(directory, "stranger-ca", "mallory")
    return directory


def tls(pki: Path, cn: str, ca: str = "ca", **changes: object) -> object:
    return make_config(
        tls_cert_file=pki / f"{cn}.pem", tls_key_file=pki / f"{cn}.key", tls_ca_file=pki / f"{ca}.pem",
        **changes,
    )


def test_clients_and_nodes_authenticate_by_certificate(pki: Path) -> None:
    async def scenario() -> None:
        async with running_host("n2", config=tls(pki, "n2", peers={"n1": ("127.0.0.1", 1)}),  # type: ignore[arg-type]
                                keyring=Keyring()) as n2:
            assert n2.address is not None
            n1_config = tls(pki, "n1", peers={"n2": n2.address})
            async with running_host("n1", config=n1_config, keyring=Keyring()) as n1:  # type: ignore[arg-type]
                assert n1.address is not None
                async with await connect(n1.address, "alice", None, config=tls(pki, "alice")) as client:  # type: ignore[arg-type]
                    whoami = await client.request(Command(op="whoami"), 20)
                    assert isinstance(whoami, Answer) and whoami.items[1] == "alice"
                    await client.request(Command(op="forward", arg="n2:over tls"), 20)
                await wait_until(lambda: n2.core.notes == ["n1:over tls"], "note over TLS")  # type: ignore[attr-defined]

    run(scenario())


def test_a_certificate_from_another_ca_is_refused_and_counted(pki: Path) -> None:
    async def scenario() -> None:
        async with running_host("n1", config=tls(pki, "n1"), keyring=Keyring()) as n1:  # type: ignore[arg-type]
            assert n1.address is not None
            # TLS 1.3 may finish the client's side before the node checks the
            # client certificate; the refusal then shows as a closed handshake.
            with pytest.raises((ssl.SSLError, ConnectionError, OSError, AuthenticationError)):
                async with await connect(n1.address, "mallory", None, config=tls(pki, "mallory", "ca")):  # type: ignore[arg-type]
                    pass
            await wait_until(lambda: n1.statistics().auth_tls_failure >= 1, "counted TLS failure")
            async with await connect(n1.address, "alice", None, config=tls(pki, "alice")) as client:  # type: ignore[arg-type]
                assert await client.request(Command(op="echo", arg="ok"), 20) == Answer(items=("ok",))

    run(scenario())


def test_a_client_certificate_cannot_claim_another_name(pki: Path) -> None:
    async def scenario() -> None:
        async with running_host("n1", config=tls(pki, "n1"), keyring=Keyring()) as n1:  # type: ignore[arg-type]
            assert n1.address is not None
            with pytest.raises(AuthenticationError):
                await connect(n1.address, "bob", None, config=tls(pki, "alice"))  # type: ignore[arg-type]
            await wait_until(lambda: n1.statistics().auth_unknown_principal >= 1, "counted claim")

    run(scenario())
