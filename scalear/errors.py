"""Errors a user can fix: the ``scalear`` command prints them as one line and exits 2 (no traceback)."""

from __future__ import annotations


class UsageError(Exception):
    """A bad argument, file or configuration, named in the message (``scalear`` exits 2 with it)."""
