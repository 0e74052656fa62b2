"""Signed distances, SDF samples, surface samples and SDF grids of a mesh, by ray casting (open3d).

Sign rule: negative inside, positive outside, ``|sdf|`` the exact distance to the nearest triangle. Inside is
decided by ray parity (an odd number of crossings). For a watertight mesh one ray per point is exact up to
rays grazing an edge, so we vote over :data:`NSAMPLES_CLOSED` rays; an open mesh (holes, loose parts, as
most ShapeNet models) has no true inside, so the sign is the majority vote over :data:`NSAMPLES_OPEN` random
rays: points enclosed from most directions count as inside (open3d's ``compute_signed_distance(nsamples=)``).
Coordinates are the mesh's own (use :func:`~.io.normalize_mesh` first for the unit cube [-0.5, 0.5]^3).
"""

from __future__ import annotations

import os

import numpy as np
import trimesh

NSAMPLES_CLOSED = 3
NSAMPLES_OPEN = 11


def _nthreads() -> int:
    """open3d threads: ``OMP_NUM_THREADS`` when set (tests run on one thread), else all cores (0)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def raycasting_scene(mesh: trimesh.Trimesh):
    """An ``open3d.t.geometry.RaycastingScene`` holding ``mesh``."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(mesh.vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.uint32)))
    return scene


def signed_distance(mesh: trimesh.Trimesh, points: np.ndarray, nsamples: int | None = None) -> np.ndarray:
    """Signed distance (negative inside) of ``points`` (..., 3) to ``mesh``; returns (...) float32.

    ``nsamples`` (odd) rays vote on the sign; by default 3 for a watertight mesh and 11 for an open one.
    """
    import open3d as o3d

    pts = np.asarray(points, dtype=np.float32)
    if pts.shape[-1] != 3:
        raise ValueError(f"points must be (..., 3), got {pts.shape}")
    if nsamples is None:
        nsamples = NSAMPLES_CLOSED if mesh.is_watertight else NSAMPLES_OPEN
    if nsamples % 2 == 0:
        raise ValueError(f"nsamples must be odd, got {nsamples}")
    scene = raycasting_scene(mesh)
    sdf = scene.compute_signed_distance(o3d.core.Tensor(np.ascontiguousarray(pts.reshape(-1, 3))),
                                        nthreads=_nthreads(), nsamples=nsamples)
    return sdf.numpy().reshape(pts.shape[:-1]).astype(np.float32)


def inside_votes(mesh: trimesh.Trimesh, points: np.ndarray, nrays: int = 15, seed: int = 0) -> np.ndarray:
    """Share of ``nrays`` random directions along which each point (N, 3) crosses ``mesh`` an odd number of
    times: 1 inside a closed surface, 0 far outside, about 0.5 next to an open sheet. Returns (N,) float32."""
    import open3d as o3d

    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    d = np.random.default_rng(seed).normal(size=(nrays, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    rays = np.concatenate([np.repeat(pts[:, None], nrays, 1), np.broadcast_to(d[None], (len(pts), nrays, 3))], -1)
    counts = raycasting_scene(mesh).count_intersections(
        o3d.core.Tensor(np.ascontiguousarray(rays.reshape(-1, 6), dtype=np.float32)), nthreads=_nthreads())
    return (counts.numpy().reshape(len(pts), nrays) % 2).mean(1).astype(np.float32)


def enclosure(mesh: trimesh.Trimesh, resolution: int = 32) -> float:
    """How well an open mesh encloses a volume: of the grid voxels that most rays call inside, the share that
    at least 90 % of rays call inside (1 for a closed surface, about 0.3 for a tube without caps, under 0.01
    for a sheet or a half cylinder, 0 when no voxel is inside)."""
    v = inside_votes(mesh, grid_points(resolution))
    return float((v >= 0.9).sum() / max(int((v > 0.5).sum()), 1))


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
