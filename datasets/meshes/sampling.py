"""Signed distances, inside/outside, SDF samples, surface samples and SDF grids of a mesh.

Sign rule (negative inside, positive outside; ``|sdf|`` is the exact distance to the nearest triangle, by
open3d's ``RaycastingScene``): a point is inside when the absolute generalized winding number of the mesh at it
exceeds 1/2 (Jacobson et al., "Robust Inside-Outside Segmentation using Generalized Winding Numbers", SIGGRAPH
2013; libigl's ``winding_number``). For a closed surface the winding number is 1 inside and 0 outside; where
closed parts overlap or are nested it counts them (2 inside two parts), so every point inside any part is inside
(their union), which ray parity gets wrong (an even number of crossings reads as outside). The absolute value
makes a part whose faces all point inwards count as a solid too. For an open mesh (holes, a missing base, as most
ShapeNet models) the winding number is the share of directions from which the surface is seen, so the rule reads
"enclosed from more than half of all directions": small holes barely change it, a lone sheet encloses nothing.
Coordinates are the mesh's own (use :func:`~.io.normalize_mesh` first for the unit cube [-0.5, 0.5]^3).
"""

from __future__ import annotations

import os

import numpy as np
import trimesh

from scalear.deps import igl, open3d


def _nthreads() -> int:
    """open3d threads: ``OMP_NUM_THREADS`` when set (tests run on one thread), else all cores (0)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def raycasting_scene(mesh: trimesh.Trimesh):
    """An ``open3d.t.geometry.RaycastingScene`` holding ``mesh``."""
    o3d = open3d()

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(mesh.vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.uint32)))
    return scene


def _points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points)
    if pts.shape[-1] != 3:
        raise ValueError(f"points must be (..., 3), got {pts.shape}")
    return pts


def winding_numbers(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Generalized winding number of ``mesh`` at ``points`` (..., 3), exact (libigl); returns (...) float32."""
    pts = _points(points)
    w = igl().winding_number(np.ascontiguousarray(mesh.vertices, dtype=np.float64),
                           np.ascontiguousarray(mesh.faces, dtype=np.int64),
                           np.ascontiguousarray(pts.reshape(-1, 3), dtype=np.float64))
    return w.reshape(pts.shape[:-1]).astype(np.float32)


def inside(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Whether each of ``points`` (..., 3) is inside ``mesh``: ``|winding number| > 1/2`` (see the module doc)."""
    return np.abs(winding_numbers(mesh, points)) > 0.5


def signed_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside, by :func:`inside`) of ``points`` (..., 3) to ``mesh``; (...) float32."""
    o3d = open3d()

    pts = _points(points)
    flat = np.ascontiguousarray(pts.reshape(-1, 3), dtype=np.float32)
    dist = raycasting_scene(mesh).compute_distance(o3d.core.Tensor(flat), nthreads=_nthreads()).numpy()
    sdf = np.where(inside(mesh, flat), -dist, dist)
    return sdf.reshape(pts.shape[:-1]).astype(np.float32)


def enclosure(mesh: trimesh.Trimesh, resolution: int = 32) -> float:
    """How well an open mesh encloses a volume: of the grid voxels inside it (:func:`inside`), the share enclosed
    from at least three quarters of all directions (``|winding number| >= 0.75``): 1 for a closed surface, about
    0.7 for a bathtub, 0.5 for a tube without caps, 0 for a sheet or a half cylinder shell."""
    w = np.abs(winding_numbers(mesh, grid_points(resolution)))
    return float((w >= 0.75).sum() / max(int((w > 0.5).sum()), 1))


def sample_surface(mesh: trimesh.Trimesh, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform over the surface area and their faces' unit normals, both (n, 3) float32."""
    seed = int(rng.integers(2**31))
    points, face_idx = trimesh.sample.sample_surface(mesh, n, seed=seed)
    normals = mesh.face_normals[face_idx]
    return points.astype(np.float32), normals.astype(np.float32)


def sample_sdf(mesh: trimesh.Trimesh, n_near: int, n_uniform: int, sigma: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SDF training samples: ``n_near`` surface points + N(0, sigma^2) noise per axis (clipped to the cube)
    and ``n_uniform`` uniform points in [-0.5, 0.5]^3. Returns points (N, 3) float32 and sdf (N,) float32."""
    near, _ = sample_surface(mesh, n_near, rng) if n_near > 0 else (np.zeros((0, 3), np.float32), None)
    near = np.clip(near + rng.normal(0.0, sigma, near.shape), -0.5, 0.5)
    uniform = rng.uniform(-0.5, 0.5, (n_uniform, 3))
    points = np.concatenate([near, uniform]).astype(np.float32)
    return points, signed_distance(mesh, points)


def grid_points(resolution: int) -> np.ndarray:
    """(R, R, R, 3) voxel centres of [-0.5, 0.5]^3: ``[i, j, k] = (x_i, y_j, z_k)``, ``x_i = (i + 0.5) / R - 0.5``."""
    c = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 0.5
    return np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1)


def sdf_grid(mesh: trimesh.Trimesh, resolution: int) -> np.ndarray:
    """(R, R, R) float32 SDF at the voxel centres of [-0.5, 0.5]^3; ``grid[i, j, k]`` is at (x_i, y_j, z_k)
    (first index x, last z; see :func:`grid_points`)."""
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    return signed_distance(mesh, grid_points(resolution))
