"""The lock service's configuration: one frozen dataclass, three presets.

Durations are milliseconds; sizes bytes; every bound a ``*_max``. ``lan()`` keeps
Chubby's values (12 s lease, 1 min lock-delay, 45 s grace period); ``local()`` is
for processes on one machine (tests, the demo); ``sim()`` for the simulator.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from synod.core.errors import ConfigError

_CELL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class LockConfig:
    """Knobs of one cell. Every replica of a cell must agree on all of them: the
    namespace limits are part of the replicated state machine's behaviour."""

    #: The cell's name: the namespace is rooted at ``/ls/<cell>``.
    cell: str = "local"

    #: A session's lease: the master promises not to end a session earlier than
    #: this after it last answered a KeepAlive. Chubby's default, 12 s.
    lease_ms: float = 12_000.0

    #: The master answers a held-open KeepAlive this long before the lease would
    #: end, so the reply (which carries the new lease) arrives in time.
    keepalive_early_ms: float = 1_000.0

    #: After a holder's session ends without releasing a lock, the lock cannot be
    #: taken for this long: servers that cannot check sequencers get time to
    #: notice. Chubby's default, one minute.
    lock_delay_ms: float = 60_000.0

    #: A client may ask for a shorter or longer lock-delay per lock, up to this.
    lock_delay_ms_max: float = 60_000.0

    #: After its local lease runs out a client waits this long for a new master
    #: (jeopardy) before it declares its session expired. Chubby's 45 s.
    grace_ms: float = 45_000.0

    #: Largest file contents. Chubby stores small files: 256 KiB.
    contents_bytes_max: int = 256 * 1024

    #: Longest path, longest component, deepest path.
    path_bytes_max: int = 4096
    component_bytes_max: int = 255
    depth_max: int = 64

    #: Nodes in the namespace, children of one directory, open sessions.
    nodes_max: int = 1_000_000
    children_max: int = 100_000
    sessions_max: int = 100_000

    #: Principals named in one ACL.
    acl_principals_max: int = 64

    #: The principals allowed everything on the root directory (``*``: anyone).
    root_acl: tuple[str, ...] = ("*",)

    #: Events queued per session waiting for a KeepAlive reply; on overflow the
    #: oldest are dropped and the session gets a "handle invalid" cue to re-read.
    events_per_session_max: int = 10_000

    #: A client caches a file from its Nth uncached read since the client last
    #: dropped (or never had) it; earlier reads go to the master uncached. Every
    #: cached copy makes the next write of that file wait until the copy is
    #: invalidated, so a file read once between writes is cheaper left uncached:
    #: with 1 (Chubby: every read caches) a 90/10 read/write mix over 100 files
    #: from 128 sessions hit the cache on 3 % of reads while each write waited
    #: for about nine sessions' acknowledgements. 2 caches what is read again.
    #: (A client-side knob: the master does not use it.)
    cache_admission_reads: int = 2

    def __post_init__(self) -> None:
        if not _CELL_RE.match(self.cell):
            raise ConfigError(f"LockConfig.cell {self.cell!r}: use 1-63 of [A-Za-z0-9_.-]")
        positive = (
            "lease_ms", "keepalive_early_ms", "grace_ms", "contents_bytes_max", "path_bytes_max",
            "component_bytes_max", "depth_max", "nodes_max", "children_max", "sessions_max",
            "acl_principals_max", "events_per_session_max", "lock_delay_ms_max", "cache_admission_reads",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"LockConfig.{name} must be positive")
        if self.lock_delay_ms < 0:
            raise ConfigError("LockConfig.lock_delay_ms must not be negative")
        if self.lock_delay_ms > self.lock_delay_ms_max:
            raise ConfigError("LockConfig.lock_delay_ms must not exceed lock_delay_ms_max")
        if self.keepalive_early_ms >= self.lease_ms:
            raise ConfigError("LockConfig.keepalive_early_ms must be shorter than lease_ms")
        if self.component_bytes_max > self.path_bytes_max:
            raise ConfigError("LockConfig.component_bytes_max must not exceed path_bytes_max")
        if not self.root_acl or len(self.root_acl) > self.acl_principals_max:
            raise ConfigError("LockConfig.root_acl must name 1..acl_principals_max principals")

    @property
    def root(self) -> str:
        return f"/ls/{self.cell}"

    @classmethod
    def lan(cls) -> LockConfig:
        """One cell on a data-centre LAN: Chubby's values."""
        return cls()

    @classmethod
    def local(cls) -> LockConfig:
        """Processes on one machine: short lease, lock-delay and grace period."""
        return dataclasses.replace(
            cls(), lease_ms=1_500.0, keepalive_early_ms=300.0, lock_delay_ms=1_000.0,
            grace_ms=3_000.0,
        )

    @classmethod
    def sim(cls) -> LockConfig:
        """The simulator: leases of a few hundred virtual milliseconds so that
        sessions expire and lock-delays run out many times per run."""
        return dataclasses.replace(
            cls(), cell="sim", lease_ms=400.0, keepalive_early_ms=80.0, lock_delay_ms=2_000.0,
            lock_delay_ms_max=2_000.0, grace_ms=600.0, contents_bytes_max=4096, nodes_max=10_000, children_max=1_000,
            sessions_max=1_000, events_per_session_max=1_000,
        )
