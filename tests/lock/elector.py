"""A candidate process for the real-process election test:

    python -m tests.lock.elector DATA_DIR IDENTITY LOG_FILE

Campaigns for ``/ls/local/leader``; once leader, appends ``<identity>
<generation> <seq>`` lines to LOG_FILE every 20 ms while its lease is certainly
held (the fenced resource: the test replays the lines through a ``Fence``).
Exits when its session has expired."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from synod.cli.cluster import read_connection
from synod.lock.client import LockClient
from synod.runtime.host import run

PATH = "/ls/local/leader"


async def main(data_dir: Path, identity: str, log_file: Path) -> int:
    info = read_connection(data_dir)
    async with LockClient(info.nodes, call_timeout_s=30.0, **info.client_options()) as client:
        sequencer = await client.elect(PATH, identity)
        beat = 0
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # Act only while the lease certainly holds; in jeopardy, wait (the
            # session may survive a master failover); once expired, give up.
            while client.session.usable:
                if client.lease_safe():
                    beat += 1
                    os.write(fd, f"{identity} {sequencer.lock_generation} {beat}\n".encode())
                await asyncio.sleep(0.02)
        finally:
            os.close(fd)
    return 3


if __name__ == "__main__":
    sys.exit(run(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))))
