"""Generating shapes to files (``scalear g3pt generate``): load an exported G3PT generator with its tokenizer,
sample per class or per condition image, and write each shape as a point cloud (PLY), a mesh and a preview.

A shape is the occupancy field decoded from its generated tokens: the mesh is its zero level set (marching cubes
of ``-logit`` at ``resolution^3``, :meth:`~scalear.domains.g3pt.tokenizer.G3PTTokenizer.indices_to_meshes`), the
point cloud ``points`` area-uniform samples of that surface with their normals. Files per shape ``<name>``:
``<name>_points.ply``, ``<name>.<format>`` (OBJ, PLY, GLB or STL) and ``<name>.png`` (shaded mesh | point cloud);
``generated.json`` lists them. Image conditions are the depth + normal renders the data module gives with
``image_size`` (a mesh file, rendered from view 0, or an RGBA PNG of ``scalear sar3d render``).

Shape ``i`` of class ``c`` (or image ``c``) is drawn with the generator seeded by ``seed + 1000 * c``: a run is
reproducible, and the shapes of one class do not change when other classes are added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from scalear.datasets.meshes.render import camera_views, load_condition, shade, splat_points
from scalear.datasets.pointclouds.io import save_ply
from scalear.domains.g3pt.generator import G3PTGenerator
from scalear.domains.g3pt.tokenizer import G3PTTokenizer
from scalear.gen3d.conditioning import load_generator_export
from scalear.gen3d.fields import MESH_FORMATS, export_mesh, surface_samples
from scalear.io import atomic_write
from scalear.viz import save_png


def load_generator(folder: str | Path, device: torch.device | str = "cpu") -> tuple[G3PTGenerator, G3PTTokenizer]:
    """The generator and tokenizer of an export folder (``generator/`` + ``tokenizer/``), in eval mode."""
    return load_generator_export(folder, G3PTGenerator, G3PTTokenizer, "G3PT", "configs/g3pt/generator_tiny.yaml", device)


def preview_image(mesh, points: np.ndarray, size: int = 192) -> np.ndarray:
    """(size, 2 size + 4, 3) uint8: the shaded mesh and the point cloud from the same camera, side by side."""
    eye = camera_views(1)[0]
    gap = np.full((size, 4, 3), 255, np.uint8)
    return np.concatenate([shade(mesh, eye, size), gap, splat_points(points, eye, size)], 1)


@dataclass
class GenerationReport:
    written: list[str] = field(default_factory=list)  #: names of the shapes written
    empty: list[str] = field(default_factory=list)  #: shapes whose field had no surface (nothing written)


@torch.no_grad()
def generate_to_folder(gen: G3PTGenerator, tok: G3PTTokenizer, out: str | Path, n: int = 4,
                       classes: Sequence[str] | None = None, images: Sequence[str | Path] | None = None,
                       fmt: str = "obj", points: int = 2048, seed: int = 0, resolution: int = 64,
                       preview: bool = True, progress: bool = True, **sampling: Any) -> GenerationReport:
    """``n`` shapes per class (class-conditional generators) or per image (image-conditional ones) into ``out``
    (files: module docstring); ``sampling``: cfg / top_k / top_p / temperature overrides."""
    from tqdm.auto import tqdm

    if fmt not in MESH_FORMATS:
        raise ValueError(f"unsupported mesh format {fmt!r}; choose one of {MESH_FORMATS}")
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give an output folder")
    jobs = gen.condition_jobs(n, classes, images, load_condition)
    out.mkdir(parents=True, exist_ok=True)
    report = GenerationReport()
    for c, (name, cond) in enumerate(tqdm(jobs, desc="generating", unit="condition", disable=not progress)):
        indices = gen.generate(tok, seed=seed + 1000 * c, **cond, **sampling)
        for i, mesh in enumerate(tok.indices_to_meshes(indices, resolution)):
            shape = f"{name}_{i}"
            if mesh is None:
                report.empty.append(shape)
                continue
            pts, nrm = surface_samples(mesh, points, seed=seed + 1000 * c + i)
            save_ply(pts.numpy(), out / f"{shape}_points.ply", normals=nrm.numpy())
            export_mesh(mesh, out / f"{shape}.{fmt}", fmt)
            if preview:
                save_png(preview_image(mesh, pts.numpy()), out / f"{shape}.png")
            report.written.append(shape)
    manifest = {"shapes": report.written, "empty": report.empty, "files": ["<shape>_points.ply", f"<shape>.{fmt}"]
                + (["<shape>.png"] if preview else []), "seed": seed, "n": n, "points": points, "format": fmt,
                "resolution": resolution, "sampling": sampling, "condition": gen.cfg.condition}
    atomic_write(out / "generated.json", lambda p: Path(p).write_text(json.dumps(manifest, indent=2)))
    return report


__all__ = ["load_generator", "preview_image", "GenerationReport", "generate_to_folder"]
