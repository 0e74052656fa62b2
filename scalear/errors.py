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


_ALLOCATION_FAILURES = ("out of memory", "can't allocate memory", "not enough memory", "malloc failed",
                        "failed to allocate", "unable to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation: ``MemoryError`` (numpy), ``torch.OutOfMemoryError`` (CUDA), or a
    ``RuntimeError`` from a CPU allocator (torch's, Open3D's) saying so."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(m in text for m in _ALLOCATION_FAILURES))


__all__ = ["UsageError", "find_usage_error", "is_out_of_memory"]
