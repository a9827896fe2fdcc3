"""The simulation trace: one line per event, folded into a running sha256.

Two runs of one seed on one commit must produce byte-identical traces
(FoundationDB reruns a seed to check exactly this). Keeping every line would cost
memory on long runs, so the trace keeps a running digest, the last few lines (for
failure reports), and optionally hands every line to a sink (``--trace``).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable

TAIL_LINES_MAX = 40
"""How many recent lines a failure report shows."""


class Trace:
    """Running sha256 over ``line + "\\n"`` for every recorded line."""

    def __init__(self, sink: Callable[[str], None] | None = None) -> None:
        self._digest = hashlib.sha256()
        self._sink = sink
        self._tail: deque[str] = deque(maxlen=TAIL_LINES_MAX)
        self.lines_count = 0

    def record(self, time_ms: float, node: str, kind: str, detail: str = "") -> None:
        line = f"{time_ms:11.3f} {node:<6} {kind:<9} {detail}".rstrip()
        self._digest.update(line.encode())
        self._digest.update(b"\n")
        self._tail.append(line)
        self.lines_count += 1
        if self._sink is not None:
            self._sink(line)

    def digest(self) -> str:
        """Hex sha256 of every line recorded so far."""
        return self._digest.hexdigest()

    def tail(self) -> list[str]:
        """The most recent lines (at most ``TAIL_LINES_MAX``)."""
        return list(self._tail)
