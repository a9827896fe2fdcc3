"""Typed errors of the transaction block.

Every refusal a shard or the client library gives is a ``TxnError`` subclass with
a stable ``code`` (the ``ErrorReply.code`` on the wire); ``error_from_reply``
turns a reply back into the same class on the client side. ``retryable`` says
whether running the transaction again (``run_transaction``) may succeed.
"""

from __future__ import annotations

from synod.core.errors import SynodError


class TxnError(SynodError):
    """Base class of every transaction refusal."""

    code = "txn_error"
    retryable = False

    def __init__(self, detail: str = "", *, key: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        #: The key the refusal is about (conflicts name it), or "".
        self.key = key


class ConflictError(TxnError):
    """The transaction lost a conflict on ``key`` (it was wounded by an older
    transaction, or its locks were lost with a leader): it was aborted and may be
    retried, keeping its first timestamp."""

    code = "conflict"
    retryable = True


class TxnAbortedError(TxnError):
    """The transaction is aborted (by a participant's vote, a timeout, or the
    caller); nothing it wrote is visible."""

    code = "aborted"
    retryable = True


class TxnStateError(TxnError):
    """An operation that the transaction's state forbids: a commit after an
    abort, any operation after commit or abort."""

    code = "bad_state"


class TxnTooLargeError(TxnError):
    """The transaction touches more keys or writes more bytes than allowed."""

    code = "txn_too_large"


class KeyTooLargeError(TxnError):
    """A key or a value over its size limit (or an empty key)."""

    code = "key_too_large"


class UnknownTxnError(TxnError):
    """A message names a transaction the receiver does not know (for example a
    vote for a transaction the coordinator has no record of)."""

    code = "unknown_txn"


class WrongShardError(TxnError):
    """The key is not served by the group that was asked; refresh the shard map."""

    code = "wrong_shard"
    retryable = True


class OverloadedError(TxnError):
    """Too many transactions or lock waiters at a shard leader (back-pressure)."""

    code = "overloaded"
    retryable = True


class CompactedError(TxnError):
    """A watch asked for a revision older than the kept change history."""

    code = "compacted"


class UnavailableError(TxnError):
    """No leader answered in time; the outcome of a commit may be unknown."""

    code = "unavailable"
    retryable = True


_BY_CODE: dict[str, type[TxnError]] = {
    cls.code: cls
    for cls in (ConflictError, TxnAbortedError, TxnStateError, TxnTooLargeError, KeyTooLargeError,
                UnknownTxnError, WrongShardError, OverloadedError, CompactedError, UnavailableError)
}


def error_from_code(code: str, detail: str = "", key: str = "") -> TxnError:
    """The error class for a wire ``code`` (``TxnError`` for an unknown one)."""
    cls = _BY_CODE.get(code, TxnError)
    error = cls(detail, key=key)
    if cls is TxnError:
        error.code = code
    return error
