"""3D metrics on the CPU: the KD-tree neighbour search (the default there) against the dense torch search.

Times Chamfer distance between two random clouds of N points each (one cloud pair, as the Occupancy Networks
protocol scores 100k-point surfaces) and the CD-L2 matrix of COV / MMD / 1-NNA between two sets of clouds
(:func:`scalear.gen3d.metrics.pairwise_chamfer`), both with ``backend="kdtree"`` and ``backend="torch"``, in one run,
and prints both, their ratio and the largest relative difference of the results.

    python benchmarks/bench_metrics3d.py --threads 1                      # 10k, 30k; 32 x 32 clouds of 2048
    python benchmarks/bench_metrics3d.py --points 10000,30000,100000 --threads 1
"""

from __future__ import annotations

import argparse
import sys
from unittest import mock

import torch

from _common import add_common_args, environment, print_table, setup, time_runs
from scalear.gen3d import metrics as metrics3d


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", default="10000,30000", help="cloud sizes of the Chamfer rows (default: %(default)s)")
    p.add_argument("--sets", type=int, default=32, help="clouds per set of the pairwise matrix (default: %(default)s)")
    p.add_argument("--set-points", type=int, default=2048, help="points per cloud of the matrix (default: %(default)s)")
    p.add_argument("--dense-max", type=int, default=30000,
                   help="skip the dense search above this many points (100k takes minutes; default: %(default)s)")
    add_common_args(p)
    args = p.parse_args(argv)
    try:
        args.points = [int(v) for v in args.points.split(",")]
    except ValueError:
        p.error(f"--points: expected comma-separated integers, got {args.points!r}")
    if min(args.points) < 1 or args.sets < 2 or args.set_points < 1:
        p.error("--points, --set-points must be >= 1 and --sets >= 2")
    return args


def with_backend(backend: str, fn, *args):
    """``fn(*args)`` with every neighbour search of scalear.gen3d.metrics forced to ``backend``."""
    knn = metrics3d.knn
    with mock.patch.object(metrics3d, "knn", lambda x, y, k=1, chunk_size=None, backend_=backend:
                           knn(x, y, k, chunk_size, backend_)):
        return fn(*args)


def compare(name: str, size: str, fn, args: argparse.Namespace, device: torch.device, dense: bool) -> list[str]:
    out = {b: with_backend(b, fn) for b in (("kdtree", "torch") if dense else ("kdtree",))}
    secs = {b: time_runs(lambda b=b: with_backend(b, fn), device, args.min_time, args.repeats) for b in out}
    if dense:
        diff = ((out["kdtree"] - out["torch"]).abs() / out["torch"].abs().clamp(min=1e-12)).max().item()
        return [name, size, f"{secs['kdtree']:.4f}", f"{secs['torch']:.3f}", f"{secs['torch'] / secs['kdtree']:.0f}x",
                f"{diff:.1e}"]
    return [name, size, f"{secs['kdtree']:.4f}", "-", "-", "-"]


def main(argv: list[str] | None = None) -> list[list[str]]:
    """Run the benchmark, print the table and return its rows."""
    args = parse_args(argv)
    device = setup(args)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in args.points:
        print(f"measuring Chamfer at {n} points ...", file=sys.stderr, flush=True)
        x, y = torch.rand(1, n, 3, generator=g), torch.rand(1, n, 3, generator=g)
        rows.append(compare("Chamfer (CD-L2)", f"{n:,} x {n:,}", lambda x=x, y=y: metrics3d.chamfer_distance(x, y).l2,
                            args, device, dense=n <= args.dense_max))
    print("measuring the pairwise matrix ...", file=sys.stderr, flush=True)
    a = torch.rand(args.sets, args.set_points, 3, generator=g)
    b = torch.rand(args.sets, args.set_points, 3, generator=g)
    rows.append(compare("pairwise CD-L2 (COV/MMD/1-NNA)", f"{args.sets} x {args.sets} clouds of {args.set_points:,}",
                        lambda: metrics3d.pairwise_chamfer(a, b), args, device, dense=True))
    columns = ["metric", "size", "KD-tree s", "dense torch s", "speed-up", "max rel diff"]
    caption = (f"{environment(device, 'fp32')}\nuniform random points in the unit cube; both searches exact (ties "
               f"aside); median of up to {args.repeats} runs after a warm-up")
    print_table("3D metrics on the CPU: KD-tree vs dense neighbour search", columns, rows, caption, text_columns=2)
    return rows


if __name__ == "__main__":
    main()
