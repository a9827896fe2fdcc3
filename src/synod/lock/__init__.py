"""synod.lock: a Chubby-style lock service (see docs/lock.md)."""

from synod.lock.config import LockConfig
from synod.lock.namespace import Namespace
from synod.lock.sequencer import Fence, LockMode, Sequencer, StaleSequencerError

__all__ = ["Fence", "LockConfig", "LockMode", "Namespace", "Sequencer", "StaleSequencerError"]
