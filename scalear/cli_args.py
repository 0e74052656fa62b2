"""Argument checks shared by every ``scalear`` verb, so that a bad value stops the command before any work with
one line naming the argument (exit 2): numbers in range, existing inputs, outputs that cannot clobber a file or a
folder, devices this machine has.

The ``*_int`` / ``*_float`` / path / :func:`device` functions are argparse ``type=`` callables; :class:`ArgumentParser`
prints argparse's errors as one line ``<prog>: <message>`` instead of the usage block; :func:`exit_on_usage_error`
turns a :class:`~scalear.errors.UsageError` raised while a verb runs into that line.

Example:
    >>> p = ArgumentParser(prog="demo")
    >>> _ = p.add_argument("--n", type=positive_int)
    >>> p.parse_args(["--n", "3"]).n
    3
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, NoReturn

from scalear.errors import UsageError, find_usage_error, is_out_of_memory


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one line, ``<prog>: <message> (see <prog> --help)``, and exit status 2
    (sub-parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str, verbs: str) -> tuple[ArgumentParser, argparse._SubParsersAction]:
    """A domain's command (``scalear <domain>``) with its description as written, and the group of its verbs,
    shown as ``verbs`` (e.g. ``"{predict,eval,fit}"``) in the help; ``fit`` is added by :func:`add_fit_verb`."""
    p = ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return p, p.add_subparsers(dest="verb", metavar=verbs, title="commands")


def add_fit_verb(sub: argparse._SubParsersAction) -> None:
    """The ``fit`` verb of a domain's command (LightningCLI parses its arguments: see
    :func:`scalear.cli.run_domain_verbs`)."""
    sub.add_parser("fit", help="train (LightningCLI: --config YAML; --help lists its keys)", add_help=False)


def add_image_files(parser: argparse.ArgumentParser, out_help: str) -> None:
    """``--input`` (an image file, a folder or a glob) and ``--out`` (the output folder) of a prediction verb."""
    parser.add_argument("--input", required=True, help="an image file, a folder of images, or a glob pattern (quote it)")
    parser.add_argument("--out", type=output_dir, required=True, help=out_help)


def _number(text: str, cast: Callable[[str], float], ok: Callable[[float], bool], what: str) -> float:
    try:
        v = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not (math.isfinite(v) and ok(v)):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return int(_number(text, int, lambda v: v >= 1, "a positive integer"))


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return int(_number(text, int, lambda v: v >= 0, "an integer >= 0"))


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """The type of an integer in ``[low, high]`` (no upper bound when ``high`` is None)."""
    what = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"

    def parse(text: str) -> int:
        return int(_number(text, int, lambda v: v >= low and (high is None or v <= high), what))

    return parse


def seed(text: str) -> int:
    """A random seed: an integer in 0..2**32 - 1 (what numpy and torch both take)."""
    return int(_number(text, int, lambda v: 0 <= v < 2**32, "an integer in 0..4294967295"))


def finite_float(text: str) -> float:
    """A finite number (not nan or inf)."""
    return _number(text, float, lambda v: True, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _number(text, float, lambda v: v > 0, "a finite number > 0")


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _number(text, float, lambda v: v >= 0, "a finite number >= 0")


def probability(text: str) -> float:
    """A number in [0, 1] (top-p: 0 turns the filter off)."""
    return _number(text, float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def _file_among_parents(path: Path) -> Path | None:
    return next((q for q in path.absolute().parents if q.exists() and not q.is_dir()), None)


def existing_file(text: str) -> Path:
    """A file that exists (not a folder)."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text} not found")
    return p


def existing_dir(text: str) -> Path:
    """A folder that exists."""
    p = Path(text)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder" if p.exists() else f"folder {text} not found")
    return p


def existing_path(text: str) -> Path:
    """An existing file or folder."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def output_dir(text: str) -> Path:
    """A folder to write into: may exist as a folder, never as a file, and no parent may be a file."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give an output folder")
    if (f := _file_among_parents(p)) is not None:
        raise argparse.ArgumentTypeError(f"{text} cannot be created: {f} is a file")
    return p


def output_file(text: str) -> Path:
    """A file to write: may exist as a file (it is replaced), never as a folder, and no parent may be a file."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    if (f := _file_among_parents(p)) is not None:
        raise argparse.ArgumentTypeError(f"{text} cannot be created: {f} is a file")
    return p


def device(text: str) -> str:
    """``auto`` or a device this machine has (:func:`scalear.cli_files.resolve_device`); returned as given."""
    from scalear.cli_files import resolve_device

    try:
        resolve_device(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _exit_on_sigterm(signum: int, frame) -> NoReturn:
    raise SystemExit(128 + signum)


def exit_on_usage_error(prog: str, run: Callable[[], int | None], unwind_on_sigterm: bool = True) -> int:
    """``run()``'s exit status; a :class:`~scalear.errors.UsageError` raised by it (or behind the error it raised)
    is printed as ``<prog>: <message>`` on stderr and gives 2, and so is a failed allocation. With ``unwind_on_sigterm`` (not for Lightning, which
    handles SIGTERM itself) SIGTERM exits through Python's unwinding (status 143), so that ``finally`` blocks remove
    temporary files (:func:`scalear.io.atomic_write`)."""
    unwind = (unwind_on_sigterm and threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    if unwind:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return int(run() or 0)
    except Exception as e:
        if (usage := find_usage_error(e)) is not None:
            print(f"{prog}: {usage}", file=sys.stderr)
        elif is_out_of_memory(e):  # the sizes asked for do not fit this machine
            print(f"{prog}: out of memory ({str(e).strip().splitlines()[0][:200]}); ask for smaller sizes", file=sys.stderr)
        else:
            raise
        return 2
    finally:
        if unwind:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


__all__ = ["ArgumentParser", "add_fit_verb", "add_image_files", "command_parser", "positive_int", "non_negative_int", "int_range", "seed", "finite_float", "positive_float",
           "non_negative_float", "probability", "existing_file", "existing_dir", "output_dir", "output_file", "device",
           "exit_on_usage_error"]
