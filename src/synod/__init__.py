"""synod: the five classic building blocks of distributed systems, in Python.

Blocks: ``synod.paxos`` (Multi-Paxos), ``synod.lock`` (a Chubby-style cell),
``synod.txn`` (sharded 2PC transactions), ``synod.mapreduce`` and ``synod.gossip``
(SWIM). ``synod.sim`` runs any of them in a deterministic simulation; ``synod.runtime``
runs the same protocol cores on real sockets and files.
"""

__version__ = "0.1.0"
