"""Host one core on a port: ``python -m synod.runtime.serve``.

Example (a 3-node toy register on loopback, one process per node)::

    python -m synod.runtime.serve --core toy --node n1 --port 7001 --data /tmp/n1 \\
        --secret-file cluster.key --user alice=alice.key \\
        --peer n2=127.0.0.1:7002 --peer n3=127.0.0.1:7003

Once listening it prints one line ``READY <node> <host> <port> <pid>`` on stdout (for
scripts and tests), and stops cleanly on SIGTERM or SIGINT. ``serve_node`` is the
same thing as a coroutine, for ``synod cluster up`` and the demo.

Secrets are files holding at least 16 bytes (a trailing newline is ignored);
``--new-secret FILE`` writes a fresh random one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from synod.core.effects import CoreFactory
from synod.core.errors import ConfigError
from synod.core.faults import enable_mutant
from synod.core.ids import NodeId, node_id
from synod.runtime.auth import Keyring, new_secret
from synod.runtime.config import RuntimeConfig
from synod.runtime.host import AsyncioHost, open_durable_store, run

log = logging.getLogger("synod.runtime.serve")

#: Cores known by a short name: each builds a factory from the cluster's node ids.
CoreBuilder = Callable[[tuple[NodeId, ...]], CoreFactory]


#: Short names for cores. The runtime is a driver and imports no block: a core is
#: named by ``module:function``, the function building a factory from the
#: cluster's node ids, and imported only when asked for.
CORE_ALIASES: dict[str, str] = {"toy": "synod.toy.register:register_factory"}


def core_builder(name: str) -> CoreBuilder:
    """A core alias (``toy``), or ``package.module:function`` taking the node ids."""
    module_name, sep, attribute = CORE_ALIASES.get(name, name).partition(":")
    if not sep:
        known = ", ".join(sorted(CORE_ALIASES))
        raise ConfigError(f"unknown core {name!r}: use one of {known} or module:function")
    try:
        builder: CoreBuilder = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot load core {name!r}: {error}") from None
    return builder


def read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as error:
        raise ConfigError(f"cannot read secret file {path}: {error}") from None
    if len(secret) < 16:
        raise ConfigError(f"secret file {path} holds {len(secret)} bytes; at least 16 are needed")
    return secret


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {text!r} is not HOST:PORT")
    return host, int(port)


async def serve_node(
    *,
    node: NodeId,
    core_factory: CoreFactory,
    config: RuntimeConfig,
    keyring: Keyring,
    listen: tuple[str, int],
    data_dir: Path | None,
    ready: Callable[[AsyncioHost], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run one node until ``stop`` is set (or the core fails, which re-raises)."""
    durable_log, recovered = (None, None) if data_dir is None else open_durable_store(data_dir)
    host = AsyncioHost(
        node=node,
        core_factory=core_factory,
        config=config,
        keyring=keyring,
        listen=listen,
        durable_log=durable_log,
        recovered=recovered,
    )
    await host.start()
    if ready is not None:
        ready(host)
    stop = stop or asyncio.Event()
    stopped = asyncio.create_task(host.wait_stopped())
    requested = asyncio.create_task(stop.wait())
    await asyncio.wait((stopped, requested), return_when=asyncio.FIRST_COMPLETED)
    requested.cancel()
    if not stopped.done():
        await host.stop()
    await stopped  # re-raises the core's failure, if that is why we stopped


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m synod.runtime.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--new-secret", type=Path, help="write a fresh random secret to FILE and exit")
    parser.add_argument("--core", default="toy", help="built-in core name or module:function")
    parser.add_argument("--node", help="this node's id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data", type=Path, help="directory of the write-ahead log")
    parser.add_argument("--secret-file", type=Path, help="the cluster secret")
    parser.add_argument("--user", action="append", default=[], metavar="NAME=FILE", help="a client user's key")
    parser.add_argument("--peer", action="append", default=[], metavar="ID=HOST:PORT")
    parser.add_argument("--insecure", action="store_true", help="no authentication (development only)")
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--tls-ca", type=Path)
    parser.add_argument("--log-level", default="WARNING")
    return parser


def main(argv: Sequence[str] | None = None, *, runtime: RuntimeConfig | None = None) -> int:
    """The process: parse ``argv``, serve until SIGTERM/SIGINT; the exit status.
    ``runtime``: the base ``RuntimeConfig`` (timings; default the LAN one), on
    which the peers and the security options of ``argv`` are set."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.new_secret is not None:
        args.new_secret.write_bytes(new_secret().hex().encode())
        args.new_secret.chmod(0o600)
        return 0
    try:
        mutant_name = os.environ.get("SYNOD_MUTANT")
        if mutant_name:
            # Test-only switch: plant a known bug so a test can prove its check trips.
            log.warning("SYNOD_MUTANT=%s: running with a PLANTED BUG (tests only)", mutant_name)
            enable_mutant(mutant_name)
        if args.node is None:
            raise ConfigError("--node is required")
        node = node_id(args.node)
        peers: dict[str, tuple[str, int]] = {
            node_id(name): parse_address(address)
            for name, _, address in (p.partition("=") for p in args.peer)
        }
        config = dataclasses.replace(
            runtime or RuntimeConfig(),
            peers=dict(peers),
            insecure=args.insecure,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            tls_ca_file=args.tls_ca,
        )
        users = {name: read_secret(Path(path)) for name, _, path in (u.partition("=") for u in args.user)}
        if args.secret_file is not None:
            keyring = Keyring.from_secret(read_secret(args.secret_file), users)
        elif args.insecure or config.tls_enabled:
            keyring = Keyring()
        else:
            raise ConfigError("--secret-file is required (or --insecure, or --tls-*)")
        nodes = tuple(sorted({node, *(NodeId(p) for p in peers)}))
        factory = core_builder(args.core)(nodes)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def ready(host: AsyncioHost) -> None:
        assert host.address is not None
        print(f"READY {host.node} {host.address[0]} {host.address[1]} {os.getpid()}", flush=True)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_node(
            node=node, core_factory=factory, config=config, keyring=keyring,
            listen=(args.host, args.port), data_dir=args.data, ready=ready, stop=stop,
        )

    with contextlib.suppress(KeyboardInterrupt):
        run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
