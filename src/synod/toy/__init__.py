"""``synod.toy``: a durable replicated register, the foundation's example core.

``RegisterNode`` (``synod.toy.register``) is a sans-IO core that persists every
write before acknowledging it, replicates to its peers and repairs divergence by
anti-entropy; ``RegisterClient`` (``synod.toy.workload``) drives it and records
a history. ``synod.toy.scenario`` registers the ``toy`` simulation scenario
(``synod sim toy --seeds 50``).
"""

from synod.toy.messages import Entry, Read, ReadOk, Replicate, Write, WriteOk
from synod.toy.register import RegisterConfig, RegisterNode, RegisterStatistics, register_factory
from synod.toy.workload import ClientConfig, ClientFactory, Operation, Outcome, RegisterClient

__all__ = [
    "ClientConfig",
    "ClientFactory",
    "Entry",
    "Operation",
    "Outcome",
    "Read",
    "ReadOk",
    "RegisterClient",
    "RegisterConfig",
    "RegisterNode",
    "RegisterStatistics",
    "Replicate",
    "Write",
    "WriteOk",
    "register_factory",
]
