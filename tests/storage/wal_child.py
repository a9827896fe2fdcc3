"""A process that appends to a real write-ahead log and acknowledges on stdout.

Used by ``test_realproc.py``: run under strace to show that no acknowledgement
leaves the process before the log's fsync, and killed with SIGKILL to show that
every acknowledged record survives. Record ``i`` (1-based) is ``record(i)`` so
the parent can check what it recovers.

    python wal_child.py DIRECTORY ROUNDS [MUTANT]

ROUNDS 0 means until killed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from synod.core import faults
from synod.storage import WalConfig, WriteAheadLog
from synod.storage.realfs import RealFileSystem


def record(index: int) -> bytes:
    return f"record {index} ".encode() * (1 + index % 7)


def main() -> None:
    directory, rounds = Path(sys.argv[1]), int(sys.argv[2])
    if len(sys.argv) > 3:
        faults.enable_mutant(sys.argv[3])
    config = WalConfig(segment_bytes_max=64 * 1024, record_bytes_max=1024, buffer_bytes_max=1 << 20)
    log, recovered = WriteAheadLog.open(RealFileSystem(directory), "wal", config)
    if recovered != [record(i) for i in range(log.first_index, log.last_index + 1)]:
        sys.exit("recovered records are not the ones appended")
    round_number = 0
    while rounds == 0 or round_number < rounds:
        round_number += 1
        for _ in range(1 + round_number % 3):
            index = log.last_index + 1
            assert log.append(record(index)) == index
        durable = log.sync()
        os.write(1, f"ACK {durable}\n".encode())


if __name__ == "__main__":
    main()
