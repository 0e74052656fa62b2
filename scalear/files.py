"""Input and output files of the prediction commands (``scalear depth predict``, ``scalear restore``).

One place for what every command that reads user files does alike: expand ``--input`` (a file, a folder or a
glob), give every input a distinct output name, refuse an output folder that could overwrite an input, and
resolve ``--device auto``.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Sequence

import torch


def collect_inputs(spec: str | Path, suffixes: Sequence[str]) -> list[Path]:
    """Files of ``spec``: the file itself, a folder's files with one of ``suffixes`` (not recursive, hidden ones
    skipped), or a glob pattern's matching files; sorted. Raises FileNotFoundError when nothing matches."""
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(q for q in p.iterdir()
                       if q.is_file() and q.suffix.lower() in suffixes and not q.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(suffixes)}) in folder {p}")
        return files
    files = sorted(Path(q) for q in glob.glob(str(spec), recursive=True) if Path(q).is_file())
    if not files:
        raise FileNotFoundError(f"no input matches {str(spec)!r} (not a file, a folder or a glob with matches)")
    return files


def unique_stems(inputs: Sequence[Path]) -> list[str]:
    """Output name stem per input: its stem, or ``<stem>_<ext>`` where two inputs share a stem (a.png, a.jpg).

    >>> unique_stems([Path("x/a.png"), Path("y/a.JPG"), Path("b.png")])
    ['a_png', 'a_jpg', 'b']
    """
    stems = [p.stem for p in inputs]
    return [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if stems.count(p.stem) > 1 else p.stem for p in inputs]


def check_output_folder(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output folder that is an existing file or that holds an input (outputs must never land next
    to, or over, inputs)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give an output folder")
    out_r = out.resolve()
    for p in inputs:
        if p.resolve().parent == out_r:
            raise ValueError(f"--out {out} is the folder of input {p}; choose another folder so inputs are never overwritten")


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise a CPU, CUDA or MPS device that this machine has
    (a :class:`~scalear.errors.UsageError` saying what is missing, not a failure later in a loader)."""
    from scalear.errors import UsageError

    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"{str(name)!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "torch finds no CUDA GPU"
            raise UsageError(f"{str(name)!r} is not available: {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{str(name)!r} is not available: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"{str(name)!r} is not available: no Apple MPS device here; use --device cpu")
    elif dev.type != "cpu":
        raise UsageError(f"{str(name)!r} is not supported; use cpu, cuda, cuda:N, mps or auto")
    return dev


__all__ = ["collect_inputs", "unique_stems", "check_output_folder", "resolve_device"]
