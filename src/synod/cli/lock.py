"""``synod ls|cat|put|rm|lock|watch|elect``: the lock cell of a running cluster.

Reads the connection file that ``synod cluster up --data DIR --core
synod.lock.server:lock_factory`` writes and talks to the cell through
``synod.lock.client``. Paths are absolute and inside the cell (``/ls/local/...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from synod.core.errors import ConfigError, SynodError

T = TypeVar("T")

_DATA_HELP = "the directory `synod cluster up` used"


def _options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option("--timeout", "timeout_s", type=float, default=5.0, show_default=True,
                            help="seconds before giving up on the cell")(function)
    function = click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
                            required=True, envvar="SYNOD_DATA", help=_DATA_HELP)(function)
    return function


def _session(data_dir: Path, timeout_s: float, action: Callable[[Any], Awaitable[T]]) -> T:
    """Open a session on the cell, run ``action(client)``, close it; typed errors
    and an unreachable cell become one-line messages."""
    from synod.cli.cluster import read_connection
    from synod.lock.client import LockClient, LockTimeout
    from synod.lock.errors import LockError
    from synod.runtime.host import run

    if timeout_s <= 0:
        raise click.BadParameter("must be positive", param_hint="--timeout")
    try:
        info = read_connection(data_dir)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None

    async def body() -> T:
        async with LockClient(info.nodes, call_timeout_s=timeout_s, **info.client_options()) as client:
            return await action(client)

    try:
        return run(body())
    except LockTimeout:
        nodes = ", ".join(f"{n}={h}:{p}" for n, (h, p) in info.nodes.items())
        raise click.ClickException(
            f"the lock cell did not answer within {timeout_s} s (nodes {nodes}); is it running "
            f"with --core synod.lock.server:lock_factory? try `synod cluster status --data {data_dir}`"
        ) from None
    except LockError as error:
        raise click.ClickException(f"{error.code}: {error}") from None
    except SynodError as error:
        raise click.ClickException(str(error)) from None


def register(group: click.Group) -> None:
    from synod.lock.messages import ANY_GENERATION, EventKind
    from synod.lock.sequencer import LockMode

    @group.command("ls")
    @click.argument("path")
    @click.option("-l", "long", is_flag=True, help="show each child's metadata")
    @_options
    def ls(path: str, long: bool, data_dir: Path, timeout_s: float) -> None:
        """List the children of a directory."""

        async def action(client: Any) -> list[str]:
            names = await client.list(path)
            if not long:
                return list(names)
            rows = []
            for name in names:
                meta = await client.stat(f"{path.rstrip('/')}/{name}")
                kind = "d" if meta.directory else ("e" if meta.ephemeral else "-")
                rows.append(f"{kind} gen={meta.content_generation} lock={meta.lock_mode.name.lower()}"
                            f"@{meta.lock_generation} {name}")
            return rows

        for line in _session(data_dir, timeout_s, action):
            click.echo(line)

    @group.command("cat")
    @click.argument("path")
    @_options
    def cat(path: str, data_dir: Path, timeout_s: float) -> None:
        """Print a file's contents."""

        async def action(client: Any) -> bytes:
            data = await client.read(path, cache=False)
            contents: bytes = data.contents
            return contents

        sys.stdout.buffer.write(_session(data_dir, timeout_s, action))
        sys.stdout.buffer.flush()

    @group.command("put")
    @click.argument("path")
    @click.argument("value", required=False)
    @click.option("--dir", "directory", is_flag=True, help="create a directory")
    @click.option("--if-generation", "generation", type=int, default=None,
                  help="write only if the content generation is this (compare-and-set)")
    @_options
    def put(path: str, value: str | None, directory: bool, generation: int | None,
            data_dir: Path, timeout_s: float) -> None:
        """Create or overwrite a file (VALUE, or standard input when omitted)."""
        contents = b"" if directory else (value.encode() if value is not None else sys.stdin.buffer.read())

        async def action(client: Any) -> str:
            from synod.lock.errors import ExistsError

            if directory:
                meta = await client.create(path, directory=True)
                return f"created {meta.path}"
            if generation is None:
                try:
                    meta = await client.create(path, contents)
                    return f"created {meta.path} gen={meta.content_generation}"
                except ExistsError:
                    pass
            meta = await client.write(path, contents,
                                      expected_generation=ANY_GENERATION if generation is None else generation)
            return f"wrote {meta.path} gen={meta.content_generation}"

        click.echo(_session(data_dir, timeout_s, action))

    @group.command("rm")
    @click.argument("path")
    @_options
    def rm(path: str, data_dir: Path, timeout_s: float) -> None:
        """Delete a file or an empty directory."""

        async def action(client: Any) -> None:
            await client.delete(path)

        _session(data_dir, timeout_s, action)

    @group.command("lock", context_settings={"ignore_unknown_options": True})
    @click.argument("path")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
    @click.option("--shared", is_flag=True, help="take the lock in shared (reader) mode")
    @click.option("--wait", "wait_s", type=float, default=None, help="seconds to wait for the lock (default: forever)")
    @_options
    def lock(path: str, command: tuple[str, ...], shared: bool, wait_s: float | None,
             data_dir: Path, timeout_s: float) -> None:
        """Hold the lock on PATH while COMMAND runs; its sequencer is in
        $SYNOD_LOCK_SEQUENCER. Exits with COMMAND's status."""
        mode = LockMode.SHARED if shared else LockMode.EXCLUSIVE

        async def action(client: Any) -> int:
            async with client.lock(path, mode, timeout_s=wait_s) as sequencer:
                env = {**os.environ, "SYNOD_LOCK_SEQUENCER": str(sequencer)}
                process = await asyncio.create_subprocess_exec(*command, env=env)
                return await process.wait()

        raise SystemExit(_session(data_dir, timeout_s, action))

    @group.command("watch")
    @click.argument("path")
    @click.option("--count", type=int, default=0, help="stop after this many events (0: never)")
    @_options
    def watch(path: str, count: int, data_dir: Path, timeout_s: float) -> None:
        """Print the events about PATH (its contents, its children, its lock)."""
        kinds = tuple(EventKind)

        async def action(client: Any) -> None:
            seen = 0
            async for event in client.watch(path, kinds):
                name = f" {event.name}" if event.name else ""
                click.echo(f"{event.kind.name.lower()} {event.path}{name}", nl=True)
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return

        with contextlib.suppress(KeyboardInterrupt):
            _session(data_dir, timeout_s, action)

    @group.command("elect", context_settings={"ignore_unknown_options": True})
    @click.argument("path")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    @click.option("--id", "identity", default=None, help="this candidate's identity (default: host:pid)")
    @_options
    def elect(path: str, command: tuple[str, ...], identity: str | None, data_dir: Path, timeout_s: float) -> None:
        """Campaign for leadership of PATH; once leader, print it and run COMMAND
        (or wait until interrupted) while leading."""
        me = identity or f"{os.uname().nodename}:{os.getpid()}"

        async def action(client: Any) -> int:
            sequencer = await client.elect(path, me)
            click.echo(f"leader {me} {sequencer}")
            sys.stdout.flush()
            if not command:
                while client.session.usable:
                    await asyncio.sleep(0.2)
                return 1
            env = {**os.environ, "SYNOD_LOCK_SEQUENCER": str(sequencer), "SYNOD_LEADER": me}
            process = await asyncio.create_subprocess_exec(*command, env=env)
            return await process.wait()

        raise SystemExit(_session(data_dir, timeout_s, action))

