"""The dashboard of a node: a live page, ``/status`` JSON and ``/metrics``.

See ``synod.web.server`` for the HTTP surface and ``synod.web.status`` for what
the status holds.
"""

from synod.web.metrics import render_metrics
from synod.web.server import DashboardServer, http_get
from synod.web.status import cluster_view, node_status

__all__ = ["DashboardServer", "cluster_view", "http_get", "node_status", "render_metrics"]
