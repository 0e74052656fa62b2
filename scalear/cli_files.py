"""Input and output files of the prediction commands (``scalear depth predict``, ``scalear restore``).

One place for what every command that reads user files does alike: expand ``--input`` (a file, a folder or a
glob), give every input a distinct output name (keeping the inputs' sub-folders, so ``a/2.png`` and ``b/2.png``
never write the same file), refuse an output folder that could overwrite an input, and resolve ``--device``.
"""

from __future__ import annotations

import glob
import os
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:
    import torch

T, V, P, W = TypeVar("T"), TypeVar("V"), TypeVar("P"), TypeVar("W")


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
    count = Counter(stems)  # not stems.count(s) per input: quadratic, 3 s for a 20k-image folder
    names = [f"{s}_{r.suffix.lstrip('.').lower()}" if count[s] > 1 else s for s, r in zip(stems, rel)]
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
    for folder in {(out / stem).parent for stem in unique_stems(inputs)}:
        if (folder := folder.resolve()) in input_dirs:
            raise UsageError(f"--out {out} would put outputs next to input {input_dirs[folder]}; choose another "
                             "folder so inputs are never overwritten")


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise a CPU, CUDA or MPS device that this machine has
    (a :class:`~scalear.errors.UsageError` saying what is missing, not a failure later in a loader)."""
    import torch

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


def _done(written: Future | BaseException) -> bool:
    return not isinstance(written, Future) or written.done()


def run_in_batches(items: Sequence[T], batch_size: int, read: Callable[[T], V],
                   run: Callable[[list[tuple[T, V]]], list[P]], write: Callable[[T, V, P], W], *,
                   skip: tuple[type[BaseException], ...] = (), workers: int | None = None
                   ) -> Iterator[tuple[T, W | BaseException]]:
    """The prediction commands' loop over input files, with reading and writing off the model's path: yields
    ``(item, write(item, read(item), result))`` per item in input order, or ``(item, error)`` for an item whose
    ``read`` raised one of ``skip``.

    ``run`` gets the readable items of ``batch_size`` consecutive inputs with what ``read`` returned and returns
    one result per item (the model call; in the caller's thread, one batch at a time). Worker threads (``workers``,
    default up to 4) read the next batch and write the earlier ones meanwhile (image decoding, PNG encoding and
    zlib release the GIL). Writes of up to ``max(workers, batch_size)`` items are under way at once besides the
    current batch's, so that when writing an image takes longer than the model (a tiny model, large pictures)
    several images are written in parallel instead of the model waiting for one. Any other error of ``read``,
    ``run`` or ``write`` propagates after the writes already started have finished."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    in_flight = max(workers, batch_size)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scalear-files") as pool:
        def read_batch(start: int) -> list[tuple[T, Future]]:
            return [(item, pool.submit(read, item)) for item in items[start : start + batch_size]]

        def outcome(pending: tuple[T, Future | BaseException]) -> tuple[T, W | BaseException]:
            item, written = pending
            return item, written.result() if isinstance(written, Future) else written

        reads = read_batch(0)
        written: deque[tuple[T, Future | BaseException]] = deque()  # in input order
        for start in range(0, len(items), batch_size):
            batch, reads = reads, read_batch(start + batch_size)
            loaded: list[tuple[T, V]] = []
            order: list[tuple[T, int | BaseException]] = []
            for item, future in batch:
                try:
                    loaded.append((item, future.result()))
                    order.append((item, len(loaded) - 1))
                except skip as e:
                    order.append((item, e))
            results = run(loaded) if loaded else []
            if len(results) != len(loaded):
                raise ValueError(f"run returned {len(results)} results for {len(loaded)} inputs")
            writes = [pool.submit(write, item, value, result) for (item, value), result in zip(loaded, results)]
            # the oldest first: when too many are under way, and as long as they are done (a progress bar moves)
            while written and (len(written) > in_flight or _done(written[0][1])):
                yield outcome(written.popleft())
            written.extend((item, writes[k] if isinstance(k, int) else k) for item, k in order)
        while written:
            yield outcome(written.popleft())
