"""The error types every block shares.

Two kinds of failure (STYLE.md, habit 7):

* expected conditions are typed errors: ``LocalProtocolError`` when *we* (or our
  caller) broke a protocol rule, ``RemoteProtocolError`` when a *peer* sent something
  malformed or out of bounds, ``ConfigError`` for a bad configuration value;
* a broken invariant is a bug: ``invariant()`` raises ``InvariantViolation``, which a
  node never catches and the simulator reports with the seed that replays it.

``invariant()`` is a function rather than ``assert`` so that it survives ``python -O``.
"""

from __future__ import annotations


class SynodError(Exception):
    """Base class of every error synod raises on purpose."""


class LocalProtocolError(SynodError):
    """The local side (or its caller) broke a protocol rule."""


class RemoteProtocolError(SynodError):
    """A peer sent bytes or a message that break the protocol (malformed, oversized,
    unknown type, failed authentication). The offending connection is closed; the
    node keeps serving everyone else."""


class ConfigError(SynodError):
    """A configuration value is invalid. The message names the field."""


class InvariantViolation(AssertionError):
    """A core's invariant does not hold: a bug. Never caught by a node."""


class TimeoutError_(SynodError):
    """An operation did not complete before its deadline (the outcome is unknown)."""


def invariant(condition: bool, message: str) -> None:
    """Raise ``InvariantViolation(message)`` unless ``condition`` holds.

    Use it for what must be true if the code is correct; use the typed errors for
    what a peer or a caller can cause.
    """
    if not condition:
        raise InvariantViolation(message)
