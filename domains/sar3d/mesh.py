"""Signed distance fields to meshes for SAR3D (the implementation is the core's :mod:`scalear.gen3d.fields`, re-exported
here), and analytic shapes for tests.

SAR3D extracts meshes from its triplane with marching cubes (NeRF density) or FlexiCubes (``utils/render_utils.py``);
scalear's tokenizer decodes a signed distance field, so its zero level set is extracted with
:func:`skimage.measure.marching_cubes` on a grid of voxel centres of ``[-0.5, 0.5]^3`` (the data's convention:
``grid[i, j, k]`` at ``(x_i, y_j, z_k)``, ``x_i = -0.5 + (i + 0.5) / R``, negative inside).

Example:
    >>> grid = sphere_sdf(voxel_centres(32), torch.zeros(3), 0.3)[None]
    >>> mesh = extract_mesh(grid[0])
    >>> bool(abs(float(np.linalg.norm(mesh.vertices, axis=1).mean()) - 0.3) < 1 / 32)
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from scalear.gen3d.fields import MESH_FORMATS, EmptyFieldError, export_mesh, extract_mesh, sdf_to_grid, voxel_centres  # noqa: F401


def load_mesh(path: str | Path):
    """Read a mesh file back as one ``trimesh.Trimesh``."""
    import trimesh

    return trimesh.load(str(path), force="mesh")


# ------------------------------------------------------------------------------------------- analytic shapes
def sphere_sdf(p: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
    """Exact SDF of a sphere at points ``p`` (..., 3)."""
    return (p - centre).norm(dim=-1) - radius


def box_sdf(p: torch.Tensor, centre: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Exact SDF of an axis-aligned box with half extents ``half`` (3,)."""
    q = (p - centre).abs() - half
    return q.clamp(min=0).norm(dim=-1) + q.amax(dim=-1).clamp(max=0)


def torus_sdf(p: torch.Tensor, centre: torch.Tensor, major: float, minor: float) -> torch.Tensor:
    """Exact SDF of a torus around the z axis."""
    d = p - centre
    return torch.stack((d[..., :2].norm(dim=-1) - major, d[..., 2]), -1).norm(dim=-1) - minor


def analytic_sdf(kind: str, g: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """A random shape of ``kind`` (``sphere``, ``box``, ``torus``) inside the cube, as an SDF function."""
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    c = (u(3) - 0.5) * 0.1
    if kind == "sphere":
        r = 0.2 + 0.2 * float(u(1))
        return lambda p: sphere_sdf(p, c, r)
    if kind == "box":
        h = 0.15 + 0.25 * u(3)
        return lambda p: box_sdf(p, c, h)
    if kind == "torus":
        major, minor = 0.2 + 0.1 * float(u(1)), 0.06 + 0.06 * float(u(1))
        return lambda p: torus_sdf(p, c, major, minor)
    raise ValueError(f"unknown analytic shape {kind!r}; choose sphere, box or torus")


def analytic_batch(kinds: Sequence[str], grid_resolution: int = 32, n_points: int = 2048, seed: int = 0,
                   labels: Sequence[int] | None = None) -> dict:
    """A batch in the :class:`MeshDataModule` layout from random analytic shapes (no ``image``/``surface``):
    ``grid`` (B, 1, R, R, R), ``points`` (B, N, 3) half near the surface, half uniform, ``sdf`` (B, N),
    ``label`` (B,) (default: index of the kind in sorted order), ``name``."""
    g = torch.Generator().manual_seed(seed)
    centres = voxel_centres(grid_resolution)
    grids, pts, sdfs = [], [], []
    for kind in kinds:
        fn = analytic_sdf(kind, g)
        grids.append(fn(centres)[None])
        uni = torch.rand(n_points, 3, generator=g) - 0.5
        # near-surface points: uniform candidates pulled towards the zero set, then jittered
        cand = torch.rand(4 * n_points, 3, generator=g) - 0.5
        d = fn(cand)
        near = cand[d.abs().argsort()[: n_points - n_points // 2]]
        near = (near + 0.02 * torch.randn(near.shape, generator=g)).clamp(-0.5, 0.5)
        p = torch.cat((near, uni[: n_points // 2]))
        pts.append(p)
        sdfs.append(fn(p))
    names = sorted(set(kinds))
    lab = [names.index(k) for k in kinds] if labels is None else list(labels)
    return {"grid": torch.stack(grids), "points": torch.stack(pts), "sdf": torch.stack(sdfs),
            "label": torch.tensor(lab, dtype=torch.long), "name": list(kinds)}
