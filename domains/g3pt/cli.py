"""``scalear g3pt``: generate 3D shapes as point clouds and meshes, score a tokenizer per level of detail, train.

Exit codes: 0 success; 1 ``generate`` wrote some shapes but others decoded to an empty field (named on stderr);
2 usage errors (a bad model folder, an unknown class, an unreadable condition).
"""

from __future__ import annotations

import argparse
from typing import Sequence

from scalear.cli_args import int_range
from scalear.gen3d.cli import domain_parser, run_eval, run_generate

DESCRIPTION = """\
G3PT: 3D shapes generated level of detail by level of detail over unordered point tokens.

  generate  N shapes per class (or per condition image) as a point cloud (PLY), a mesh (OBJ / PLY / GLB / STL)
            and a preview PNG each
            e.g. scalear g3pt generate --model runs/g3pt/generator/export --class chair,mug --n 4 --out shapes
  eval      tokenizer reconstruction per number of levels (occupancy BCE / IoU, Chamfer L1 / L2) on held-out
            objects (default: the procedural set), as a table and JSON
            e.g. scalear g3pt eval --tokenizer runs/g3pt/tokenizer/export/tokenizer
  fit       train through LightningCLI: scalear g3pt fit --config configs/g3pt/tokenizer_tiny.yaml
            (then configs/g3pt/generator_tiny.yaml or generator_image_tiny.yaml)
Image conditions (image-conditional generators) are mesh files or condition PNGs of `scalear sar3d render`.
"""


def build_parser() -> argparse.ArgumentParser:
    p, _, g, e = domain_parser("scalear g3pt", DESCRIPTION, "{generate,eval,fit}", "shapes",
                               "generate shapes as point clouds and meshes", {"guidance": "the model's, 3", "top_k":
                                                                              "the model's, 0 = off", "top_p": "the model's, 0.9"},
                               "G3PT tokenizer", "scalear_cache/pointclouds",
                               "tokenizer reconstruction per number of levels of detail")
    g.add_argument("--points", type=int_range(1, 10**7), default=2048, help="points per point cloud (default: %(default)s)")
    e.add_argument("--points", type=int_range(1, 10**7), default=256,
                   help="input points per object (default: %(default)s, as the tiny recipe trains)")
    e.add_argument("--queries", type=int_range(1, 10**7), default=2048, help="occupancy queries per object (default: %(default)s)")
    return p


def _generate(a: argparse.Namespace) -> int:
    from scalear.domains.g3pt.generate import generate_to_folder, load_generator

    return run_generate("scalear g3pt generate", "shape", a, load_generator, generate_to_folder, points=a.points)


def _eval(a: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from scalear.datasets.pointclouds.data import PointCloudDataModule
    from scalear.domains.g3pt.evaluate import format_reconstruction_table, reconstruction_by_level
    from scalear.domains.g3pt.tokenizer import G3PTTokenizer

    def data(tok: G3PTTokenizer) -> PointCloudDataModule:
        return PointCloudDataModule(root=a.root, cache_dir=a.cache_dir, val_per_class=a.val_per_class,
                                    n_points=a.points, n_query=a.queries, meshes_only=True)

    def evaluate(tok: G3PTTokenizer, val) -> dict:
        device = next(tok.parameters()).device
        batches = ({k: v.to(device) if hasattr(v, "to") else v for k, v in b.items()}
                   for b in DataLoader(val, batch_size=8))
        return reconstruction_by_level(tok, batches, a.resolution)

    return run_eval("scalear g3pt eval", a, G3PTTokenizer, "G3PT tokenizer", data, evaluate, format_reconstruction_table)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scalear g3pt`` (registered in the ``scalear.domains`` entry-point group)."""
    from scalear.cli import run_domain_verbs

    return run_domain_verbs(argv, build_parser, {"generate": _generate, "eval": _eval})


if __name__ == "__main__":
    raise SystemExit(main())
