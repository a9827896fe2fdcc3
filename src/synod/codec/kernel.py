"""Kernel messages shared by every block and both drivers.

A client talks to a core through two envelopes. A request arrives at the core as
``on_message(now, source=<client id>, message=ClientRequest(...))``; the core
answers with the effect ``ClientResult(client, request_id, result)``, which the
driver delivers to the client as ``ClientReply``. In the simulator the client is a
simulated node whose core receives the ``ClientReply``; in the runtime it is the
TCP connection the request came on. The same core serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.codec.registry import Message, message


@message(100)
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRequest(Message):
    """A client's request ``body``; ``request_id`` is unique per client connection."""

    request_id: int
    body: Message


@message(101)
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientReply(Message):
    """The answer to request ``request_id``."""

    request_id: int
    body: Message


@message(102)
@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReply(Message):
    """A typed error answer: ``code`` is a stable machine-readable name
    (``"not_leader"``, ``"too_large"``, ...), ``detail`` a sentence for people,
    ``hint`` optional data (for example the leader's node id)."""

    code: str
    detail: str = ""
    hint: str = ""


@message(103)
@dataclass(frozen=True, slots=True, kw_only=True)
class Routed(Message):
    """A message for the core named ``group`` on the receiving node (see
    ``synod.core.mux``): one node process hosts several cores (a gossip member,
    replicas of several Paxos groups), and this envelope says which one."""

    group: str
    body: Message
