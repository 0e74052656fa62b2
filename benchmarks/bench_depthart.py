"""DepthART: dynamic-target training (self-refinement) vs VAR's teacher forcing, on the same data and budget.

Trains the shared RGB tokenizer once (``configs/depth/depthart_tokenizer_tiny.yaml``), then the tiny DepthART
transformer twice from the same seed (``configs/depth/depthart_tiny.yaml`` with ``training: teacher_forcing``
and ``training: dynamic``), and scores both on held-out procedural scenes with DepthART's protocol (per-image
median scaling): sampled as in the paper (top-k 900, top-p 0.90, 5 codes averaged per token) and greedy. Two
reference rows bound the table: the tokenizer's own reconstruction of the true depth (what a perfect transformer
would reach) and a per-image constant (the median-scaled constant-depth baseline).

    python benchmarks/bench_depthart.py                       # ~25 min on 2 CPU cores
    python benchmarks/bench_depthart.py --tokenizer DIR       # reuse an exported stage-1 tokenizer
    python benchmarks/bench_depthart.py --device cuda --steps 3000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from _common import environment, print_table
from scalear.datasets.procedural_rgbd import ProceduralRGBDDataset
from scalear.domains.depth.depthart import DepthARTModel, tokenizer_output_to_depth
from scalear.domains.depth.metrics import DepthEvalConfig, depth_metrics_batch
from scalear.io import from_pretrained
from scalear.quickstart import config_path, fit_with_cli

MODES = ("teacher_forcing", "dynamic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="scalear_runs/bench_depthart", help="run folder (default: %(default)s)")
    p.add_argument("--tokenizer", default=None, help="an exported stage-1 tokenizer to reuse (skips its training)")
    p.add_argument("--tokenizer-steps", type=int, default=600, help="stage-1 steps (default: %(default)s)")
    p.add_argument("--steps", type=int, default=600, help="stage-2 steps per training mode (default: %(default)s)")
    p.add_argument("--train-size", type=int, default=512, help="training scenes (default: %(default)s)")
    p.add_argument("--val-size", type=int, default=64, help="validation scenes (default: %(default)s)")
    p.add_argument("--test-size", type=int, default=64, help="held-out test scenes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of both stage-2 runs (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    for name in ("tokenizer_steps", "steps", "train_size", "val_size", "test_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _fit(config: str, steps: int, root: Path, export: Path, args: argparse.Namespace, data_prefix: str,
         extra: list[str]) -> float:
    data = [f"--data.init_args.{data_prefix}train_size", str(args.train_size),
            f"--data.init_args.{data_prefix}val_size", str(args.val_size),
            f"--data.init_args.{data_prefix}test_size", str(args.test_size)]
    accel = ["--trainer.accelerator", "gpu" if args.device.startswith("cuda") else "cpu"]
    t0 = time.perf_counter()
    fit_with_cli(config_path("depth", config), root, export,
                 ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
                  "--trainer.enable_progress_bar", "false", *accel, *data, *extra])
    return time.perf_counter() - t0


def score(pred_B1HW: torch.Tensor, gt_B1HW: torch.Tensor, valid_B1HW: torch.Tensor) -> dict[str, float]:
    cfg = DepthEvalConfig(max_depth=10.0, min_depth=1e-3, median_scaling=True)
    m, n = depth_metrics_batch(pred_B1HW.float().cpu(), gt_B1HW, cfg, valid_B1HW.bool())
    keep = n > 0
    return {k: float(v[keep].mean()) for k, v in m.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = Path(args.out)
    tok_dir, tok_seconds = args.tokenizer, 0.0
    if tok_dir is None:
        tok_seconds = _fit("depthart_tokenizer_tiny", args.tokenizer_steps, out / "tokenizer", out / "export", args,
                           "data.init_args.", [])
        tok_dir = str(out / "export" / "tokenizer")

    models, seconds = {}, {}
    for mode in MODES:
        export = out / mode / "export"
        seconds[mode] = _fit("depthart_tiny", args.steps, out / mode, export, args, "",
                             ["--model.init_args.tokenizer", tok_dir, "--model.init_args.training", mode,
                              "--seed_everything", str(args.seed)])
        models[mode] = from_pretrained(export / "depthart").to(device).eval()

    first: DepthARTModel = models[MODES[0]]
    test = ProceduralRGBDDataset("test", args.test_size, first.input_size)
    batch = next(iter(torch.utils.data.DataLoader(test, batch_size=len(test))))
    image, gt, valid = batch["image"].to(device), batch["depth"], batch["valid"]
    with torch.no_grad():
        x = first.depth_input(gt.to(device), valid.to(device))
        oracle = tokenizer_output_to_depth(first.tokenizer.indices_to_img(first.tokenizer.img_to_indices(x)))
    results = [{"model": "tokenizer reconstruction of the true depth", "inference": "-", **score(oracle, gt, valid)},
               {"model": "per-image constant (median-scaled)", "inference": "-", **score(torch.ones_like(gt), gt, valid)}]
    for mode, model in models.items():
        for inference, kw in (("sampled (5 averaged)", {}), ("greedy", {"temperature": 0.0, "num_samples": 1})):
            gen = torch.Generator(device=device).manual_seed(0)
            t0 = time.perf_counter()
            pred = model.predict_depth(image, generator=gen, **kw)
            ms = (time.perf_counter() - t0) / len(test) * 1e3
            results.append({"model": f"DepthART, {mode.replace('_', ' ')}", "inference": inference,
                            "train_s": seconds[mode], "ms_per_image": ms, **score(pred, gt, valid)})

    rows = [[r["model"], r["inference"], f"{r['abs_rel']:.3f}", f"{r['rmse']:.3f}", f"{r['d1']:.3f}",
             f"{r['train_s']:.0f}" if "train_s" in r else "-", f"{r['ms_per_image']:.1f}" if "ms_per_image" in r else "-"]
            for r in results]
    tokenizer = f"{args.tokenizer_steps} steps, {tok_seconds:.0f} s" if args.tokenizer is None else f"reused from {tok_dir}"
    caption = (f"{environment(device, 'fp32')}\n{len(test)} held-out procedural scenes at "
               f"{'x'.join(map(str, first.input_size))} px, {args.train_size} training scenes, {args.steps} steps "
               f"per mode, seed {args.seed}; tokenizer: {tokenizer}\n"
               "metrics after per-image median scaling (DepthART's protocol); d1 = accuracy, higher is better")
    print_table("DepthART: dynamic targets vs teacher forcing", ["model", "inference", "AbsRel", "RMSE (m)", "d1",
                                                                  "train s", "ms/img"], rows, caption, text_columns=2)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
