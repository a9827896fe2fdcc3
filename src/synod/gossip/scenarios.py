"""Registers the gossip simulation scenarios (``synod sim`` imports this module by name)."""

from synod.gossip.scenario import gossip_scenario

__all__ = ["gossip_scenario"]
