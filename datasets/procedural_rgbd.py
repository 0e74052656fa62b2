"""Procedural RGB-D scenes: the built-in default depth data (no download, exact metric ground truth).

Every scene is a ground plane and a back wall with 3-7 textured primitives (boxes, spheres, cylinders) at
random poses, sizes, colours and solid textures (checker, stripes, value noise), seen by a pinhole camera at
a random height, pitch and yaw. Depth comes from open3d's ``RaycastingScene`` (Embree): one ray per pixel
from ``RaycastingScene.create_rays_pinhole``, ``t_hit`` turned into z-depth (distance along the optical
axis, as in KITTI / NYU ground truth, not the ray length). The colour is the texture times Lambertian shading
from the hit normal with one directional light, with cast shadows (a second ray per pixel towards the light)
and an ambient term, quantised to 8 bits like a camera image.

Scenes are deterministic functions of ``(seed, scene_id)``; the splits use disjoint scene-id ranges
(:data:`SPLIT_OFFSETS`): train ``[0, n)``, val ``[10^7, 10^7 + n)``, test ``[2*10^7, 2*10^7 + n)``.

Camera convention (OpenCV): x right, y down, z forward; ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` with
pixel centres at integer coordinates, so pixel ``(row v, col u)`` looks along ``K^-1 [u, v, 1]``.

open3d is optional (the ``[3d]`` extra) and imported only when a scene is rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scalear.deps import open3d
from scalear.training.loader import ResumableDataLoader

#: first scene id of each split; a split holds at most SPLIT_STRIDE scenes, so the ranges never overlap
SPLIT_STRIDE = 10_000_000
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": SPLIT_STRIDE, "test": 2 * SPLIT_STRIDE}
TEXTURES = ("checker", "stripes", "noise")


def pinhole_intrinsics(image_size: tuple[int, int], hfov_deg: float = 60.0) -> np.ndarray:
    """``(3, 3)`` float64 K of square pixels with horizontal field of view ``hfov_deg`` and the principal point
    at the image centre (``cx = (W - 1) / 2`` in the integer-pixel-centre convention)."""
    h, w = image_size
    f = (w / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


def look_extrinsic(position_3: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """World-to-camera ``(4, 4)`` for a world with z up: the camera at ``position`` looks along +y turned by
    ``yaw`` (radians, towards +x) and tilted down by ``pitch``; camera axes x right, y down, z forward."""
    fwd = np.array([math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), -math.sin(pitch)])
    right = np.array([math.cos(yaw), -math.sin(yaw), 0.0])
    down = np.cross(fwd, right)
    r_cw = np.stack([right, down, fwd])  # rows: camera axes in world coordinates = world-to-camera rotation
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = r_cw, -r_cw @ np.asarray(position_3, dtype=np.float64)
    return ext


def cast_depth(meshes: list[tuple[np.ndarray, np.ndarray]], K_33: np.ndarray, extrinsic_44: np.ndarray,
               image_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ray-cast triangle meshes ``[(vertices (V, 3), triangles (T, 3)), ...]`` (world coordinates) through a
    pinhole camera (``K`` in the integer-pixel-centre convention, world-to-camera ``extrinsic``).

    Returns ``depth_HW`` (z-depth in the camera frame, 0 where nothing is hit), ``hit_HW`` (bool),
    ``mesh_id_HW`` (index into ``meshes``, -1 for no hit), ``points_HW3`` (world hit points),
    ``normals_HW3`` (triangle normals) and ``rays_HW6`` (origin, direction in world).
    """
    o3d = open3d()
    h, w = image_size
    scene = o3d.t.geometry.RaycastingScene()
    ids = [scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(v, dtype=np.float32)),
                               o3d.core.Tensor(np.ascontiguousarray(t, dtype=np.uint32))) for v, t in meshes]
    # open3d's rays go through pixel centres at u + 0.5 (pixel corners at integers): shift cx, cy by half a
    # pixel so that the returned K keeps OpenCV's integer-centre convention
    k_o3d = np.array(K_33, dtype=np.float64).copy()
    k_o3d[0, 2] += 0.5
    k_o3d[1, 2] += 0.5
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(k_o3d), o3d.core.Tensor(np.asarray(extrinsic_44, dtype=np.float64)), w, h)
    out = scene.cast_rays(rays)
    rays_HW6 = rays.numpy().astype(np.float64)
    t_HW = out["t_hit"].numpy().astype(np.float64)
    hit_HW = np.isfinite(t_HW)
    # t_hit is measured in units of the direction's length along the ray; z-depth = t * (direction . optical axis)
    axis_3 = np.asarray(extrinsic_44, dtype=np.float64)[2, :3]
    t_HW = np.where(hit_HW, t_HW, 0.0)
    depth_HW = t_HW * (rays_HW6[..., 3:] @ axis_3)
    points_HW3 = rays_HW6[..., :3] + t_HW[..., None] * rays_HW6[..., 3:]
    gid_HW = out["geometry_ids"].numpy().astype(np.int64)
    mesh_id_HW = np.full((h, w), -1, dtype=np.int64)
    for i, gid in enumerate(ids):
        mesh_id_HW[hit_HW & (gid_HW == gid)] = i
    return {"depth_HW": depth_HW, "hit_HW": hit_HW, "mesh_id_HW": mesh_id_HW, "points_HW3": points_HW3,
            "normals_HW3": out["primitive_normals"].numpy().astype(np.float64), "rays_HW6": rays_HW6}


