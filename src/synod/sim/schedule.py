"""The fault schedule: a chaos phase drawn from the seed.

Theory of operation
-------------------
Before the run starts, ``draw_schedule`` plans every fault of the chaos phase from
a generator derived from the seed: fault times are a Poisson process of mean gap
``fault_interval_ms_mean``; each fault's kind is drawn by the ``*_weight`` fields;
durations from their ``[min, max]`` ranges. Planning up front (rather than on the
fly) makes the schedule printable and independent of what the cores do, so a
change in a core does not change which faults a seed injects.

Crashes respect ``crashed_nodes_max``: the planner tracks when each planned crash
restarts and skips a crash that would take down one node too many. Only
*fault-prone* nodes crash (a scenario keeps its client nodes up); partitions,
cuts and clogs may involve any node.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from synod.sim.config import SimConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class Crash:
    """Crash ``node`` at ``at_ms`` and restart it ``down_ms`` later. With
    ``mid_write`` the crash waits (at most ``mid_write_wait_ms_max``) until the
    node has a disk write whose fsync is in flight, and strikes inside it."""

    at_ms: float
    node: str
    down_ms: float
    mid_write: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """Cut every link between ``side_a`` and ``side_b`` both ways for ``duration_ms``."""

    at_ms: float
    side_a: tuple[str, ...]
    side_b: tuple[str, ...]
    duration_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class OneWayCut:
    """Drop messages from ``source`` to ``destination`` (only) for ``duration_ms``."""

    at_ms: float
    source: str
    destination: str
    duration_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Clog:
    """Hold the messages of ``node`` (``destination`` empty) or of the link
    ``node -> destination`` for ``duration_ms``."""

    at_ms: float
    node: str
    destination: str
    duration_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LossBurst:
    """Drop messages with ``probability`` for ``duration_ms``."""

    at_ms: float
    probability: float
    duration_ms: float


Fault = Crash | Partition | OneWayCut | Clog | LossBurst


def describe(fault: Fault) -> str:
    """One line for the trace."""
    match fault:
        case Crash(node=node, down_ms=down_ms, mid_write=mid_write):
            when = " mid-write" if mid_write else ""
            return f"crash{when} {node} for {down_ms:.1f}ms"
        case Partition(side_a=a, side_b=b, duration_ms=d):
            return f"partition {','.join(a)} | {','.join(b)} for {d:.1f}ms"
        case OneWayCut(source=s, destination=t, duration_ms=d):
            return f"cut {s}>{t} for {d:.1f}ms"
        case Clog(node=node, destination=dest, duration_ms=d):
            what = f"{node}>{dest}" if dest else node
            return f"clog {what} for {d:.1f}ms"
        case LossBurst(probability=p, duration_ms=d):
            return f"loss-burst p={p:.2f} for {d:.1f}ms"


def draw_schedule(
    rng: random.Random,
    nodes: list[str],
    fault_prone: list[str],
    config: SimConfig,
    start_ms: float = 0.0,
) -> list[Fault]:
    """Plan the chaos phase ``[start_ms, start_ms + config.chaos_ms)``."""
    kinds = ("crash", "partition", "one_way", "clog", "loss_burst")
    weights = [
        config.crash_weight if fault_prone else 0.0,
        config.partition_weight if len(nodes) >= 2 else 0.0,
        config.one_way_weight if len(nodes) >= 2 else 0.0,
        config.clog_weight,
        config.loss_burst_weight,
    ]
    if not config.faults or sum(weights) <= 0 or not nodes:
        return []
    end_ms = start_ms + config.chaos_ms
    restart_at: dict[str, float] = {}
    faults: list[Fault] = []
    now = start_ms
    while True:
        now += rng.expovariate(1.0 / config.fault_interval_ms_mean)
        if now >= end_ms:
            return faults
        kind = rng.choices(kinds, weights)[0]
        if kind == "crash":
            node = rng.choice(fault_prone)
            down = sum(1 for t in restart_at.values() if t > now)
            down_ms = rng.uniform(config.down_ms_min, config.down_ms_max)
            mid_write = rng.random() < config.crash_mid_write_probability
            if restart_at.get(node, -1.0) > now or down >= config.crashed_nodes_max:
                continue
            # A mid-write crash may strike up to mid_write_wait_ms_max late.
            restart_at[node] = now + down_ms + (config.mid_write_wait_ms_max if mid_write else 0.0)
            faults.append(Crash(at_ms=now, node=node, down_ms=down_ms, mid_write=mid_write))
        elif kind == "partition":
            shuffled = list(nodes)
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(shuffled) - 1)
            faults.append(Partition(
                at_ms=now, side_a=tuple(sorted(shuffled[:cut])), side_b=tuple(sorted(shuffled[cut:])),
                duration_ms=rng.uniform(config.partition_ms_min, config.partition_ms_max),
            ))
        elif kind == "one_way":
            source, destination = rng.sample(nodes, 2)
            faults.append(OneWayCut(
                at_ms=now, source=source, destination=destination,
                duration_ms=rng.uniform(config.partition_ms_min, config.partition_ms_max),
            ))
        elif kind == "clog":
            node = rng.choice(nodes)
            destination = rng.choice([n for n in nodes if n != node]) if len(nodes) >= 2 and rng.random() < 0.5 else ""
            faults.append(Clog(
                at_ms=now, node=node, destination=destination,
                duration_ms=rng.uniform(config.clog_ms_min, config.clog_ms_max),
            ))
        else:
            faults.append(LossBurst(
                at_ms=now, probability=config.loss_burst_probability,
                duration_ms=rng.uniform(config.clog_ms_min, config.loss_burst_ms_max),
            ))
