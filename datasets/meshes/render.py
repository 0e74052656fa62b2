"""Depth and normal renders of a mesh by ray casting (open3d ``RaycastingScene``): no display needed.

Cameras are pinhole, OpenCV-style (x right, y down, looking along +z), placed by :func:`camera_views` on a
circle around the origin with y up. Pixel ``(row, col)`` = ``(0, 0)`` is the top-left corner; depth is the
z-distance along the optical axis (not the ray length), ``inf`` where the ray misses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import trimesh

from scalear.datasets.meshes.sampling import _nthreads, raycasting_scene
from scalear.deps import open3d

#: condition renders: camera distance, elevation (degrees), horizontal field of view (degrees), view count
RADIUS, ELEVATION, FOV, N_VIEWS = 2.0, 25.0, 40.0, 4


def camera_views(n: int, radius: float = RADIUS, elevation: float = ELEVATION) -> np.ndarray:
    """(n, 3) camera positions at ``radius`` from the origin, ``elevation`` degrees above the xz plane,
    azimuths 45 + 360 i / n degrees about y (view 0 looks at the front-right corner from +x+z)."""
    az = np.radians(45.0 + 360.0 * np.arange(n) / n)
    el = np.radians(elevation)
    return np.stack([np.cos(el) * np.sin(az), np.full(n, np.sin(el)), np.cos(el) * np.cos(az)], -1) * radius


def look_at(eye: np.ndarray, up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """The 4x4 world-to-camera matrix of a camera at ``eye`` looking at the origin (OpenCV axes)."""
    eye = np.asarray(eye, dtype=np.float64)
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, up)
    if np.linalg.norm(right) < 1e-8:
        raise ValueError(f"camera at {eye} looks along the up vector {up}")
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    E = np.eye(4)
    E[:3, :3], E[:3, 3] = R, -R @ eye
    return E


def render_depth_normals(mesh: trimesh.Trimesh, eye: np.ndarray, size: int = 64, fov: float = FOV
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast ``mesh`` from ``eye`` (looking at the origin, y up) into a ``size`` x ``size`` image.

    Returns depth (H, W) float32 (z-depth, ``inf`` on the background), world-space unit normals (H, W, 3)
    float32 turned to face the camera (0 on the background), and the object mask (H, W) bool.
    """
    o3d = open3d()

    f = size / 2 / np.tan(np.radians(fov) / 2)
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(K), o3d.core.Tensor(look_at(eye)), size, size)  # directions have unit camera-z
    hit = raycasting_scene(mesh).cast_rays(rays, nthreads=_nthreads())
    depth = hit["t_hit"].numpy().astype(np.float32)
    mask = np.isfinite(depth)
    n = hit["primitive_normals"].numpy().astype(np.float32)
    d = rays.numpy()[..., 3:]
    n = np.where((np.sum(n * d, -1) > 0)[..., None], -n, n)  # back faces of open meshes
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    n[~mask] = 0
    return depth, n, mask


def render_condition_image(mesh: trimesh.Trimesh, view: int | np.ndarray, size: int = 64) -> torch.Tensor:
    """(4, S, S) float32 image condition: channel 0 depth mapped to [0, 1] (1 = nearest possible point of
    the unit cube, 0 = farthest), channels 1-3 camera-space normals (x right, y up, z towards the camera)
    mapped to [0, 1] as ``(n + 1) / 2``; the background is 0 in all channels. ``view`` indexes
    ``camera_views(N_VIEWS)`` or is a camera position."""
    eye = camera_views(N_VIEWS)[view] if np.isscalar(view) else np.asarray(view, dtype=np.float64)
    depth, normals, mask = render_depth_normals(mesh, eye, size)
    dist, half = float(np.linalg.norm(eye)), np.sqrt(3) / 2
    d01 = np.clip(1 - (depth - (dist - half)) / (2 * half), 0, 1)
    R = look_at(eye)[:3, :3] * np.array([[1.0], [-1.0], [-1.0]])  # OpenCV -> x right, y up, z to the camera
    n_cam = normals @ R.T
    img = np.concatenate([d01[None], (n_cam.transpose(2, 0, 1) + 1) / 2]) * mask[None]
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))


