"""Errors a user can fix: the ``scalear`` command prints them as one line and exits 2 (no traceback)."""

from __future__ import annotations


class UsageError(ValueError):
    """A bad argument, file or configuration, named in the message (``scalear`` exits 2 with it).

    A ``ValueError``, so that code which already handles bad values handles it too."""


def find_usage_error(exc: BaseException) -> UsageError | None:
    """The :class:`UsageError` that ``exc`` is or was raised from (through ``__cause__`` / ``__context__``, as
    when LightningCLI wraps a config error in its own), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UsageError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


__all__ = ["UsageError", "find_usage_error"]
