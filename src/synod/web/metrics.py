"""``/metrics``: a node's status in Prometheus text format (``prometheus-client``).

Each scrape builds the families from one status snapshot in a fresh registry, so
nothing is kept between scrapes and a label set that disappears (a group moved
away) disappears from the output too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MEMBER_STATES = ("alive", "suspect", "dead", "left")


class _StatusCollector(Collector):
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self.status
        node = status["node"]
        members = GaugeMetricFamily("synod_gossip_members", "Gossip members by state, as this node sees them",
                                    labels=["node", "state"])
        for state in MEMBER_STATES:
            count = sum(1 for m in status["members"] if m["status"] == state)
            members.add_metric([node, state], count)
        yield members
        leader = GaugeMetricFamily("synod_paxos_is_leader", "1 if this replica leads its Paxos group",
                                   labels=["node", "group"])
        chosen = GaugeMetricFamily("synod_paxos_chosen_index", "Highest chosen log index known to this replica",
                                   labels=["node", "group"])
        entries = GaugeMetricFamily("synod_paxos_log_entries", "Log entries held in memory by this replica",
                                    labels=["node", "group"])
        applied = GaugeMetricFamily("synod_paxos_commands_applied", "Commands applied since start",
                                    labels=["node", "group"])
        for group in status["groups"]:
            labels = [node, group["group"]]
            leader.add_metric(labels, 1 if group["role"] == "leader" else 0)
            chosen.add_metric(labels, group["chosen_index"])
            entries.add_metric(labels, group["log_entries"])
            applied.add_metric(labels, group["commands_applied"])
        yield from (leader, chosen, entries, applied)
        lock = status.get("lock")
        if lock is not None:
            sessions = GaugeMetricFamily("synod_lock_sessions", "Live sessions the cell master tracks",
                                         labels=["node"])
            sessions.add_metric([node], lock["sessions_live"])
            held = GaugeMetricFamily("synod_lock_held_locks", "Lock files with at least one holder",
                                     labels=["node"])
            held.add_metric([node], len(lock["held_locks"]))
            yield from (sessions, held)
        in_flight = GaugeMetricFamily("synod_txn_in_flight", "Transactions preparing, coordinating or in doubt",
                                      labels=["node", "group"])
        revision = GaugeMetricFamily("synod_txn_revision", "Shard revision (last applied write)",
                                     labels=["node", "group"])
        for shard in status["transactions"]:
            in_flight.add_metric([node, shard["group"]], shard["in_flight"])
            revision.add_metric([node, shard["group"]], shard["revision"])
        yield from (in_flight, revision)
        uptime = GaugeMetricFamily("synod_node_uptime_seconds", "Seconds since the node process started",
                                   labels=["node"])
        uptime.add_metric([node], status["uptime_s"])
        yield uptime
        runtime = GaugeMetricFamily("synod_runtime_events", "Runtime counters since start (see RuntimeStatistics)",
                                    labels=["node", "counter"])
        for name, value in sorted(status.get("runtime", {}).items()):
            runtime.add_metric([node, name], value)
        yield runtime


def render_metrics(status: dict[str, Any]) -> bytes:
    """The Prometheus text exposition of ``status`` (a ``node_status`` dict)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status))
    return generate_latest(registry)
