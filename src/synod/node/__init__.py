"""One node process: the lock cell and KV shard replicas under one ``Mux``, a
gossip member and the dashboard (``synod node --config node.toml``).

* ``NodeConfig`` / ``load_node_config`` -- the node's TOML file;
* ``Node`` -- start it, stop it gracefully (leadership transfer, gossip leave);
* ``run_node`` -- the process's main coroutine (signals, READY line);
* ``LocalNodeCluster`` -- several node processes on 127.0.0.1 (tests, demos).
"""

from synod.node.config import NodeConfig, load_node_config
from synod.node.groups import LOCK_GROUP, NodeMux, place_shards
from synod.node.local import LocalNodeCluster
from synod.node.process import Node
from synod.node.run import run_node

__all__ = ["LOCK_GROUP", "LocalNodeCluster", "Node", "NodeConfig", "NodeMux", "load_node_config",
           "place_shards", "run_node"]