@dataclass
class Primitive:
    """One textured object: its mesh in world coordinates and what its surface looks like."""

    kind: str  # "box" | "sphere" | "cylinder" (ground and wall are boxes)
    vertices: np.ndarray  # (V, 3) world
    triangles: np.ndarray  # (T, 3)
    world_to_local: np.ndarray  # (4, 4): texture coordinates and analytic normals live in the local frame
    texture: str  # one of TEXTURES
    colours: np.ndarray  # (2, 3) in [0, 1]: the two colours the texture mixes
    scale: float  # texture period in metres
    extra: dict = field(default_factory=dict)  # stripe axis, noise lattice


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _make_primitive(rng: np.random.Generator, kind: str, local_v: np.ndarray, tris: np.ndarray, rot_33: np.ndarray,
                    centre_3: np.ndarray, period: float) -> Primitive:
    l2w = np.eye(4)
    l2w[:3, :3], l2w[:3, 3] = rot_33, centre_3
    base = rng.uniform(0.15, 0.95, 3)
    other = np.clip(base * rng.uniform(0.2, 0.6) + rng.uniform(0.0, 0.4, 3), 0, 1)
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    axis = rng.normal(size=3)
    extra = {"axis": axis / np.linalg.norm(axis), "lattice": rng.uniform(0, 1, (8, 8, 8))}
    return Primitive(kind, local_v @ rot_33.T + centre_3, tris, np.linalg.inv(l2w), texture, np.stack([base, other]),
                     period, extra)


def random_scene(rng: np.random.Generator, max_depth: float = 10.0, hfov_deg: float = 60.0
                 ) -> tuple[list[Primitive], np.ndarray, np.ndarray]:
    """A random layout: ``(primitives, world-to-camera extrinsic (4, 4), light direction (3,))``.

    Lengths scale with ``max_depth`` (s = max_depth / 10): camera 1-1.8 s high, pitched down 5-15 degrees,
    yawed within +-10 degrees; the back wall 0.6-0.75 max_depth away (so every ray ends on the wall, the ground
    or an object, and every depth stays below about 0.9 max_depth); objects 0.3-0.9 of the wall distance away.
    """
    o3d = open3d()
    s = max_depth / 10.0
    cam_h, pitch, yaw = rng.uniform(1.0, 1.8) * s, math.radians(rng.uniform(5, 15)), math.radians(rng.uniform(-10, 10))
    extrinsic = look_extrinsic(np.array([0.0, 0.0, cam_h]), yaw, pitch)
    wall_y = rng.uniform(0.6, 0.75) * max_depth

    def box(size_3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # centred at the origin
        m = o3d.t.geometry.TriangleMesh.create_box(*[float(x) for x in size_3])
        return m.vertex.positions.numpy().astype(np.float64) - size_3 / 2, m.triangle.indices.numpy()

    prims = []
    ground_v, ground_t = box(np.array([6 * max_depth, wall_y + max_depth, 0.1 * s]))
    prims.append(_make_primitive(rng, "box", ground_v, ground_t, np.eye(3),
                                 np.array([0.0, (wall_y - max_depth) / 2, -0.05 * s]), rng.uniform(0.4, 1.2) * s))
    wall_v, wall_t = box(np.array([6 * max_depth, 0.1 * s, 3 * max_depth]))
    prims.append(_make_primitive(rng, "box", wall_v, wall_t, np.eye(3), np.array([0.0, wall_y + 0.05 * s, 1.2 * max_depth]),
                                 rng.uniform(0.4, 1.5) * s))
    tan_half = math.tan(math.radians(hfov_deg) / 2)
    for _ in range(int(rng.integers(3, 8))):
        y = rng.uniform(0.3, 0.9) * wall_y
        x = rng.uniform(-0.8, 0.8) * y * tan_half + y * math.sin(yaw)
        kind = ("box", "sphere", "cylinder")[rng.integers(3)]
        period = rng.uniform(0.08, 0.3) * s
        if kind == "box":
            size = rng.uniform(0.3, 1.2, 3) * s
            v, t = box(size)
            centre, rot = np.array([x, y, size[2] / 2]), _rot_z(rng.uniform(0, math.pi))
        elif kind == "sphere":
            r = rng.uniform(0.2, 0.6) * s
            m = o3d.t.geometry.TriangleMesh.create_sphere(radius=r, resolution=16)
            v, t = m.vertex.positions.numpy().astype(np.float64), m.triangle.indices.numpy()
            lift = rng.uniform(0, 1.0) * s if rng.uniform() < 0.3 else 0.0
            centre, rot = np.array([x, y, r + lift]), _rot_z(rng.uniform(0, 2 * math.pi))
        else:
            r, hgt = rng.uniform(0.15, 0.5) * s, rng.uniform(0.4, 2.0) * s
            m = o3d.t.geometry.TriangleMesh.create_cylinder(radius=r, height=hgt, resolution=24, split=1)
            v, t = m.vertex.positions.numpy().astype(np.float64), m.triangle.indices.numpy()
            centre, rot = np.array([x, y, hgt / 2]), _rot_z(rng.uniform(0, 2 * math.pi))
        prim = _make_primitive(rng, kind, v, t, rot, centre, period)
        if kind == "cylinder":
            prim.extra["half_height"] = hgt / 2
        prims.append(prim)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.1), rng.uniform(0.6, 1.0)])
    return prims, extrinsic, light / np.linalg.norm(light)


