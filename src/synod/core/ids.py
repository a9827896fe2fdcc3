"""Node identities.

A ``NodeId`` is a short printable string (``"n1"``, ``"db-3"``). Strings rather than
integers so that traces, logs and config files read well; ``NewType`` so that mypy
keeps node ids apart from other strings.
"""

from __future__ import annotations

import re
from typing import NewType

from synod.core.errors import ConfigError

NodeId = NewType("NodeId", str)

_NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def node_id(text: str) -> NodeId:
    """Validate ``text`` as a node id: 1-64 characters of ``[A-Za-z0-9_.-]``."""
    if not _NODE_ID_RE.match(text):
        raise ConfigError(f"invalid node id {text!r}: use 1-64 of [A-Za-z0-9_.-]")
    return NodeId(text)
