"""Sequencers live in the kernel (``synod.core.sequencer``); re-exported here for
the lock service's users."""

from synod.core.sequencer import Fence, LockMode, Sequencer, StaleSequencerError

__all__ = ["Fence", "LockMode", "Sequencer", "StaleSequencerError"]