def _texture(prim: Primitive, local_N3: np.ndarray) -> np.ndarray:
    """Solid texture value in [0, 1] at local points ``(N, 3)``."""
    q_N3 = local_N3 / prim.scale
    if prim.texture == "checker":
        return (np.floor(q_N3).sum(-1) % 2).astype(np.float64)
    if prim.texture == "stripes":
        return (np.floor(q_N3 @ prim.extra["axis"]) % 2).astype(np.float64)
    # value noise: trilinear interpolation of a periodic 8^3 lattice of random values
    lat = prim.extra["lattice"]
    q_N3 = q_N3 * 0.5
    i0 = np.floor(q_N3).astype(np.int64)
    f = q_N3 - i0
    f = f * f * (3 - 2 * f)  # smoothstep
    out = np.zeros(len(q_N3))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                wgt = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                out += wgt * lat[(i0[:, 0] + dx) % 8, (i0[:, 1] + dy) % 8, (i0[:, 2] + dz) % 8]
    return out


def render_scene(prims: list[Primitive], K_33: np.ndarray, extrinsic_44: np.ndarray, light_3: np.ndarray,
                 image_size: tuple[int, int], ambient: float = 0.3) -> dict[str, np.ndarray]:
    """Shade a scene: ``image_HW3`` uint8, ``depth_HW`` float32 z-depth (0 = no hit), ``hit_HW`` bool.

    colour = texture * (ambient + (1 - ambient) * max(0, n . light) * unshadowed), with n the (analytic for
    spheres and cylinder sides) surface normal turned towards the camera.
    """
    o3d = open3d()
    cast = cast_depth([(p.vertices, p.triangles) for p in prims], K_33, extrinsic_44, image_size)
    hit_HW, mesh_HW = cast["hit_HW"], cast["mesh_id_HW"]
    points_HW3, normals_HW3 = cast["points_HW3"], cast["normals_HW3"].copy()
    albedo_HW3 = np.zeros((*image_size, 3))
    for i, p in enumerate(prims):
        sel = mesh_HW == i
        if not sel.any():
            continue
        local_N3 = points_HW3[sel] @ p.world_to_local[:3, :3].T + p.world_to_local[:3, 3]
        if p.kind == "sphere":
            n_loc = local_N3
        elif p.kind == "cylinder":
            n_loc = np.concatenate([local_N3[:, :2], np.zeros((len(local_N3), 1))], -1)
            cap = np.abs(local_N3[:, 2]) > p.extra["half_height"] * (1 - 1e-4)
            n_loc[cap] = np.stack([np.zeros(cap.sum()), np.zeros(cap.sum()), np.sign(local_N3[cap, 2])], -1)
        else:
            n_loc = None
        if n_loc is not None:
            n_w = n_loc @ np.linalg.inv(p.world_to_local[:3, :3]).T
            normals_HW3[sel] = n_w / np.maximum(np.linalg.norm(n_w, axis=-1, keepdims=True), 1e-12)
        tex_N = _texture(p, local_N3)[:, None]
        albedo_HW3[sel] = (1 - tex_N) * p.colours[0] + tex_N * p.colours[1]
    dirs_HW3 = cast["rays_HW6"][..., 3:]
    flip = (normals_HW3 * dirs_HW3).sum(-1, keepdims=True) > 0  # face the camera
    normals_HW3 = np.where(flip, -normals_HW3, normals_HW3)
    # shadows: is the path from the (slightly lifted) hit point towards the light blocked?
    scene = o3d.t.geometry.RaycastingScene()
    for p in prims:
        scene.add_triangles(o3d.core.Tensor(p.vertices.astype(np.float32)), o3d.core.Tensor(p.triangles.astype(np.uint32)))
    eps = 1e-4 * max(1.0, float(np.abs(points_HW3[hit_HW]).max(initial=1.0)))  # off the surface, float32-safe
    origin_HW3 = points_HW3 + eps * normals_HW3
    shadow_rays = np.concatenate([origin_HW3, np.broadcast_to(light_3, origin_HW3.shape)], -1).astype(np.float32)
    lit_HW = ~scene.test_occlusions(o3d.core.Tensor(shadow_rays), tnear=1e-3).numpy().astype(bool)
    lambert_HW = np.clip(normals_HW3 @ light_3, 0, None) * lit_HW
    shade_HW = ambient + (1 - ambient) * lambert_HW
    image_HW3 = np.where(hit_HW[..., None], albedo_HW3 * shade_HW[..., None], 0.0)
    return {"image_HW3": np.round(np.clip(image_HW3, 0, 1) * 255).astype(np.uint8),
            "depth_HW": cast["depth_HW"].astype(np.float32), "hit_HW": hit_HW}


