"""SWIM + Lifeguard gossip membership: the sans-IO member core and its API.

``GossipMember`` is the core (``synod.core.Core``); ``GossipConfig`` its knobs;
``MembershipView``/``MemberEvent`` what subscribers read. See docs/gossip.md.
"""

from synod.gossip.config import GossipConfig
from synod.gossip.member import GossipMember, Role
from synod.gossip.messages import MemberStatus
from synod.gossip.view import (
    EventKind,
    GossipStatistics,
    MemberEvent,
    MemberInfo,
    MembershipView,
)

__all__ = [
    "EventKind",
    "GossipConfig",
    "GossipMember",
    "GossipStatistics",
    "MemberEvent",
    "MemberInfo",
    "MemberStatus",
    "MembershipView",
    "Role",
]