def shade(mesh: trimesh.Trimesh, eye: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 Lambert shading: light grey object lit from above the camera, white background."""
    _, normals, mask = render_depth_normals(mesh, eye, size)
    light = np.asarray(eye, dtype=np.float64) / np.linalg.norm(eye) + np.array([0.3, 1.0, 0.2])
    light /= np.linalg.norm(light)
    g = 0.25 + 0.65 * np.clip(normals @ light, 0, 1)
    return (np.where(mask, g, 1.0)[..., None].repeat(3, -1) * 255).round().astype(np.uint8)


def splat_points(points: np.ndarray, eye: np.ndarray, size: int, fov: float = FOV, radius: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 picture of a point cloud (N, 3) seen from ``eye`` with the pinhole camera of
    :func:`render_depth_normals`: each point a ``(2 radius + 1)^2`` dot, darker when nearer, drawn far to
    near so nearer dots cover farther ones; white background."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    E = look_at(eye)
    cam = pts @ E[:3, :3].T + E[:3, 3]
    cam = cam[cam[:, 2] > 1e-6]
    f = size / 2 / np.tan(np.radians(fov) / 2)
    u, v = f * cam[:, 0] / cam[:, 2] + size / 2, f * cam[:, 1] / cam[:, 2] + size / 2
    dist, half = float(np.linalg.norm(eye)), np.sqrt(3) / 2
    grey = 0.15 + 0.6 * np.clip((cam[:, 2] - (dist - half)) / (2 * half), 0, 1)  # near dark, far light
    img = np.ones((size, size))
    for order in np.argsort(-cam[:, 2]):  # far to near: nearer dots overwrite
        c, r = int(u[order]), int(v[order])
        r0, r1, c0, c1 = max(r - radius, 0), min(r + radius + 1, size), max(c - radius, 0), min(c + radius + 1, size)
        if r0 < r1 and c0 < c1:
            img[r0:r1, c0:c1] = grey[order]
    return (img[..., None].repeat(3, -1) * 255).round().astype(np.uint8)


def shaded_preview(mesh: trimesh.Trimesh, path: str | Path, size: int = 256, views: int = 4) -> Path:
    """Write a Lambert-shaded PNG of ``mesh`` (1 view, or a 2x2 grid of 4 views) atomically."""
    from scalear.viz import save_png

    if views not in (1, 4):
        raise ValueError(f"views must be 1 or 4, got {views}")
    eyes = camera_views(views)
    tiles = [shade(mesh, e, size) for e in eyes]
    img = tiles[0] if views == 1 else np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)])
    return save_png(img, path)


def save_condition_png(image_4SS: torch.Tensor, path: str | Path) -> Path:
    """Write a condition render (4, S, S) in [0, 1] as an 8-bit RGBA PNG (normals RGB, depth alpha)."""
    from PIL import Image

    from scalear.io import atomic_write

    x = image_4SS.detach().float().clamp(0, 1).cpu().numpy()
    rgba = (np.concatenate([x[1:4], x[:1]]).transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return atomic_write(path, lambda p: Image.fromarray(rgba, mode="RGBA").save(p, format="PNG"))


def load_condition(path: str | Path, size: int) -> torch.Tensor:
    """A (4, size, size) condition from a mesh file (rendered from view 0) or an RGBA PNG of
    :func:`save_condition_png`; errors name the file."""
    from scalear.datasets.meshes.io import MESH_SUFFIXES, load_mesh, normalize_mesh

    path = Path(path)
    if path.suffix.lower() in MESH_SUFFIXES:
        return render_condition_image(normalize_mesh(load_mesh(path)), 0, size)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: an image condition is a mesh file ({', '.join(MESH_SUFFIXES)}) or an RGBA "
                         "condition PNG (scalear sar3d render)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode != "RGBA":
                raise ValueError(f"{path}: mode {im.mode}, but a condition PNG is RGBA (normals RGB, depth alpha); "
                                 "photographs are not supported: render the object with scalear sar3d render")
            a = np.asarray(im.resize((size, size), Image.NEAREST), dtype=np.float32) / 255
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable PNG ({e})") from e
    return torch.from_numpy(np.concatenate([a[..., 3:], a[..., :3]], -1).transpose(2, 0, 1).copy())
