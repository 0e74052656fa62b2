"""Depth inference time and peak memory per image: :meth:`DARModel.predict_depth` at NYU's 480x640 by default.

``predict_depth`` is the whole inference path of DAR (Wang et al., CVPR 2025): resizing the input to the
preset's square ``image_size``, the image encoder, all ``K`` steps of resolution and granularity
autoregression (KV-cached transformer, MTBin candidates, ConvGRU bin injection) and the upsampling of the
finest depth map back to the input size. Models are randomly initialised (timing does not depend on the
weights) and inputs are random images in ``[0, 1]``.

    python benchmarks/bench_depth.py           # tiny, small, base at 480x640, batch 1, CPU: ~25 s on one thread
    python benchmarks/bench_depth.py --presets tiny --size 375,1242 --threads 1     # a KITTI-sized input
    python benchmarks/bench_depth.py --batch 8 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import gc
import sys

import torch

from _common import (add_common_args, autocast, environment, fmt_ms, fmt_params, memory_method, peak_memory,
                     print_table, setup, time_runs)
from scalear.domains.depth.dar import DAR_PRESETS, create_dar


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (two integers), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"H and W must be positive, got {text!r}")
    return h, w


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small,base", help=f"comma-separated, from {sorted(DAR_PRESETS)}")
    p.add_argument("--size", type=_size, default=(480, 640),
                   help="input H,W, before the model's own resize (default: 480,640, NYU's)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    add_common_args(p)
    args = p.parse_args(argv)
    bad = [v for v in args.presets.split(",") if v not in DAR_PRESETS]
    if bad:
        p.error(f"--presets: unknown {bad}; choose from {sorted(DAR_PRESETS)}")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    return args


def measure(preset: str, args: argparse.Namespace, device: torch.device) -> tuple[list[str], dict]:
    """One table row: ``predict_depth`` time per image (s) and its peak memory (MiB)."""
    model = create_dar(preset).to(device).eval()
    cfg = model.cfg
    image_B3HW = torch.rand(args.batch, 3, *args.size, device=device)

    def predict() -> None:
        with autocast(device, args.dtype):
            model.predict_depth(image_B3HW)

    with peak_memory(device) as peak:
        sec = time_runs(predict, device, args.min_time, args.repeats) / args.batch
    s, params = cfg.schedule, model.num_params()
    scales = f"{s.num_scales}: {cfg.patch_nums[0]}..{cfg.patch_nums[-1]}"
    tokens = f"{cfg.prefix_grid**2} + {s.total_tokens}"
    row = [preset, f"{cfg.image_size}x{cfg.image_size}", scales, fmt_params(params), tokens, str(cfg.num_bins),
           fmt_ms(sec), f"{peak[0]:,.0f}"]
    del model, image_B3HW
    gc.collect()
    return row, dict(preset=preset, params=params, sec_per_image=sec, mib=peak[0])


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and return its numbers."""
    args = parse_args(argv)
    device = setup(args)
    warm = argparse.Namespace(**{**vars(args), "batch": 1, "min_time": 0.0, "repeats": 1})
    measure("tiny", warm, device)  # one-off runtime set-up (thread pools, kernels) outside the table
    rows, results = [], []
    for preset in args.presets.split(","):
        print(f"measuring {preset} ...", file=sys.stderr, flush=True)
        row, result = measure(preset, args, device)
        rows.append(row)
        results.append(result)
    h, w = args.size
    columns = ["preset", "model\ninput", "scales", "params", "tokens\n(prefix + maps)", "bins\n/ step", "ms/img",
               "peak MiB"]
    caption = (f"{environment(device, args.dtype)}\nbatch {args.batch} of {h}x{w} images; predict_depth = resize in, "
               f"encoder, all scales (KV-cached), upsample out; median of up to {args.repeats} runs after a warm-up\n"
               f"peak MiB: {memory_method(device)}")
    print_table(f"Depth inference (DAR predict_depth) at {h}x{w}", columns, rows, caption, text_columns=3)
    return results


if __name__ == "__main__":
    main()
