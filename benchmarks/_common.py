"""Shared pieces of the benchmark scripts: device/dtype flags, timing, peak memory and the rich table.

Peak memory is the most a block of code adds on top of what is in use when it starts:

* CUDA: ``torch.cuda.max_memory_allocated()`` minus ``torch.cuda.memory_allocated()`` at the start (tensors
  only, not the caching allocator's reserve);
* CPU (Linux): the process's peak resident set size ``VmHWM``, reset through ``/proc/self/clear_refs`` after
  returning freed heap memory to the OS with ``malloc_trim``, minus ``VmRSS`` at the start. Elsewhere it falls
  back to ``resource.getrusage().ru_maxrss``, which cannot be reset (a cell that peaks below an earlier one
  reads 0).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                        help="fp32, or bf16/fp16 autocast with fp32 weights (default: fp32)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="repeat a measurement until this many seconds are timed (default: 1.0)")
    parser.add_argument("--repeats", type=int, default=3, help="at most this many timed runs per cell (default: 3)")


def image_size(text: str) -> tuple[int, int]:
    """``--size H,W`` as an argparse type: two positive integers."""
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (two integers), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"H and W must be positive, got {text!r}")
    return h, w


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and check ``--device``; returns the device."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    return device


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` (``bf16``/``fp16``) on ``device``; a no-op for ``fp32``."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn: Callable[[], object], device: torch.device, min_time: float, repeats: int) -> float:
    """Median seconds of one call of ``fn``.

    The first call is a warm-up unless it alone takes ``min_time`` or more (then one-off costs are negligible
    and it counts); further calls run until ``min_time`` seconds are timed or ``repeats`` calls are made.
    """

    def once() -> float:
        synchronize(device)
        t = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - t

    first = once()
    if first >= min_time:
        return first
    times: list[float] = []
    while not times or (len(times) < repeats and sum(times) < min_time):
        times.append(once())
    return statistics.median(times)


# ------------------------------------------------------------------------------------------- memory
def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _can_reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _proc_status_kib("VmHWM")
        return True
    except (OSError, KeyError):
        return False


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")  # glibc, for malloc_trim
    except OSError:
        return None


_LIBC = _libc() if platform.system() == "Linux" else None
_RESET_HWM = platform.system() == "Linux" and _can_reset_hwm()


def memory_method(device: torch.device) -> str:
    """How :func:`peak_memory` measures on ``device`` (for the table's caption)."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated over the allocated memory at the start"
    if _RESET_HWM:
        return "peak RSS (VmHWM, reset after malloc_trim) over the RSS at the start"
    return "resource.getrusage ru_maxrss over the RSS high-water mark at the start (not resettable)"


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[list[float]]:
    """Context manager yielding a list that receives the block's peak memory in MiB (see module docstring)."""
    out: list[float] = []
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    elif _RESET_HWM:
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = _proc_status_kib("VmRSS") * 1024
    else:
        scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    yield out
    if device.type == "cuda":
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    elif _RESET_HWM:
        peak = _proc_status_kib("VmHWM") * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    out.append(max(peak - base, 0) / 2**20)


# ------------------------------------------------------------------------------------------- table
def environment(device: torch.device, dtype: str) -> str:
    """One line naming the device, dtype, thread count and torch version."""
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        where = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    prec = "fp32" if dtype == "fp32" else f"{dtype} autocast, fp32 weights"
    return f"device {where} | dtype {prec} | torch {torch.__version__}"


def print_table(title: str, columns: list[str], rows: list[list[str]], caption: str, text_columns: int = 1) -> None:
    """Print an aligned rich table: the first ``text_columns`` columns left-aligned, the numbers right-aligned."""
    table = Table(title=title, caption=caption, caption_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < text_columns else "right")
    for row in rows:
        table.add_row(*row)
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def fmt_params(n: int) -> str:
    return f"{n / 1e6:,.1f}M"


def procedural_sdf_grid(resolution: int, shape: str = "chair") -> "np.ndarray":
    """The SDF grid of a procedural object (seed 0): what the 3D benchmarks time marching cubes on, since
    randomly initialised decoders give no object-like level set."""
    import numpy as np

    from scalear.datasets.meshes.procedural import make_shape
    from scalear.datasets.meshes.sampling import sdf_grid

    return sdf_grid(make_shape(shape, np.random.default_rng(0)), resolution)


def load_sdf_grid(args: argparse.Namespace) -> "np.ndarray":
    """The grid marching cubes is timed on: ``--sdf-grid`` (an ``.npy`` file of a resolution^3 grid, for a machine
    without open3d), else the procedural chair's at ``--resolution``."""
    import numpy as np

    if args.sdf_grid is None:
        return procedural_sdf_grid(args.resolution)
    grid = np.load(args.sdf_grid)
    if grid.shape != (args.resolution,) * 3:
        raise SystemExit(f"--sdf-grid {args.sdf_grid} has shape {grid.shape}, not --resolution {args.resolution} cubed")
    return grid


def time_generation_stages(tokens: Callable[[], object], decode: Callable[[], object], sdf_grid: "np.ndarray",
                           batch: int, device: torch.device, args: argparse.Namespace) -> tuple[float, float, float]:
    """Seconds per object of a 3D generator's three stages: sampling the tokens, decoding the field (both for
    ``batch`` objects per call, on ``device``) and marching cubes of ``sdf_grid`` on the CPU."""
    from scalear.gen3d.fields import extract_mesh

    t_tokens = time_runs(tokens, device, args.min_time, args.repeats) / batch
    t_decode = time_runs(decode, device, args.min_time, args.repeats) / batch
    t_mesh = time_runs(lambda: extract_mesh(sdf_grid), torch.device("cpu"), args.min_time, args.repeats)
    return t_tokens, t_decode, t_mesh


def generation_result(preset: str, steps: str, tokens: int, tok: torch.nn.Module, gen: torch.nn.Module,
                      times: tuple[float, float, float], total_key: str) -> tuple[list[str], dict]:
    """A 3D generation table row and its numbers: ``steps`` describes the scales / levels, ``times`` the seconds
    per object of :func:`time_generation_stages`, ``total_key`` names their sum in the numbers."""
    t_tokens, t_decode, t_mesh = times
    total = t_tokens + t_decode + t_mesh
    params = [sum(p.numel() for p in m.parameters()) for m in (tok, gen)]
    row = [preset, steps, str(tokens), *map(fmt_params, params), fmt_ms(t_tokens), fmt_ms(t_decode), fmt_ms(t_mesh),
           f"{total:.3f}"]
    return row, dict(preset=preset, tokens=tokens, sec_tokens=t_tokens, sec_decode=t_decode, sec_mesh=t_mesh,
                     **{total_key: total})


def run_generation_benchmark(measure: Callable[..., tuple[list[str], dict]], args: argparse.Namespace,
                             title: str, steps: str, unit: str, recipe: str) -> list[dict]:
    """Time every preset with ``measure`` (:func:`measure_presets`, marching cubes on a procedural chair's SDF
    grid) and print the table: stages in ms per ``unit``, ``steps`` the scales / levels column, ``recipe`` the
    sampling in the caption. Returns the numbers."""
    device = setup(args)
    rows, results = measure_presets(measure, args, device, load_sdf_grid(args))
    columns = ["preset", steps, "tokens", "tokenizer\nparams", "generator\nparams", f"tokens\nms/{unit}",
               f"decoding\nms/{unit}", f"mesh\nms/{unit}", f"total\ns/{unit}"]
    caption = (f"{environment(device, args.dtype)}\nbatch {args.batch}, {recipe}; marching cubes on the CPU (skimage) of "
               f"a procedural chair's SDF grid at {args.resolution}^3 (random weights decode no shape); median of up to "
               f"{args.repeats} runs after a warm-up.")
    print_table(title, columns, rows, caption)
    return results


def generation_parser(doc: str, presets: list[str], noun: str, field: str) -> argparse.ArgumentParser:
    """The arguments of the 3D generation benchmarks: ``--presets`` (from ``presets``), ``--resolution`` (the
    ``field`` grid side), ``--batch`` (``noun`` s per call) and :func:`add_common_args`; a script adds its own,
    then parses with :func:`parse_generation_args`."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small,paper",
                   help=f"tokenizer + generator presets, comma-separated, from {presets}")
    p.add_argument("--resolution", type=int, default=64,
                   help=f"{field} grid side for decoding and marching cubes (default: 64)")
    p.add_argument("--batch", type=int, default=1, help=f"{noun}s per call (default: 1)")
    p.add_argument("--sdf-grid", type=Path, default=None,
                   help="an .npy SDF grid of --resolution^3 to time marching cubes on, instead of computing the "
                        "procedural chair's (which needs open3d)")
    add_common_args(p)
    return p


def parse_generation_args(p: argparse.ArgumentParser, argv: list[str] | None, presets: list[str]) -> argparse.Namespace:
    """Parse and check the arguments of a :func:`generation_parser` (unknown presets, grid side, batch)."""
    args = p.parse_args(argv)
    unknown = [x for x in args.presets.split(",") if x and x not in presets]
    if unknown:
        p.error(f"unknown presets {unknown}; available: {presets}")
    if args.resolution < 2 or args.batch < 1:
        p.error("--resolution must be >= 2 and --batch >= 1")
    return args


def measure_cells(measure: Callable[..., tuple[list[str], dict]], cells: list[tuple], args: argparse.Namespace,
                  device: torch.device, warm_cell: tuple, *extra: object, **warm_args: object) -> tuple[list[list[str]], list[dict]]:
    """``measure(*cell, args, device, *extra)`` for each table cell (e.g. ``(preset,)``, ``(model, preset)``), after
    one untimed run of ``warm_cell`` at batch 1 (thread pools, kernels; ``warm_args`` override more arguments of that
    run); returns the table rows and the numbers. Each cell's models are collected before the next is built."""
    warm = argparse.Namespace(**{**vars(args), "batch": 1, "min_time": 0.0, "repeats": 1, **warm_args})
    measure(*warm_cell, warm, device, *extra)
    gc.collect()
    rows, results = [], []
    for cell in cells:
        print(f"measuring {' '.join(map(str, cell))} ...", file=sys.stderr, flush=True)
        row, result = measure(*cell, args, device, *extra)
        gc.collect()
        rows.append(row)
        results.append(result)
    return rows, results


def measure_presets(measure: Callable[..., tuple[list[str], dict]], args: argparse.Namespace, device: torch.device,
                    *extra: object, **warm_args: object) -> tuple[list[list[str]], list[dict]]:
    """:func:`measure_cells` over ``args.presets`` (warm-up: ``tiny``)."""
    return measure_cells(measure, [(x,) for x in args.presets.split(",") if x], args, device, ("tiny",), *extra,
                         **warm_args)
