"""Input and output files of the prediction commands (``scalear depth predict``, ``scalear restore``).

One place for what every command that reads user files does alike: expand ``--input`` (a file, a folder or a
glob), give every input a distinct output name (keeping the inputs' sub-folders, so ``a/2.png`` and ``b/2.png``
never write the same file), refuse an output folder that could overwrite an input, and resolve ``--device``.
"""

from __future__ import annotations

import glob
import os
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
    """Output name stem per input, distinct for distinct inputs: the input's path below the inputs' common folder
    without its suffix (``a/2`` and ``b/2`` for ``a/2.png`` and ``b/2.png``, so outputs keep the inputs'
    sub-folders; just the stem when all inputs share one folder), ``<stem>_<ext>`` where two inputs of one folder
    share a stem (``a.png``, ``a.jpg``), and ``_2``, ``_3``, ... should two names still be equal ignoring case (as
    on case-insensitive file systems).

    >>> unique_stems([Path("x/a.png"), Path("y/a.JPG"), Path("x/a.jpg"), Path("x/b.png")])
    ['x/a_png', 'y/a', 'x/a_jpg', 'x/b']
    >>> unique_stems([Path("x/a.png"), Path("x/A.png")])
    ['a', 'A_2']
    """
    if not inputs:
        return []
    absolute = [Path(p).absolute() for p in inputs]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    rel = [p.relative_to(root) for p in absolute]
    stems = [r.with_suffix("").as_posix() for r in rel]
    names = [f"{s}_{r.suffix.lstrip('.').lower()}" if stems.count(s) > 1 else s for s, r in zip(stems, rel)]
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, k = name, 2
        while candidate.lower() in taken:
            candidate, k = f"{name}_{k}", k + 1
        taken.add(candidate.lower())
        unique.append(candidate)
    return unique


def check_output_folder(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output folder that is an existing file, or one where an output (named by :func:`unique_stems`)
    would land in a folder holding an input: outputs never land next to, or over, inputs."""
    from scalear.errors import UsageError

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give an output folder")
    input_dirs = {Path(p).resolve().parent: p for p in inputs}
    for stem in unique_stems(inputs):
        if (folder := (out / stem).parent.resolve()) in input_dirs:
            raise UsageError(f"--out {out} would put outputs next to input {input_dirs[folder]}; choose another "
                             "folder so inputs are never overwritten")


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
