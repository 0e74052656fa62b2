"""Generating objects to files (``scalear sar3d generate``): load an exported generator with its tokenizer, read
image conditions, sample per class or per image, and write each object as a mesh with a shaded preview.

An export folder holds ``generator/`` and ``tokenizer/`` (what :class:`~.training.SAR3DGeneratorModule` exports).
Image conditions are the 4-channel depth + normal renders the generator was trained on: give a mesh file (its
condition render from view 0 is taken, as :func:`~scalear.datasets.meshes.render.render_condition_image`), or a
PNG written by :func:`save_condition_png` (RGBA: normals in RGB, depth in alpha).

Object ``i`` of class ``c`` (or image ``c``) is drawn with the generator seeded by ``seed + 1000 * c``, so a run is
reproducible, and the objects of one class do not change when other classes are added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from scalear.datasets.meshes.render import load_condition, save_condition_png
from scalear.domains.sar3d.generator import SAR3DGenerator, indices_to_meshes
from scalear.domains.sar3d.mesh import MESH_FORMATS, export_mesh
from scalear.domains.sar3d.tokenizer import TriplaneVQVAE
from scalear.gen3d.conditioning import load_generator_export
from scalear.io import atomic_write


def load_generator(folder: str | Path, device: torch.device | str = "cpu") -> tuple[SAR3DGenerator, TriplaneVQVAE]:
    """The generator and tokenizer of an export folder (``generator/`` + ``tokenizer/``), in eval mode."""
    return load_generator_export(folder, SAR3DGenerator, TriplaneVQVAE, "SAR3D", "configs/sar3d/generator_tiny.yaml", device)


@dataclass
class GenerationReport:
    written: list[Path] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  #: objects whose field had no surface (nothing written)


def write_objects(meshes: Sequence, names: Sequence[str], out: Path, fmt: str, preview: bool,
                  report: GenerationReport) -> None:
    """Write each mesh as ``<out>/<name>.<fmt>`` (+ ``<name>.png`` preview); ``None`` meshes are reported."""
    from scalear.datasets.meshes.render import shaded_preview

    for mesh, name in zip(meshes, names):
        if mesh is None:
            report.empty.append(name)
            continue
        report.written.append(export_mesh(mesh, out / f"{name}.{fmt}", fmt))
        if preview:
            shaded_preview(mesh, out / f"{name}.png", size=192)


@torch.no_grad()
def generate_to_folder(gen: SAR3DGenerator, tok: TriplaneVQVAE, out: str | Path, n: int = 4,
                       classes: Sequence[str] | None = None, images: Sequence[str | Path] | None = None,
                       fmt: str = "obj", seed: int = 0, resolution: int = 64, preview: bool = True,
                       progress: bool = True, **sampling: Any) -> GenerationReport:
    """``n`` objects per class (class-conditional generators) or per image (image-conditional ones) into ``out``,
    with a ``generated.json`` manifest; ``sampling``: cfg / top_k / top_p / temperature overrides."""
    from tqdm.auto import tqdm

    if fmt not in MESH_FORMATS:
        raise ValueError(f"unsupported mesh format {fmt!r}; choose one of {MESH_FORMATS}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give an output folder")
    out.mkdir(parents=True, exist_ok=True)
    jobs = gen.condition_jobs(n, classes, images, load_condition)
    report = GenerationReport()
    for c, (name, cond) in enumerate(tqdm(jobs, desc="generating", unit="condition", disable=not progress)):
        indices = gen.generate(tok, seed=seed + 1000 * c, **cond, **sampling)
        write_objects(indices_to_meshes(tok, indices, resolution), [f"{name}_{i}" for i in range(n)], out, fmt,
                      preview, report)
    manifest = {"objects": [p.name for p in report.written], "empty": report.empty, "seed": seed, "n": n,
                "format": fmt, "resolution": resolution, "sampling": sampling, "condition": gen.cfg.condition}
    atomic_write(out / "generated.json", lambda p: Path(p).write_text(json.dumps(manifest, indent=2)))
    return report


__all__ = ["load_generator", "save_condition_png", "load_condition", "GenerationReport",
           "write_objects", "generate_to_folder"]