def render_procedural_scene(scene_id: int, image_size: tuple[int, int] = (48, 64), *, seed: int = 0,
                            min_depth: float = 0.1, max_depth: float = 10.0, hfov_deg: float = 60.0) -> dict[str, np.ndarray]:
    """Scene ``scene_id`` of family ``seed`` (deterministic): ``image`` (H, W, 3) uint8, ``depth`` (H, W)
    float32 metres (0 where invalid), ``valid`` (H, W) bool (hit and ``min_depth <= depth <= max_depth``),
    ``K`` (3, 3) float32."""
    rng = np.random.default_rng([seed, scene_id])
    K = pinhole_intrinsics(image_size, hfov_deg)
    prims, extrinsic, light = random_scene(rng, max_depth, hfov_deg)
    out = render_scene(prims, K, extrinsic, light, image_size, ambient=float(rng.uniform(0.2, 0.4)))
    depth = out["depth_HW"]
    valid = out["hit_HW"] & (depth >= min_depth) & (depth <= max_depth)
    return {"image": out["image_HW3"], "depth": np.where(valid, depth, 0.0).astype(np.float32), "valid": valid,
            "K": K.astype(np.float32)}


class ProceduralRGBDDataset(Dataset):
    """``size`` procedural scenes of one split; items ``{"image": (3, H, W) float [0, 1], "depth": (1, H, W)
    metres (0 = invalid), "valid": (1, H, W) bool, "K": (3, 3), "name": str}``.

    Args:
        split: "train", "val" or "test" (disjoint scene-id ranges, see :data:`SPLIT_OFFSETS`).
        size: number of scenes.
        image_size: (H, W).
        seed: scene family; the same (seed, split, index) always gives the same sample.
        min_depth, max_depth: metres; the layout keeps depths below ~0.9 max_depth, pixels outside are invalid.
        hfov_deg: horizontal field of view of the camera.
        cache: keep rendered samples in memory (8-bit image + float32 depth per scene).
    """

    def __init__(self, split: str = "train", size: int = 256, image_size: tuple[int, int] = (48, 64), seed: int = 0,
                 min_depth: float = 0.1, max_depth: float = 10.0, hfov_deg: float = 60.0, cache: bool = False):
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split must be one of {list(SPLIT_OFFSETS)}, got {split!r}")
        if not 0 <= size <= SPLIT_STRIDE:
            raise ValueError(f"size must be in [0, {SPLIT_STRIDE}], got {size}")
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (H, W) with positive sides, got {image_size}")
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.split, self.size, self.image_size, self.seed = split, size, (int(image_size[0]), int(image_size[1])), seed
        self.min_depth, self.max_depth, self.hfov_deg, self.cache = min_depth, max_depth, hfov_deg, cache
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.size

    def scene_id(self, index: int) -> int:
        """The global scene id of item ``index`` (its split's offset + index)."""
        return SPLIT_OFFSETS[self.split] + index

    def _render(self, index: int) -> dict[str, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        raw = render_procedural_scene(self.scene_id(index), self.image_size, seed=self.seed, min_depth=self.min_depth,
                                      max_depth=self.max_depth, hfov_deg=self.hfov_deg)
        if self.cache:
            self._cache[index] = raw
        return raw

    def render_all(self, num_workers: int = 0) -> None:
        """Render every scene into the in-memory cache (in parallel over ``num_workers`` processes)."""
        missing = [i for i in range(self.size) if i not in self._cache]
        if not missing:
            return
        if num_workers == 0:
            for i in missing:
                self._cache[i] = self._render(i)
            return
        loader = DataLoader(_RawRenders(self, missing), batch_size=None, num_workers=num_workers)
        for i, raw in zip(missing, loader):
            self._cache[i] = {k: v.numpy() for k, v in raw.items()}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} scenes")
        raw = self._render(index)
        return {"image": torch.from_numpy(raw["image"]).permute(2, 0, 1).float() / 255.0,
                "depth": torch.from_numpy(raw["depth"])[None], "valid": torch.from_numpy(raw["valid"])[None],
                "K": torch.from_numpy(raw["K"]), "name": f"procedural_s{self.seed}_{self.scene_id(index):08d}"}


