"""Seconds per generated 3D object for each SAR3D preset, split into its three stages, for comparison with the
paper's 0.82 s per object on an A6000 (Chen et al., CVPR 2025, abstract).

* tokens: KV-cached next-scale sampling of all triplane scales with classifier-free guidance (the condition
  and the null condition in one doubled batch), top-k 10 / top-p 0.5, including the image encoder for
  image-conditioned generators (SAR3D's single-image-to-3D; the paper uses DINOv2-large, here a small CNN);
* decoding: indices -> triplane latent -> triplane features -> the SDF at every voxel centre of a
  ``--resolution``^3 grid;
* mesh: marching cubes of that grid. Generators and tokenizers are randomly initialised (the time does not
  depend on the weights), but a random field's level set is not an object's, so marching cubes is timed on the
  SDF grid of a procedural chair at the same resolution.

    python benchmarks/bench_sar3d.py                      # tiny, small, paper at 64^3, image-conditioned
    python benchmarks/bench_sar3d.py --presets tiny --condition class --batch 4 --threads 1
    python benchmarks/bench_sar3d.py --device cuda --dtype bf16 --resolution 128
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import (autocast, generation_parser, generation_result, parse_generation_args, run_generation_benchmark,
                     time_generation_stages)
from scalear.domains.sar3d.generator import GENERATOR_PRESETS, create_generator, indices_to_sdf_grids
from scalear.domains.sar3d.tokenizer import TRIPLANE_PRESETS, create_tokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    presets = sorted(set(GENERATOR_PRESETS) & set(TRIPLANE_PRESETS))
    p = generation_parser(__doc__, presets, "object", "SDF")
    p.add_argument("--condition", choices=("image", "class"), default="image", help="generator condition (default: image)")
    return parse_generation_args(p, argv, presets)


def measure(preset: str, args: argparse.Namespace, device: torch.device, chair: np.ndarray) -> tuple[list[str], dict]:
    """One table row: seconds per object for tokens, decoding and mesh extraction."""
    tok = create_tokenizer(preset).to(device).eval()
    gen = create_generator(preset, tokenizer=tok, condition=args.condition, num_classes=4).to(device).eval()
    B = args.batch
    if args.condition == "image":
        cond = {"images": torch.rand(B, gen.cfg.image_channels, gen.cfg.image_size, gen.cfg.image_size, device=device)}
    else:
        cond = {"labels": torch.arange(B, device=device) % 4}
    indices: list = []

    def tokens() -> None:
        with autocast(device, args.dtype):
            indices[:] = gen.generate(tok, seed=0, **cond)

    def decode() -> None:
        with autocast(device, args.dtype):
            indices_to_sdf_grids(tok, indices, args.resolution)

    times = time_generation_stages(tokens, decode, chair, B, device, args)
    s = tok.schedule
    result = generation_result(preset, f"{s.num_scales}: {s.shapes[0][0]}..{s.shapes[-1][0]}", s.total_tokens, tok,
                               gen, times, "sec_per_object")
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and return its numbers."""
    args = parse_args(argv)
    return run_generation_benchmark(measure, args, "SAR3D generation time per object", "scales", "obj",
                                    f"{args.condition}-conditioned, cfg 4, top-k 10, top-p 0.5; SDF on a "
                                    f"{args.resolution}^3 grid. Paper: 0.82 s per object on an A6000")


if __name__ == "__main__":
    main()
