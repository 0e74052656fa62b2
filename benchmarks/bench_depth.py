"""Depth inference time and peak memory per image: ``predict_depth`` of every DAR and DepthART preset, at NYU's
480x640 by default.

``predict_depth`` is a model's whole inference path. DAR (Wang et al., CVPR 2025): resizing the input to the
preset's square ``image_size``, the image encoder, all ``K`` steps of resolution and granularity
autoregression (KV-cached transformer, MTBin candidates, ConvGRU bin injection) and the upsampling of the
finest depth map back to the input size. DepthART (Gabdullin et al.): resizing, tokenizing the image into its
multi-scale prefix, KV-cached sampling of every depth scale (top-k/top-p, 5 codes averaged per token, the
paper's setting) and decoding. Models are randomly initialised (timing does not depend on the weights) and
inputs are random images in ``[0, 1]``.

    python benchmarks/bench_depth.py           # DAR tiny, small, base + DepthART tiny, small, paper at 480x640
    python benchmarks/bench_depth.py --presets tiny --size 375,1242 --threads 1     # a KITTI-sized input
    python benchmarks/bench_depth.py --batch 8 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse

import torch

from _common import (add_common_args, autocast, environment, fmt_ms, fmt_params, image_size, measure_cells,
                     memory_method, peak_memory, print_table, setup, time_runs)
from scalear.domains.depth.dar import DAR_PRESETS, create_dar
from scalear.domains.depth.depthart import DEPTHART_PRESETS, create_depthart


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small,base", help=f"DAR presets, comma-separated, from {sorted(DAR_PRESETS)}")
    p.add_argument("--depthart-presets", default="tiny,small,paper",
                   help=f"DepthART presets, comma-separated, from {sorted(DEPTHART_PRESETS)} ('' for none)")
    p.add_argument("--size", type=image_size, default=(480, 640),
                   help="input H,W, before the model's own resize (default: 480,640, NYU's)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    add_common_args(p)
    args = p.parse_args(argv)
    for flag, text, known in (("--presets", args.presets, DAR_PRESETS),
                              ("--depthart-presets", args.depthart_presets, DEPTHART_PRESETS)):
        bad = [v for v in text.split(",") if v and v not in known]
        if bad:
            p.error(f"{flag}: unknown {bad}; choose from {sorted(known)}")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    return args


def _dar(preset: str, device: torch.device) -> tuple[torch.nn.Module, list[str]]:
    model = create_dar(preset).to(device).eval()
    cfg, s = model.cfg, model.cfg.schedule
    return model, [f"{cfg.image_size}x{cfg.image_size}", f"{s.num_scales}: {cfg.patch_nums[0]}..{cfg.patch_nums[-1]}",
                   fmt_params(model.num_params()), f"{cfg.prefix_grid**2} + {s.total_tokens}", f"{cfg.num_bins} bins"]


def _depthart(preset: str, device: torch.device) -> tuple[torch.nn.Module, list[str]]:
    model = create_depthart(preset).to(device).eval()
    s, (h, w) = model.schedule, model.input_size
    sides = [shape[0] for shape in s.shapes]
    return model, [f"{h}x{w}", f"{s.num_scales}: {sides[0]}..{sides[-1]}", fmt_params(model.num_params()),
                   f"{s.total_tokens} + {s.total_tokens}", f"{model.cfg.num_samples} samples"]


MODELS = {"DAR": _dar, "DepthART": _depthart}


def measure(model_name: str, preset: str, args: argparse.Namespace, device: torch.device) -> tuple[list[str], dict]:
    """One table row: ``predict_depth`` time per image (s) and its peak memory (MiB)."""
    model, info = MODELS[model_name](preset, device)
    image_B3HW = torch.rand(args.batch, 3, *args.size, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    kwargs = {"generator": gen} if model_name == "DepthART" else {}

    def predict() -> None:
        with autocast(device, args.dtype):
            model.predict_depth(image_B3HW, **kwargs)

    with peak_memory(device) as peak:
        sec = time_runs(predict, device, args.min_time, args.repeats) / args.batch
    params = sum(p.numel() for p in model.parameters())
    row = [model_name, preset, *info, fmt_ms(sec), f"{peak[0]:,.0f}"]
    return row, dict(model=model_name, preset=preset, params=params, sec_per_image=sec, mib=peak[0])


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and return its numbers."""
    args = parse_args(argv)
    device = setup(args)
    todo = [("DAR", p) for p in args.presets.split(",") if p] + [("DepthART", p) for p in args.depthart_presets.split(",") if p]
    rows, results = measure_cells(measure, todo, args, device, ("DAR", "tiny"))
    h, w = args.size
    columns = ["model", "preset", "model\ninput", "scales", "params", "tokens\n(prefix + maps)", "per step",
               "ms/img", "peak MiB"]
    caption = (f"{environment(device, args.dtype)}\nbatch {args.batch} of {h}x{w} images; predict_depth = resize in, "
               f"encoder / image tokens, all scales (KV-cached), decode and upsample out; median of up to {args.repeats} "
               "runs after a warm-up\n"
               f"peak MiB: {memory_method(device)}")
    print_table(f"Depth inference (predict_depth) at {h}x{w}", columns, rows, caption, text_columns=4)
    return results


if __name__ == "__main__":
    main()
