"""The lock service's typed errors.

Every refusal the namespace can give is a ``LockError`` subclass with a stable
``code``; on the wire it travels as ``OpError(code, detail)`` and the client
library raises the same class again (``error_from_code``). A refused operation
changes nothing.
"""

from __future__ import annotations

from synod.core.errors import SynodError


class LockError(SynodError):
    """Base of the lock service's expected errors."""

    code = "lock_error"


class BadPathError(LockError):
    """Empty, relative, outside the cell, ``.``/``..``, NUL, over-long, too deep."""

    code = "bad_path"


class BadRequestError(LockError):
    """A malformed operation, or one that makes no sense for that node."""

    code = "bad_request"


class NotFoundError(LockError):
    code = "not_found"


class ExistsError(LockError):
    code = "exists"


class NotEmptyError(LockError):
    code = "not_empty"


class NotDirectoryError(LockError):
    code = "not_directory"


class IsDirectoryError(LockError):
    code = "is_directory"


class TooLargeError(LockError):
    """Contents over ``LockConfig.contents_bytes_max``."""

    code = "too_large"


class GenerationMismatchError(LockError):
    """A compare-and-set named a content generation that is no longer current."""

    code = "generation_mismatch"


class PermissionDeniedError(LockError):
    """The session's principal is not on the ACL the operation needs."""

    code = "permission_denied"


class SessionExpiredError(LockError):
    """The session (and so every handle in it) has ended."""

    code = "session_expired"


class LockBusyError(LockError):
    """The lock is held in a conflicting mode."""

    code = "lock_busy"


class LockDelayError(LockError):
    """The lock's previous holder's session ended without releasing it, and the
    lock-delay has not run out yet."""

    code = "lock_delay"


class NotHolderError(LockError):
    """A release (or sequencer request) by a session that does not hold the lock."""

    code = "not_holder"


class LimitError(LockError):
    """A namespace bound (nodes, children, sessions, ACL size) would be exceeded."""

    code = "limit"


class NotMasterError(LockError):
    """This replica is not the cell's master (``hint`` names the one it knows)."""

    code = "not_master"


class StaleEpochError(LockError):
    """A request carried an older master epoch: the master failed over since."""

    code = "stale_epoch"


_BY_CODE: dict[str, type[LockError]] = {
    cls.code: cls
    for cls in (
        BadPathError, BadRequestError, NotFoundError, ExistsError, NotEmptyError,
        NotDirectoryError, IsDirectoryError, TooLargeError, GenerationMismatchError,
        PermissionDeniedError, SessionExpiredError, LockBusyError, LockDelayError,
        NotHolderError, LimitError, NotMasterError, StaleEpochError,
    )
}


def error_from_code(code: str, detail: str) -> LockError:
    """The typed error for a wire ``code`` (a plain ``LockError`` if unknown)."""
    cls = _BY_CODE.get(code, LockError)
    error = cls(detail)
    if cls is LockError:
        error.code = code
    return error
