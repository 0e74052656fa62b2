"""``scalear sar3d``: generate 3D objects as meshes, render image conditions, score a tokenizer, train.

Exit codes: 0 success; 1 ``generate`` wrote some objects but others decoded to an empty field (named on stderr);
2 usage errors (a bad model folder, an unknown class, an unreadable condition).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from scalear.cli_args import int_range, output_dir
from scalear.gen3d.cli import domain_parser, run_eval, run_generate

DESCRIPTION = """\
SAR3D: 3D objects generated coarse to fine over a multi-scale triplane VQ-VAE.

  generate  N objects per class (or per condition image) as OBJ / PLY / GLB / STL, with a shaded preview PNG each
            e.g. scalear sar3d generate --model runs/sar3d/generator/export --class chair,mug --n 4 --out objects
  render    the depth + normal condition image (RGBA PNG) and a shaded preview of mesh files
            e.g. scalear sar3d render --input my_meshes/ --out conditions
  eval      tokenizer reconstruction per number of scales (Chamfer L1/L2, F-score, normal consistency, IoU) on
            held-out objects (default: the procedural set), as a table and JSON
            e.g. scalear sar3d eval --tokenizer runs/sar3d/tokenizer/export/tokenizer
  fit       train through LightningCLI: scalear sar3d fit --config configs/sar3d/tokenizer_tiny.yaml
            (then configs/sar3d/generator_tiny.yaml or generator_image_tiny.yaml)
"""


def build_parser() -> argparse.ArgumentParser:
    p, sub, _, _ = domain_parser("scalear sar3d", DESCRIPTION, "{generate,render,eval,fit}", "objects",
                                 "generate objects as meshes", {"guidance": "the model's, SAR3D 4", "top_k": "the model's, SAR3D 10",
                                                                "top_p": "the model's, SAR3D 0.5"},
                                 "triplane tokenizer", "scalear_cache/meshes", "tokenizer reconstruction per number of scales")
    r = sub.add_parser("render", help="condition images and previews of mesh files")
    r.add_argument("--input", required=True, help="a mesh file, a folder of meshes, or a glob pattern (quote it)")
    r.add_argument("--out", type=output_dir, required=True, help="output folder (must not hold an input)")
    r.add_argument("--size", type=int_range(1, 4096), default=64, help="condition image side (default: %(default)s)")
    return p


def _generate(a: argparse.Namespace) -> int:
    from scalear.domains.sar3d.generate import generate_to_folder, load_generator

    return run_generate("scalear sar3d generate", "object", a, load_generator, generate_to_folder)


def _render(a: argparse.Namespace) -> int:
    from scalear.datasets.meshes.io import MESH_SUFFIXES, MeshError, load_mesh, normalize_mesh
    from scalear.datasets.meshes.render import render_condition_image, shaded_preview
    from scalear.domains.sar3d.generate import save_condition_png
    from scalear.cli_files import check_output_folder, collect_inputs, unique_stems

    try:
        inputs = collect_inputs(a.input, MESH_SUFFIXES)
        out = Path(a.out)
        check_output_folder(out, inputs)
    except (FileNotFoundError, ValueError) as e:
        print(f"scalear sar3d render: {e}", file=sys.stderr)
        return 2
    failed = []
    for path, stem in zip(inputs, unique_stems(inputs)):
        try:
            mesh = normalize_mesh(load_mesh(path))
        except MeshError as e:
            print(f"skipped: {e}", file=sys.stderr)
            failed.append(path)
            continue
        save_condition_png(render_condition_image(mesh, 0, a.size), out / f"{stem}_condition.png")
        shaded_preview(mesh, out / f"{stem}_preview.png", size=192)
    print(f"rendered {len(inputs) - len(failed)} of {len(inputs)} mesh(es) into {a.out}")
    return 1 if failed else 0


def format_reconstruction_table(by_scale: dict[int, dict[str, float]]) -> str:
    cols = ("chamfer_l1", "chamfer_l2", "fscore", "normal_consistency", "iou")
    lines = ["| scales | " + " | ".join(cols) + " | objects | empty |", "|---" * (len(cols) + 3) + "|"]
    for k, m in by_scale.items():
        cells = [f"{m[c]:.4f}" if c in m else "-" for c in cols]
        lines.append(f"| 1..{k} | " + " | ".join(cells) + f" | {m['objects']} | {m['empty']} |")
    return "\n".join(lines)


def _eval(a: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from scalear.datasets.meshes.data import MeshDataModule
    from scalear.domains.sar3d.evaluate import reconstruction_by_scale
    from scalear.domains.sar3d.tokenizer import TriplaneVQVAE

    def data(tok: TriplaneVQVAE) -> MeshDataModule:
        return MeshDataModule(root=a.root, cache_dir=a.cache_dir, val_per_class=a.val_per_class,
                              grid_resolution=tok.config.grid_resolution)

    return run_eval("scalear sar3d eval", a, TriplaneVQVAE, "SAR3D triplane tokenizer", data,
                    lambda tok, val: reconstruction_by_scale(tok, DataLoader(val, batch_size=8), a.resolution),
                    format_reconstruction_table)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scalear sar3d`` (registered in the ``scalear.domains`` entry-point group)."""
    from scalear.cli import run_domain_verbs

    return run_domain_verbs(argv, build_parser, {"generate": _generate, "render": _render, "eval": _eval})


if __name__ == "__main__":
    raise SystemExit(main())