class _RawRenders(Dataset):
    """Raw renders of chosen indices (for parallel filling of a cache)."""

    def __init__(self, ds: ProceduralRGBDDataset, indices: list[int]):
        self.ds, self.indices = ds, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return render_procedural_scene(self.ds.scene_id(self.indices[i]), self.ds.image_size, seed=self.ds.seed,
                                       min_depth=self.ds.min_depth, max_depth=self.ds.max_depth,
                                       hfov_deg=self.ds.hfov_deg)


class ProceduralDepthDataModule(L.LightningDataModule):
    """Procedural RGB-D scenes as a Lightning data module (batches: ``image``, ``depth``, ``valid``, ``K``,
    ``name``).

    Args:
        image_size: (H, W) of images and depth maps.
        train_size, val_size, test_size: scenes per split (disjoint scene ids).
        batch_size: batch size of all loaders.
        seed: scene family.
        num_workers: DataLoader workers (and parallel renderers when caching).
        cache: render each split once, when it is first set up, and serve it from memory afterwards (scenes
            are deterministic, so this changes nothing but speed); otherwise scenes are re-rendered per epoch.
        min_depth, max_depth: metres (valid range of the ground truth).
        hfov_deg: horizontal field of view.
    """

    def __init__(self, image_size: tuple[int, int] = (48, 64), train_size: int = 512, val_size: int = 64,
                 test_size: int = 64, batch_size: int = 16, seed: int = 0, num_workers: int = 0, cache: bool = True,
                 min_depth: float = 0.1, max_depth: float = 10.0, hfov_deg: float = 60.0):
        super().__init__()
        self.image_size, self.batch_size, self.seed = tuple(image_size), batch_size, seed
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.num_workers, self.cache = num_workers, cache
        self.min_depth, self.max_depth, self.hfov_deg = min_depth, max_depth, hfov_deg
        self.datasets: dict[str, ProceduralRGBDDataset] = {}

    def _dataset(self, split: str) -> ProceduralRGBDDataset:
        if split not in self.datasets:
            ds = ProceduralRGBDDataset(split, self.sizes[split], self.image_size, self.seed, self.min_depth,
                                       self.max_depth, self.hfov_deg, cache=self.cache)
            if self.cache:
                ds.render_all(self.num_workers)
            self.datasets[split] = ds
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "val", "test")):
            self._dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # with everything cached, workers would only copy memory around
        workers = 0 if self.cache else self.num_workers
        loader = ResumableDataLoader if shuffle else DataLoader
        return loader(self._dataset(split), self.batch_size, shuffle=shuffle, drop_last=shuffle,
                          num_workers=workers, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
