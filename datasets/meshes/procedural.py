"""Built-in procedural objects: chairs, tables, mugs and lamps assembled from primitives.

Each class is a union of boxes, cylinders, frusta and tori with random proportions, merged into one
watertight solid by manifold3d (``trimesh.boolean.union(..., engine="manifold")``). Shapes are built z-up and
returned y-up (ShapeNet's convention), normalised to the longest side 0.9 and centred on the origin.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import trimesh

from scalear.datasets.meshes.io import normalize_mesh
from scalear.io import atomic_write

PROCEDURAL_CLASSES = ("chair", "table", "mug", "lamp")
_SECTIONS = 32
PROCEDURAL_VERSION = 1  # bump when the shapes change, so written sets are rebuilt


def _box(size: tuple[float, float, float], centre: tuple[float, float, float]) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=size, transform=trimesh.transformations.translation_matrix(centre))


def _cylinder(radius: float, z0: float, z1: float, xy: tuple[float, float] = (0.0, 0.0),
              radius_top: float | None = None) -> trimesh.Trimesh:
    """A z-axis cylinder (a frustum when ``radius_top`` differs) from height ``z0`` to ``z1``."""
    import manifold3d

    m = manifold3d.Manifold.cylinder(z1 - z0, radius, radius if radius_top is None else radius_top, _SECTIONS)
    mesh = m.to_mesh()
    out = trimesh.Trimesh(np.asarray(mesh.vert_properties)[:, :3], np.asarray(mesh.tri_verts), process=True)
    out.apply_translation((xy[0], xy[1], z0))
    return out


def _union(parts: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    return trimesh.boolean.union(parts, engine="manifold")


def _chair(rng: np.random.Generator) -> trimesh.Trimesh:
    w, d = rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.55)
    h, t = rng.uniform(0.4, 0.5), rng.uniform(0.04, 0.07)
    leg = rng.uniform(0.03, 0.05)
    back_h = rng.uniform(0.35, 0.6)
    back_t = rng.uniform(0.03, 0.06)
    parts = [_box((w, d, t), (0, 0, h - t / 2))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((leg, leg, h - t / 2), (sx * (w - leg) / 2, sy * (d - leg) / 2, (h - t / 2) / 2)))
    parts.append(_box((w, back_t, back_h + t / 2), (0, (d - back_t) / 2, h - t / 2 + (back_h + t / 2) / 2)))
    return _union(parts)


def _table(rng: np.random.Generator) -> trimesh.Trimesh:
    w, d = rng.uniform(0.9, 1.4), rng.uniform(0.5, 0.9)
    h, t = rng.uniform(0.6, 0.8), rng.uniform(0.03, 0.06)
    parts = [_box((w, d, t), (0, 0, h - t / 2))]
    if rng.random() < 0.5:  # four legs, set in from the corners
        leg, inset = rng.uniform(0.04, 0.07), rng.uniform(0.02, 0.08)
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(_box((leg, leg, h - t / 2), (sx * (w / 2 - inset - leg / 2),
                                                          sy * (d / 2 - inset - leg / 2), (h - t / 2) / 2)))
    else:  # pedestal: a column on a round foot
        foot = rng.uniform(0.25, 0.4) * d
        parts += [_cylinder(rng.uniform(0.04, 0.08), 0.02, h - t / 2), _cylinder(foot, 0.0, 0.04)]
    return _union(parts)


def _mug(rng: np.random.Generator) -> trimesh.Trimesh:
    r, h = rng.uniform(0.3, 0.4), rng.uniform(0.7, 1.0)
    wall, bottom = rng.uniform(0.04, 0.07), rng.uniform(0.05, 0.1)
    body = _cylinder(r, 0.0, h)
    ring_r, tube_r = rng.uniform(0.18, 0.26) * h, rng.uniform(0.035, 0.06)
    handle = trimesh.creation.torus(ring_r, tube_r, major_sections=_SECTIONS, minor_sections=12)
    handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))  # ring in the xz plane
    handle.apply_translation((r, 0, h * rng.uniform(0.45, 0.55)))
    cavity = _cylinder(r - wall, bottom, h + 0.1)
    return trimesh.boolean.difference([_union([body, handle]), cavity], engine="manifold")


def _lamp(rng: np.random.Generator) -> trimesh.Trimesh:
    base_r, base_t = rng.uniform(0.15, 0.25), rng.uniform(0.03, 0.07)
    pole_r, pole_h = rng.uniform(0.015, 0.03), rng.uniform(0.6, 1.0)
    shade_h = rng.uniform(0.2, 0.35)
    shade_lo, shade_hi = rng.uniform(0.2, 0.3), rng.uniform(0.08, 0.15)
    z_shade = pole_h - 0.3 * shade_h
    parts = [_cylinder(base_r, 0.0, base_t), _cylinder(pole_r, base_t * 0.5, pole_h),
             _cylinder(shade_lo, z_shade, z_shade + shade_h, radius_top=shade_hi)]
    return _union(parts)


_BUILDERS = {"chair": _chair, "table": _table, "mug": _mug, "lamp": _lamp}


def make_shape(cls: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """One watertight object of class ``cls`` (see :data:`PROCEDURAL_CLASSES`), y-up, longest side 0.9."""
    if cls not in _BUILDERS:
        raise ValueError(f"unknown procedural class {cls!r}; expected one of {PROCEDURAL_CLASSES}")
    mesh = _BUILDERS[cls](rng)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0)))  # z-up -> y-up
    mesh = normalize_mesh(mesh)
    if not mesh.is_watertight:  # manifold3d's output is always a closed manifold; guard anyway
        raise RuntimeError(f"procedural {cls} is not watertight")
    return mesh


def write_procedural_set(folder: str | Path, per_class: int, seed: int = 0, fmt: str = "obj",
                         classes: tuple[str, ...] = PROCEDURAL_CLASSES) -> list[Path]:
    """Write ``<folder>/<class>/<class>_<i>.<fmt>`` (i = 000, 001, ...) for each class and return the paths.

    Object ``i`` of a class depends only on (seed, class name, i). Existing files are reused, so a rerun with
    the same arguments writes nothing; ``<folder>/.procedural.json`` records the seed, and a different seed
    rewrites the files.
    """
    folder = Path(folder)
    manifest = folder / ".procedural.json"
    stamp = {"seed": seed, "version": PROCEDURAL_VERSION}
    fresh = manifest.is_file() and json.loads(manifest.read_text()) == stamp
    paths = []
    for cls in classes:
        for i in range(per_class):
            path = folder / cls / f"{cls}_{i:03d}.{fmt}"
            if not (fresh and path.is_file()):
                mesh = make_shape(cls, np.random.default_rng([seed, zlib.crc32(cls.encode()), i]))
                atomic_write(path, lambda p, m=mesh: m.export(p, file_type=fmt))
            paths.append(path)
    if not fresh:
        atomic_write(manifest, lambda p: Path(p).write_text(json.dumps(stamp)))
    return paths
