"""Fields to meshes, shared by the 3D domains: dense evaluation of a field on voxel centres, marching cubes,
and atomic mesh export.

Convention (the mesh data's, :mod:`scalear.datasets.meshes`): objects live in ``[-0.5, 0.5]^3``; a grid of side
``R`` holds the field at voxel centres, ``grid[i, j, k]`` at ``(x_i, y_j, z_k)`` with ``x_i = -0.5 + (i + 0.5) / R``;
signed distances are negative inside (for occupancy logits, extract at ``level=0`` of ``-logit``). The zero level
set is extracted with :func:`skimage.measure.marching_cubes` from the grid padded by one voxel of "outside", so an
object that reaches the edge of the cube is closed there instead of cut open: every extracted mesh is watertight.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from scalear.gen3d import MESH_FORMATS
from scalear.io import atomic_write


class EmptyFieldError(ValueError):
    """The field has no crossing of the iso-level: the object is empty (all outside) or fills the whole cube."""


# ------------------------------------------------------------------------------------------- grids
def voxel_centres(resolution: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Voxel centres of ``[-0.5, 0.5]^3`` as (R, R, R, 3), ``[i, j, k] = (x_i, y_j, z_k)``."""
    c = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution - 0.5
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1)


@torch.no_grad()
def sdf_to_grid(sdf_fn: Callable[[torch.Tensor], torch.Tensor], resolution: int = 64, chunk: int = 65536,
                batch_size: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
    """Evaluate ``sdf_fn`` (points (B, N, 3) -> SDF (B, N)) on the voxel centres of a ``resolution^3`` grid,
    ``chunk`` points at a time; returns (B, R, R, R) float32 on the CPU."""
    if resolution < 2 or chunk < 1:
        raise ValueError(f"need resolution >= 2 and chunk >= 1, got {resolution}, {chunk}")
    pts = voxel_centres(resolution, device).reshape(1, -1, 3).expand(batch_size, -1, -1)
    out = [sdf_fn(pts[:, s : s + chunk]).float().cpu() for s in range(0, pts.shape[1], chunk)]
    return torch.cat(out, dim=1).reshape(batch_size, resolution, resolution, resolution)


def extract_mesh(sdf_grid: torch.Tensor | np.ndarray, level: float = 0.0):
    """Zero level set of an SDF grid (R, R, R) of voxel centres of ``[-0.5, 0.5]^3`` -> ``trimesh.Trimesh``.

    Vertices are in the cube's coordinates (axis order x, y, z as the grid's), faces wound outward (positive
    volume). The grid is padded by one voxel outside the object, so where the object reaches the cube's edge the
    surface closes on the cube's face (half a voxel beyond the outermost voxel centres). Raises :class:`EmptyFieldError` when the
    field never crosses ``level``.
    """
    import trimesh
    from skimage.measure import marching_cubes

    g = sdf_grid.detach().cpu().numpy() if isinstance(sdf_grid, torch.Tensor) else np.asarray(sdf_grid)
    g = np.squeeze(g).astype(np.float32)
    if g.ndim != 3 or len(set(g.shape)) != 1:
        raise ValueError(f"expected a cubic SDF grid (R, R, R), got shape {tuple(np.shape(sdf_grid))}")
    if not np.isfinite(g).all():
        raise ValueError("the SDF grid has non-finite values")
    if not (g.min() < level < g.max()):
        what = "empty (no point inside)" if g.min() >= level else "full (no point outside)"
        raise EmptyFieldError(f"the field has no crossing of level {level} (min {g.min():.4f}, max {g.max():.4f}): "
                              f"the object is {what}")
    R = g.shape[0]
    padded = np.pad(g, 1, mode="edge")  # the shell outside mirrors the edge values about the level: a cut closes
    shell = np.ones(padded.shape, bool)  # exactly on the cube's face, half way between edge centre and pad
    shell[1:-1, 1:-1, 1:-1] = False
    padded[shell] = level + np.maximum(np.abs(padded[shell] - level), 1e-6)
    verts, faces, _, _ = marching_cubes(padded, level=level, spacing=(1.0 / R,) * 3)
    verts = verts - 0.5 - 0.5 / R  # padded index i + 1 is voxel i, centred at -0.5 + (i + 0.5) / R
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=True)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def export_mesh(mesh, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``mesh`` as ``fmt`` (``obj``, ``ply``, ``glb``, ``stl``; default: the file's suffix), atomically."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"unsupported mesh format {fmt!r} for {path}; choose one of {MESH_FORMATS}")
    return atomic_write(path, lambda tmp: mesh.export(tmp, file_type=fmt))


# ------------------------------------------------------------------------------------------- meshes to points
def surface_samples(mesh, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` area-uniform points on a ``trimesh.Trimesh`` and their face normals, (n, 3) float32 each."""
    import trimesh

    pts, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return torch.as_tensor(pts, dtype=torch.float32), torch.as_tensor(mesh.face_normals[face], dtype=torch.float32)


def meshes_to_points(meshes: Sequence, n: int = 1024, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Surface samples ``(M, n, 3)`` of the non-empty meshes, and the positions of those meshes."""
    kept = [i for i, m in enumerate(meshes) if m is not None and len(m.faces)]
    if not kept:
        return torch.empty(0, n, 3), []
    return torch.stack([surface_samples(meshes[i], n, seed + i)[0] for i in kept]), kept


def mesh_summary(meshes: Sequence) -> dict[str, int]:
    """What a set of generated meshes really is: how many are ``valid`` (:func:`mesh_is_valid`), ``watertight``
    (closed, every edge shared by two faces) and the ``max_components`` (connected pieces) of any of them."""
    valid = [m for m in meshes if mesh_is_valid(m)]
    return {"valid": len(valid), "watertight": sum(bool(m.is_watertight) for m in valid),
            "max_components": max((len(m.split(only_watertight=False)) for m in valid), default=0)}


def mesh_is_valid(mesh) -> bool:
    """A generated mesh is valid when it has faces, finite vertices and trimesh can compute its volume."""
    if mesh is None or len(mesh.faces) == 0:
        return False
    v = np.asarray(mesh.vertices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(np.isfinite(v).all() and np.isfinite(mesh.volume))


__all__ = ["MESH_FORMATS", "EmptyFieldError", "voxel_centres", "sdf_to_grid", "extract_mesh", "export_mesh",
           "surface_samples", "meshes_to_points", "mesh_is_valid", "mesh_summary"]
