"""What a load's failures are called, so each says what can be done about it, and the first-cause rollback.

A refusal only a person can fix (a permission, a full disk, a read-only file) is CannotWrite and is
never retried; a lock waited out is WarehouseBusy and is; a server that cannot be reached at all is
WarehouseUnreachable. Whatever goes wrong while rolling back, the error that caused the rollback is
the one raised (`roll_back`).
"""

from __future__ import annotations

import errno

import dagster as dg


class WarehouseLimitError(ValueError):
    """A table the target cannot hold (too many columns, a value too wide)."""


class WarehouseUnreachable(ConnectionError):
    """The warehouse cannot be reached at all: fail at once, naming where it was looked for."""


class WarehouseBusy(TimeoutError):
    """A lock another session or process held was waited for as long as allowed: worth a retry later."""


class SpaceNotReclaimed(Exception):
    """A rewrite committed, but some tables still hold the values it replaced in their files: the message
    names them, and what holds the old versions (postgres_reclaim.py)."""


class CannotWrite(dg.Failure):
    """A write refused for a reason only a person can fix: no permission, a read-only file or database,
    a full disk. Waiting cannot help, so it is a `dg.Failure` no RetryPolicy retries, wherever in a step
    it is raised; the description says what to fix and the database's own error is its `__cause__`."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)


class StepFailed(RuntimeError):
    """A labelled step of a load failed; the load's transaction was rolled back."""


# errno values a person must act on, and what each asks of them.
_FILE_FIXES = {
    errno.ENOSPC: "the disk is full: free space on it",
    errno.EDQUOT: "the disk quota is used up: free space or raise the quota",
    errno.EROFS: "the file system is read-only: remount it read-write, or write elsewhere",
    errno.EACCES: "permission denied: give this process's user access to it",
    errno.EPERM: "the operation is not permitted (an immutable file? `lsattr` shows it, `chattr -i` clears it)",
}


def file_fix(error: BaseException) -> str | None:
    """What to fix when `error` is a local file this process could not write (a batch's staged files or
    rejects), naming the file; else None."""
    if isinstance(error, OSError) and error.errno in _FILE_FIXES:
        return f"{error.filename or 'a local file'}: {_FILE_FIXES[error.errno]} ({error.strerror})"
    return None


def roll_back(connection, error: BaseException) -> None:
    """Roll back after `error`. If that fails too (a commit that failed already ended the transaction,
    a session the server killed), `error` is still what the caller raises: the rollback's own error
    becomes a note on it, never the error."""
    try:
        connection.rollback()
    except Exception as rollback_error:  # noqa: BLE001 - whatever it is, the first cause wins
        error.add_note(f"(rolling back then failed too: {type(rollback_error).__name__}: {rollback_error})")
