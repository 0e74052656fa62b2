"""Seconds per generated shape for each G3PT preset (tokenizer + Cross-scale Querying Transformer), split into
its three stages.

* tokens: KV-cached next-level sampling of all levels of detail with classifier-free guidance (the condition
  and the null condition in one doubled batch) at the generator's defaults (cfg 3, top-p 0.9), class-conditioned;
* decoding: indices -> ``f_hat`` tokens (the learned up-sampling queries of every level) -> occupancy logits at
  every voxel centre of a ``--resolution``^3 grid (:meth:`G3PTTokenizer.fhat_to_grid`);
* mesh: marching cubes of a grid of that size. Generators and tokenizers are randomly initialised (the time of
  the first two stages does not depend on the weights), but a random occupancy field's level set is not a
  shape's (it is often empty or noise), so, as in bench_sar3d.py, marching cubes is timed on the SDF grid of a
  procedural chair at the same resolution, not on the decoded grid.

    python benchmarks/bench_g3pt.py                        # tiny, small, paper at 64^3
    python benchmarks/bench_g3pt.py --presets tiny --batch 4 --threads 1
    python benchmarks/bench_g3pt.py --device cuda --dtype bf16 --resolution 128
"""

from __future__ import annotations

import argparse
import gc

import numpy as np
import torch

from _common import (autocast, environment, fmt_ms, fmt_params, generation_parser, measure_presets,
                     parse_generation_args, print_table, procedural_sdf_grid, setup, time_generation_stages)
from scalear.domains.g3pt.generator import G3PT_GENERATOR_PRESETS, create_generator
from scalear.domains.g3pt.tokenizer import G3PT_TOKENIZER_PRESETS, create_tokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    presets = sorted(set(G3PT_GENERATOR_PRESETS) & set(G3PT_TOKENIZER_PRESETS))
    return parse_generation_args(generation_parser(__doc__, presets, "shape", "occupancy"), argv, presets)


def measure(preset: str, args: argparse.Namespace, device: torch.device, chair: np.ndarray) -> tuple[list[str], dict]:
    """One table row: seconds per shape for tokens, decoding and mesh extraction."""
    tok = create_tokenizer(preset).to(device).eval()
    gen = create_generator(preset, tokenizer=tok, condition="class", num_classes=4).to(device).eval()
    B = args.batch
    labels = torch.arange(B, device=device) % 4
    indices: list = []

    def tokens() -> None:
        with autocast(device, args.dtype):
            indices[:] = gen.generate(tok, labels, seed=0)

    def decode() -> None:
        with autocast(device, args.dtype):
            tok.fhat_to_grid(tok.indices_to_fhat(indices), args.resolution)

    t_tokens, t_decode, t_mesh = time_generation_stages(tokens, decode, chair, B, device, args)
    total = t_tokens + t_decode + t_mesh
    sizes = tok.config.sizes
    n_tok = sum(sizes)
    tok_params = sum(p.numel() for p in tok.parameters())
    gen_params = sum(p.numel() for p in gen.parameters())
    row = [preset, f"{len(sizes)}: {sizes[0]}..{sizes[-1]}", str(n_tok), fmt_params(tok_params), fmt_params(gen_params),
           fmt_ms(t_tokens), fmt_ms(t_decode), fmt_ms(t_mesh), f"{total:.3f}"]
    result = dict(preset=preset, tokens=n_tok, levels=len(sizes), sec_tokens=t_tokens, sec_decode=t_decode,
                  sec_mesh=t_mesh, sec_per_shape=total)
    del tok, gen, indices
    gc.collect()
    return row, result


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and return its numbers."""
    args = parse_args(argv)
    device = setup(args)
    rows, results = measure_presets(measure, args, device, procedural_sdf_grid(args.resolution))
    columns = ["preset", "levels", "tokens", "tokenizer\nparams", "generator\nparams", "tokens\nms/shape",
               "decoding\nms/shape", "mesh\nms/shape", "total\ns/shape"]
    caption = (f"{environment(device, args.dtype)}\nbatch {args.batch}, class-conditioned, cfg 3, top-p 0.9 (KV cache); "
               f"occupancy on a {args.resolution}^3 grid; marching cubes on the CPU (skimage) of a procedural chair's "
               f"SDF grid (random weights decode no shape); median of up to {args.repeats} runs after a warm-up.")
    print_table("G3PT generation time per shape", columns, rows, caption)
    return results


if __name__ == "__main__":
    main()
