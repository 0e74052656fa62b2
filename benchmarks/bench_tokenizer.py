"""Tokenizer time and peak memory: tokenization (image -> multi-scale indices) and decoding (indices -> image).

Runs :meth:`VQVAE.img_to_indices` and :meth:`VQVAE.indices_to_img` of the tokenizer presets on random images in
``[-1, 1]``, with randomly initialised weights (timing does not depend on them).

    python benchmarks/bench_tokenizer.py                                  # tiny, small, var-f16; batch 1, CPU
    python benchmarks/bench_tokenizer.py --presets var-f16 --batch 16 --device cuda --dtype bf16
    python benchmarks/bench_tokenizer.py --presets var-f16 --compile      # torch.compile'd encoder and decoder
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import (add_common_args, autocast, environment, fmt_ms, fmt_params, measure_presets, memory_method,
                     peak_memory, print_table, setup, time_runs)
from scalear.vqvae import VQVAE_PRESETS, create_vqvae


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small,var-f16", help=f"comma-separated, from {sorted(VQVAE_PRESETS)}")
    p.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder and decoder; the compile time is a column of its own")
    add_common_args(p)
    args = p.parse_args(argv)
    bad = [v for v in args.presets.split(",") if v not in VQVAE_PRESETS]
    if bad:
        p.error(f"--presets: unknown {bad}; choose from {sorted(VQVAE_PRESETS)}")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    return args


def measure(preset: str, args: argparse.Namespace, device: torch.device) -> tuple[list[str], dict]:
    """One table row: encode and decode time per image (s) and their peak memory (MiB)."""
    vqvae = create_vqvae(preset).to(device).eval()
    if args.compile:
        vqvae.encoder, vqvae.decoder = torch.compile(vqvae.encoder), torch.compile(vqvae.decoder)
    cfg = vqvae.config
    x_BCS = torch.rand(args.batch, cfg.in_channels, *vqvae.input_shape, device=device) * 2 - 1
    t = time.perf_counter()
    with autocast(device, args.dtype):
        idx_Bl = vqvae.img_to_indices(x_BCS)
        if args.compile:
            vqvae.indices_to_img(idx_Bl)
    compile_s = time.perf_counter() - t  # with --compile, the first calls compile

    def encode() -> None:
        with autocast(device, args.dtype):
            vqvae.img_to_indices(x_BCS)

    def decode() -> None:
        with autocast(device, args.dtype):
            vqvae.indices_to_img(idx_Bl)

    secs, mib = {}, {}
    for name, fn in (("encode", encode), ("decode", decode)):
        with peak_memory(device) as peak:
            secs[name] = time_runs(fn, device, args.min_time, args.repeats) / args.batch
        mib[name] = peak[0]
    shape = "x".join(map(str, (cfg.in_channels, *vqvae.input_shape)))
    latent = "x".join(map(str, (cfg.z_channels, *vqvae.schedule.latent_shape)))
    row = [preset, shape, latent, fmt_params(vqvae.num_params()), str(vqvae.schedule.total_tokens),
           fmt_ms(secs["encode"]), fmt_ms(secs["decode"]), f"{mib['encode']:,.0f}", f"{mib['decode']:,.0f}"]
    if args.compile:
        row.append(f"{compile_s:,.1f}")
    return row, dict(preset=preset, sec_encode=secs["encode"], sec_decode=secs["decode"],
                     mib_encode=mib["encode"], mib_decode=mib["decode"],
                     sec_compile=compile_s if args.compile else None)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and return its numbers."""
    args = parse_args(argv)
    device = setup(args)
    rows, results = measure_presets(measure, args, device, compile=False)  # each preset compiles in its own row
    columns = ["preset", "input", "latent", "params", "tokens", "encode\nms/img", "decode\nms/img",
               "encode\npeak MiB", "decode\npeak MiB"] + (["compile s"] if args.compile else [])
    caption = (f"{environment(device, args.dtype)}{' | torch.compile' if args.compile else ''}\n"
               f"batch {args.batch}; encode = img_to_indices, decode = indices_to_img; median of up to {args.repeats} "
               "runs after a warm-up\n"
               f"peak MiB: {memory_method(device)}")
    print_table("Tokenizer: image -> indices -> image", columns, rows, caption, text_columns=3)
    return results


if __name__ == "__main__":
    main()
