"""Restoration throughput: megapixels per second of ``Varformer.restore`` for each preset, with and without the
VAR prior, on one ``--size`` image.

``restore`` is a model's whole inference path: with the prior, the degraded image is resized to the tokenizer's
input, encoded, enhanced, and a greedy, KV-cached VAR pass over every scale (with token injection) gives the
``K`` prior maps that DAE/AFT fuse into the U-net; without it (``use_prior=False``, the no-prior ablation) only
the U-net runs. The prior's cost does not grow with the image (it runs at the tokenizer's size); the U-net's
does. ``restore`` takes whole images (no tiling of its own); ``--tile N`` restores in ``N x N`` tiles blended
as ``scalear restore --tile`` does, each tile running its own prior pass. Models are randomly initialised
(timing does not depend on the weights) and inputs are random images in ``[0, 1]``. ``--presets official`` times
the released network (``VarFormer2``, 908M parameters; no ablation row): resize to 256x256, its VAR loop with two
CFG branches, main encoder / decoder, resize back.

    python benchmarks/bench_restoration.py                           # tiny, small, paper at 512x512, CPU
    python benchmarks/bench_restoration.py --presets tiny --size 1080,1920 --tile 512 --threads 1
    python benchmarks/bench_restoration.py --batch 4 --device cuda --dtype bf16
    python benchmarks/bench_restoration.py --presets official --size 256,256      # the released network
"""

from __future__ import annotations

import argparse

import torch

from _common import (add_common_args, autocast, environment, fmt_ms, fmt_params, image_size, measure_cells,
                     memory_method, peak_memory, print_table, setup, time_runs)
from scalear.domains.restoration.tiling import check_tiling, restore_tiled
from scalear.domains.restoration.varformer import OFFICIAL_PRESET, VARFORMER_PRESETS, create_varformer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small,paper",
                   help=f"Varformer presets, comma-separated, from {sorted(VARFORMER_PRESETS)} and {OFFICIAL_PRESET}")
    p.add_argument("--size", type=image_size, default=(512, 512), help="input H,W (default: 512,512)")
    p.add_argument("--tile", type=int, default=None, help="restore in N x N tiles (default: whole images)")
    p.add_argument("--overlap", type=int, default=32, help="minimum tile overlap with --tile (default: 32)")
    p.add_argument("--no-ablation", action="store_true", help="skip the use_prior=False rows")
    p.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    add_common_args(p)
    args = p.parse_args(argv)
    bad = [v for v in args.presets.split(",") if v not in VARFORMER_PRESETS and v != OFFICIAL_PRESET]
    if bad:
        p.error(f"--presets: unknown {bad}; choose from {sorted(VARFORMER_PRESETS)} and {OFFICIAL_PRESET}")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    if args.tile is not None:
        try:
            check_tiling(args.tile, args.overlap, args.overlap // 4)
        except ValueError as e:
            p.error(f"--tile/--overlap: {e}")
    return args


def measure(preset: str, use_prior: bool, args: argparse.Namespace, device: torch.device) -> tuple[list[str], dict]:
    """One table row: ``restore`` time per image (s), megapixels per second and peak memory (MiB)."""
    official = preset == OFFICIAL_PRESET
    model = (create_varformer(preset) if official else create_varformer(preset, use_prior=use_prior)).to(device).eval()
    h, w = args.size
    image_B3HW = torch.rand(args.batch, 3, h, w, device=device)

    def restore() -> None:
        with torch.no_grad(), autocast(device, args.dtype):
            restore_tiled(model, image_B3HW, args.tile, args.overlap)

    with peak_memory(device) as peak:
        sec = time_runs(restore, device, args.min_time, args.repeats) / args.batch
    params = model.num_params()
    mps = h * w / 1e6 / sec
    prior = "VAR prior" if use_prior else "none (ablation)"
    tok = model.tokenizer if official else model.prior.tokenizer if use_prior else None
    scales = f"{tok.schedule.num_scales} @ {tok.input_shape[0]} px" if tok is not None else "-"
    widths = "VarFormer2 (released)" if official else "-".join(map(str, model.cfg.widths))
    tile = "whole" if args.tile is None else f"{args.tile} / {args.overlap}"
    row = [preset, prior, scales, widths, fmt_params(params), tile,
           f"{mps:,.3f}", fmt_ms(sec), f"{peak[0]:,.0f}"]
    return row, dict(preset=preset, use_prior=use_prior, params=params, sec_per_image=sec, mp_per_s=mps, mib=peak[0])


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and return its numbers."""
    args = parse_args(argv)
    device = setup(args)
    cells = [(preset, use_prior) for preset in args.presets.split(",")
             for use_prior in ((True,) if args.no_ablation or preset == OFFICIAL_PRESET else (True, False))]
    rows, results = measure_cells(measure, cells, args, device, ("tiny", True), size=(32, 32), tile=None)
    h, w = args.size
    columns = ["preset", "prior", "prior scales", "U-net\nwidths", "params", "tile /\noverlap", "MP/s", "ms/img",
               "peak MiB"]
    caption = (f"{environment(device, args.dtype)}\nbatch {args.batch} of {h}x{w} images ({h * w / 1e6:.3f} MP); "
               "restore = prior (resize to the tokenizer, encode, enhance, greedy KV-cached VAR pass) + U-net with "
               f"DAE/AFT at full size; median of up to {args.repeats} runs after a warm-up; random weights\n"
               f"peak MiB: {memory_method(device)}")
    print_table(f"Restoration throughput (Varformer.restore) at {h}x{w}", columns, rows, caption, text_columns=4)
    return results


if __name__ == "__main__":
    main()
