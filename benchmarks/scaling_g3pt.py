"""G3PT tokenizer scaling on a CPU budget: several tokenizer widths trained with the SAME budget (steps, batch,
data, seed, optimiser) on the procedural point clouds, evaluated level by level on held-out objects, with a power
law fitted to the validation loss over the parameter count.

G3PT (Zhang, Xiong, Xu, arXiv 2409.06322) reports power-law scaling of its models with size. This script measures
the tokenizer side of that claim in miniature, and for every size how the reconstruction improves as levels of
detail are added:

* sizes: the ``tiny`` tokenizer layout (levels 1, 4, 16, 64; one encoder and one decoder block) at widths
  ``--widths`` (default 32, 64, 128; heads = width / 16, at least 2), i.e. about 0.1M..2M parameters;
* data: :class:`~scalear.datasets.pointclouds.PointCloudDataModule` over the procedural meshes (chairs, tables,
  mugs, lamps): ``--per-class`` training objects and ``--val-per-class`` held-out objects per class, ``--points``
  input points and ``--queries`` occupancy queries (half near the surface) per object;
* training: the tiny tokenizer recipe (:data:`~scalear.domains.g3pt.tokenizer.G3PT_TOKENIZER_TRAINING`: AdamW
  betas (0.9, 0.95), 20 warm-up steps, cosine decay to 0, gradient clipping 2.0) for ``--steps`` steps of
  ``--batch`` objects, :meth:`G3PTTokenizer.loss`, the same seed for the model, the batches and the point / query
  draws of every size; the peak lr is ``--lr`` up to width 64 and ``--lr x 64 / width`` above (:func:`peak_lr`;
  at 5e-3 width 128 did not train: held-out BCE 0.43 after 900 steps, vs 0.31 for width 64);
* reported per size: parameters, training seconds, the mean training BCE over the last 10 % of steps, and on the
  held-out objects (fixed points and queries) the occupancy BCE and IoU (occupied = logit > 0) of the
  reconstruction from levels ``1..k`` for every ``k``
  (:func:`~scalear.domains.g3pt.evaluate.reconstruction_by_level`);
* a least-squares fit of ``log val_bce = log a - b log N`` (N = parameters, val_bce from all levels), printed as
  ``val_bce ~ a N^-b``.

Honest scope: CPU budgets are far from convergence and from the paper's scale; the table shows what small sizes
give on a fixed budget, where a bigger model may not yet win (then b comes out small or negative). The fitted
exponent is not the paper's.

    python benchmarks/scaling_g3pt.py --threads 1                 # the default budget (measured: benchmarks/README.md)
    python benchmarks/scaling_g3pt.py --widths 32,64,128,192 --steps 3000
    python benchmarks/scaling_g3pt.py --quick                     # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from _common import environment, print_table, setup
from scalear.datasets.pointclouds.data import PointCloudDataModule
from scalear.domains.g3pt.evaluate import reconstruction_by_level
from scalear.domains.g3pt.tokenizer import G3PT_TOKENIZER_TRAINING, create_tokenizer
from scalear.training.base import cosine_with_warmup, param_groups

_RECIPE = G3PT_TOKENIZER_TRAINING["tiny"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="32,64,128", help="tokenizer widths on the tiny layout, comma-separated (default: 32,64,128)")
    p.add_argument("--steps", type=int, default=_RECIPE["steps"], help="training steps per size (default: the tiny recipe's, 900)")
    p.add_argument("--batch", type=int, default=_RECIPE["batch_size"], help="objects per step (default: the tiny recipe's, 16)")
    p.add_argument("--lr", type=float, default=_RECIPE["lr"], help="peak AdamW learning rate up to width 64 (default: the tiny recipe's, 5e-3)")
    p.add_argument("--points", type=int, default=_RECIPE["n_points"], help="input points per object (default: 256)")
    p.add_argument("--queries", type=int, default=_RECIPE["n_query"], help="occupancy queries per object (default: 512)")
    p.add_argument("--per-class", type=int, default=150, help="training objects per class (default: 150)")
    p.add_argument("--val-per-class", type=int, default=4, help="held-out objects per class (default: 4)")
    p.add_argument("--cache-dir", default="scalear_cache/pointclouds", help="procedural meshes and point-cloud cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: widths 16,32,64, 3 steps, 2+1 objects per class")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.quick:
        args.widths, args.steps, args.per_class, args.val_per_class = "16,32,64", 3, 2, 1
        args.batch, args.points, args.queries = 4, 128, 256
    try:
        args.width_list = [int(w) for w in args.widths.split(",") if w]
    except ValueError:
        p.error(f"--widths must be integers, got {args.widths!r}")
    if len(args.width_list) < 2 or any(w < 4 or w % 4 for w in args.width_list):
        p.error("--widths: at least two widths, each a multiple of 4")
    for name in ("steps", "batch", "points", "queries", "per_class", "val_per_class"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _heads(width: int) -> int:
    """Attention heads of a width: width / 16 (at least 2; 4 when that does not divide the width)."""
    h = max(2, width // 16)
    return h if width % h == 0 else 4


def peak_lr(base: float, width: int) -> float:
    """The peak learning rate of a width: ``base`` up to width 64 (the recipe's), ``base x 64 / width`` above."""
    return base * min(1.0, 64 / width)


def _batches(dataset, batch: int, steps: int, seed: int):
    """``steps`` full batches of shuffled epochs, the order fixed by ``seed`` (the same for every size)."""
    batch = min(batch, len(dataset))
    g = torch.Generator().manual_seed(seed)
    n = 0
    while True:
        order = torch.randperm(len(dataset), generator=g).tolist()
        for i in range(0, len(order) - batch + 1, batch):
            items = [dataset[j] for j in order[i:i + batch]]
            yield {k: torch.stack([it[k] for it in items]) for k in ("points", "query", "occupancy")}
            n += 1
            if n == steps:
                return


def train_one(width: int, args: argparse.Namespace, dm: PointCloudDataModule, device: torch.device) -> dict:
    """Train one width with the tiny recipe for ``args.steps`` steps; held-out BCE / IoU per level of detail."""
    recipe = _RECIPE
    torch.manual_seed(args.seed)
    tok = create_tokenizer("tiny", width=width, heads=_heads(width)).to(device)
    params = sum(p.numel() for p in tok.parameters())
    opt = torch.optim.AdamW(param_groups(tok, recipe["weight_decay"]), lr=peak_lr(args.lr, width), betas=recipe["betas"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_with_warmup(s, recipe["warmup_steps"], args.steps, recipe["min_lr_ratio"]))
    torch.manual_seed(args.seed)  # the same point / query draws for every size
    losses = []
    tok.train()
    t0 = time.perf_counter()
    for batch in tqdm(_batches(dm.train_dataset, args.batch, args.steps, args.seed), total=args.steps,
                      desc=f"width {width}", leave=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, logs = tok.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), recipe["grad_clip"])
        opt.step()
        sched.step()
        losses.append(logs["bce"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sec = time.perf_counter() - t0
    tail = losses[-max(1, len(losses) // 10):]
    val = [{k: v.to(device) for k, v in b.items() if torch.is_tensor(v)}
           for b in DataLoader(dm.val_dataset, batch_size=args.batch)]
    levels = reconstruction_by_level(tok, val, resolution=None)
    bce = [m["bce"] for m in levels.values()]
    iou = [m["iou"] for m in levels.values()]
    return {"width": width, "params": params, "lr": peak_lr(args.lr, width), "sec_train": sec, "train_bce": float(np.mean(tail)),
            "val_bce": bce[-1], "val_iou": iou[-1], "val_bce_levels": bce, "val_iou_levels": iou}


def fit_power_law(n: list[float], y: list[float]) -> tuple[float, float]:
    """Least squares in log-log: ``y ~ a * n^-b``; returns (a, b)."""
    slope, intercept = np.polyfit(np.log(n), np.log(y), 1)
    return float(math.exp(intercept)), float(-slope)


def main(argv: list[str] | None = None) -> dict:
    """Train every size, print the table and return ``{"rows": [...], "a": a, "b": b}``."""
    args = parse_args(argv)
    device = setup(args)
    dm = PointCloudDataModule(cache_dir=args.cache_dir, per_class=args.per_class, val_per_class=args.val_per_class,
                              n_points=args.points, n_query=args.queries, batch_size=args.batch, seed=args.seed)
    dm.setup()
    rows = []
    for w in args.width_list:
        print(f"training width {w} for {args.steps} steps ...", file=sys.stderr, flush=True)
        rows.append(train_one(w, args, dm, device))
    a, b = fit_power_law([r["params"] for r in rows], [r["val_bce"] for r in rows])
    levels = lambda v: " / ".join(f"{x:.3f}" for x in v)  # noqa: E731
    table = [[str(r["width"]), f"{r['params'] / 1e6:.3f}M", f"{r['lr']:.2g}", f"{r['sec_train']:.1f}",
              f"{r['train_bce']:.4f}", levels(r["val_bce_levels"]), levels(r["val_iou_levels"])] for r in rows]
    columns = ["width", "params", "peak\nlr", "train\ns", "train\nBCE", "val BCE from levels\n1 / 1-2 / ... / all",
               "val IoU from levels\n1 / 1-2 / ... / all"]
    caption = (f"{environment(device, 'fp32')}\n{args.steps} steps x batch {args.batch} per size, tiny recipe (AdamW "
               f"peak lr {args.lr} x min(1, 64 / width), cosine), seed {args.seed}; procedural shapes, "
               f"{len(dm.train_dataset)} train / {len(dm.val_dataset)} held-out objects, {args.points} points, "
               f"{args.queries} queries.\nFit val_bce (all levels) ~ {a:.3g} * N^-{b:.3f}  (b = {b:.3f})")
    print_table("G3PT tokenizer scaling (same budget per size)", columns, table, caption)
    return {"rows": rows, "a": a, "b": b}


if __name__ == "__main__":
    main()
