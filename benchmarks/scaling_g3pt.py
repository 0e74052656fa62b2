"""G3PT tokenizer scaling on a CPU budget: several tokenizer widths trained with the SAME budget (steps, batch,
data, seed, optimiser) on the procedural point clouds, evaluated on held-out objects, with a power law fitted
to the validation loss over the parameter count.

G3PT (Zhang, Xiong, Xu, arXiv 2409.06322) reports power-law scaling of its models with size. This script measures
the tokenizer side of that claim in miniature:

* sizes: the ``tiny`` tokenizer layout (levels 1, 4, 16, 64; one encoder and one decoder block) at widths
  ``--widths`` (default 32, 64, 128; heads = width / 16, at least 2), i.e. about 0.1M..2M parameters;
* data: :class:`~scalear.datasets.pointclouds.PointCloudDataModule` over the procedural meshes (chairs, tables,
  mugs, lamps): ``--per-class`` training objects and ``--val-per-class`` held-out objects per class, ``--points``
  input points and ``--queries`` occupancy queries (half near the surface) per object;
* training: a plain torch loop, AdamW (lr ``--lr``, weight decay 0.01), cosine LR decay to 0 over ``--steps``
  steps after a 5 % linear warm-up, :meth:`G3PTTokenizer.loss` (occupancy BCE of every level of detail + LFQ
  entropy and commitment), the same seed for the model, the batches and the point / query draws of every size;
* reported per size: parameters, training seconds, the mean training loss over the last 10 % of steps, and on
  the held-out objects (fixed points and queries) the occupancy BCE and IoU (occupied = logit > 0) of the full
  reconstruction and the IoU of every level's partial reconstruction (coarse -> fine);
* a least-squares fit of ``log val_bce = log a - b log N`` (N = parameters), printed as ``val_bce ~ a N^-b``.

Honest scope: the default budget (200 steps of batch 8 per size, about 7 minutes in all on one CPU thread) is far from
convergence and from the paper's scale; it shows what small sizes give on a fixed tiny budget, where a bigger
model may not yet win (then b comes out small or negative). The fitted exponent is not the paper's.

    python benchmarks/scaling_g3pt.py --threads 1                 # the default budget
    python benchmarks/scaling_g3pt.py --widths 32,64,128,192 --steps 1000
    python benchmarks/scaling_g3pt.py --quick                     # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from _common import environment, print_table, setup
from scalear.datasets.pointclouds.data import PointCloudDataModule
from scalear.domains.g3pt.tokenizer import create_tokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="32,64,128", help="tokenizer widths on the tiny layout, comma-separated (default: 32,64,128)")
    p.add_argument("--steps", type=int, default=200, help="training steps per size (default: 200)")
    p.add_argument("--batch", type=int, default=8, help="objects per step (default: 8)")
    p.add_argument("--lr", type=float, default=5e-3, help="peak AdamW learning rate (default: 5e-3, the tiny recipe's)")
    p.add_argument("--points", type=int, default=256, help="input points per object (default: 256, the tiny recipe's)")
    p.add_argument("--queries", type=int, default=1024, help="occupancy queries per object (default: 1024)")
    p.add_argument("--per-class", type=int, default=24, help="training objects per class (default: 24)")
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


def _batches(dataset, batch: int, steps: int, seed: int):
    """``steps`` batches of shuffled epochs, the order fixed by ``seed`` (the same for every size)."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    while True:
        order = torch.randperm(len(dataset), generator=g).tolist()
        for i in range(0, len(order), batch):
            items = [dataset[j] for j in order[i:i + batch]]
            yield {k: torch.stack([it[k] for it in items]) for k in ("points", "query", "occupancy")}
            n += 1
            if n == steps:
                return


@torch.no_grad()
def evaluate(tok, dataset, batch: int, device: torch.device) -> dict:
    """Held-out occupancy BCE (full reconstruction) and IoU per level (partial reconstructions, coarse -> fine)."""
    tok.eval()
    K = tok.quantizer.num_levels
    bce_sum, n_q = 0.0, 0
    inter, union = np.zeros(K), np.zeros(K)
    for i in range(0, len(dataset), batch):
        items = [dataset[j] for j in range(i, min(i + batch, len(dataset)))]
        pts = torch.stack([it["points"] for it in items]).to(device)
        q = torch.stack([it["query"] for it in items]).to(device)
        occ = torch.stack([it["occupancy"] for it in items]).to(device) > 0.5
        out = tok(pts)
        for k, fh in enumerate(out.fhats):
            logits = tok.occupancy_logits(fh, q)
            pred = logits > 0
            inter[k] += float((pred & occ).sum())
            union[k] += float((pred | occ).sum())
            if k == K - 1:
                bce_sum += float(torch.nn.functional.binary_cross_entropy_with_logits(logits, occ.float(), reduction="sum"))
                n_q += occ.numel()
    iou = (inter / np.maximum(union, 1)).tolist()
    return {"val_bce": bce_sum / n_q, "val_iou": iou[-1], "val_iou_levels": iou}


def train_one(width: int, args: argparse.Namespace, dm: PointCloudDataModule, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    tok = create_tokenizer("tiny", width=width, heads=_heads(width)).to(device)
    params = sum(p.numel() for p in tok.parameters())
    opt = torch.optim.AdamW(tok.parameters(), lr=args.lr, weight_decay=0.01)
    warm = max(1, round(0.05 * args.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm))))
    torch.manual_seed(args.seed)  # the same point / query draws for every size
    losses = []
    tok.train()
    t0 = time.perf_counter()
    for batch in _batches(dm.train_dataset, args.batch, args.steps, args.seed):
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, _ = tok.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sec = time.perf_counter() - t0
    tail = losses[-max(1, len(losses) // 10):]
    return {"width": width, "params": params, "sec_train": sec, "train_loss": float(np.mean(tail)),
            **evaluate(tok, dm.val_dataset, args.batch, device)}


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
    table = [[str(r["width"]), f"{r['params'] / 1e6:.3f}M",
              f"{r['sec_train']:.1f}", f"{r['train_loss']:.4f}", f"{r['val_bce']:.4f}", f"{r['val_iou']:.3f}",
              " / ".join(f"{v:.3f}" for v in r["val_iou_levels"])] for r in rows]
    columns = ["width", "params", "train\ns", "train\nloss", "val\nBCE", "val\nIoU", "val IoU per level\n(coarse -> fine)"]
    caption = (f"{environment(device, 'fp32')}\n{args.steps} steps x batch {args.batch} per size, AdamW lr {args.lr} "
               f"cosine, seed {args.seed}; procedural shapes, {args.per_class} train / {args.val_per_class} held-out per "
               f"class, {args.points} points, {args.queries} queries.\nFit val_bce ~ {a:.3g} * N^-{b:.3f}  (b = {b:.3f})")
    print_table("G3PT tokenizer scaling (same budget per size)", columns, table, caption)
    return {"rows": rows, "a": a, "b": b}


if __name__ == "__main__":
    main()
