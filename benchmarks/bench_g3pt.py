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

import numpy as np
import torch

from _common import (autocast, generation_parser, generation_result, parse_generation_args, run_generation_benchmark,
                     time_generation_stages)
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

    times = time_generation_stages(tokens, decode, chair, B, device, args)
    patch_nums = tok.config.patch_nums
    result = generation_result(preset, f"{len(patch_nums)}: {patch_nums[0]}..{patch_nums[-1]}", sum(patch_nums), tok, gen, times,
                               "sec_per_shape")
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and return its numbers."""
    args = parse_args(argv)
    return run_generation_benchmark(measure, args, "G3PT generation time per shape", "levels", "shape",
                                    f"class-conditioned, cfg 3, top-p 0.9 (KV cache); occupancy on a {args.resolution}^3 grid")


if __name__ == "__main__":
    main()
