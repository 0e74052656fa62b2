"""Procedural RGB-D scenes: exact z-depth from open3d ray casting, determinism, splits and the data module."""

import math
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("open3d")

from scalear.datasets import procedural_rgbd as pr  # noqa: E402
from scalear.datasets.procedural_rgbd import (  # noqa: E402
    ProceduralDepthDataModule,
    ProceduralRGBDDataset,
    cast_depth,
    look_extrinsic,
    pinhole_intrinsics,
    render_procedural_scene,
)

SIZE = (48, 64)


def plane_facing_camera(extrinsic_44: np.ndarray, z: float, half: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """A square at camera-frame depth ``z``, perpendicular to the optical axis, in world coordinates."""
    corners_cam = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    cam_to_world = np.linalg.inv(extrinsic_44)
    corners_w = corners_cam @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    return corners_w, np.array([[0, 1, 2], [0, 2, 3]])


@pytest.mark.parametrize("extrinsic", [np.eye(4), look_extrinsic(np.array([0.3, -1.0, 1.5]), yaw=0.2, pitch=0.25)])
def test_plane_gives_z_depth_not_ray_length(extrinsic):
    K = pinhole_intrinsics(SIZE, hfov_deg=90.0)  # wide, so d / cos at the corners would be far off (x1.6)
    d = 3.0
    out = cast_depth([plane_facing_camera(extrinsic, d)], K, extrinsic, SIZE)
    assert out["hit_HW"].all()
    np.testing.assert_allclose(out["depth_HW"], d, rtol=1e-5)


def test_sphere_nearest_depth_at_the_centre_pixel():
    size = (49, 65)  # odd sides: the principal point (24, 32) is a pixel centre, its ray is the optical axis
    K = pinhole_intrinsics(size)
    assert (K[0, 2], K[1, 2]) == (32.0, 24.0)
    import open3d as o3d

    dist, radius = 5.0, 1.25
    m = o3d.t.geometry.TriangleMesh.create_sphere(radius=radius, resolution=24)  # a vertex at each pole (on z)
    verts = m.vertex.positions.numpy().astype(np.float64) + [0.0, 0.0, dist]
    out = cast_depth([(verts, m.triangle.indices.numpy())], K, np.eye(4), size)
    depth = out["depth_HW"]
    assert depth[24, 32] == pytest.approx(dist - radius, rel=1e-6)
    assert depth[out["hit_HW"]].min() == pytest.approx(dist - radius, rel=1e-6)
    assert depth[23, 32] > depth[24, 32] and depth[24, 33] > depth[24, 32]
    # apparent radius in pixels: the silhouette's half-angle is asin(r / d)
    row = np.flatnonzero(out["hit_HW"][24])
    half_width = (row.max() - row.min() + 1) / 2
    assert half_width == pytest.approx(K[0, 0] * math.tan(math.asin(radius / dist)), abs=1.5)


def test_hit_points_project_back_to_their_own_pixels():
    # K's convention: pixel (v, u) looks along K^-1 [u, v, 1] (OpenCV, integer pixel centres)
    ext = look_extrinsic(np.array([0.0, 0.0, 1.2]), yaw=0.1, pitch=0.2)
    K = pinhole_intrinsics(SIZE)
    out = cast_depth([plane_facing_camera(ext, 4.0)], K, ext, SIZE)
    p_cam = out["points_HW3"] @ ext[:3, :3].T + ext[:3, 3]
    np.testing.assert_allclose(p_cam[..., 2], out["depth_HW"], rtol=1e-6)
    uv = (p_cam @ K.T)[..., :2] / p_cam[..., 2:]
    v, u = np.mgrid[: SIZE[0], : SIZE[1]]
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-3)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-3)


def test_determinism_and_different_scenes():
    a, b = render_procedural_scene(3, SIZE, seed=1), render_procedural_scene(3, SIZE, seed=1)
    for k in ("image", "depth", "valid", "K"):
        assert np.array_equal(a[k], b[k]), k
    c, d = render_procedural_scene(4, SIZE, seed=1), render_procedural_scene(3, SIZE, seed=2)
    for other in (c, d):
        assert not np.array_equal(a["depth"], other["depth"]) and not np.array_equal(a["image"], other["image"])
    ds1, ds2 = ProceduralRGBDDataset("train", 2, SIZE, seed=1), ProceduralRGBDDataset("train", 2, SIZE, seed=1, cache=True)
    for key in ("image", "depth", "valid", "K"):
        assert torch.equal(ds1[1][key], ds2[1][key])
    assert ds1[1]["name"] == ds2[1]["name"]


def test_splits_use_disjoint_scene_ids():
    sets = {s: {ProceduralRGBDDataset(s, 1000).scene_id(i) for i in range(1000)} for s in ("train", "val", "test")}
    assert sets["train"] == set(range(1000))
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert ProceduralRGBDDataset("val", 1)[0]["name"] != ProceduralRGBDDataset("train", 1)[0]["name"]
    assert not torch.equal(ProceduralRGBDDataset("val", 1)[0]["depth"], ProceduralRGBDDataset("train", 1)[0]["depth"])
    with pytest.raises(ValueError, match="split must be one of"):
        ProceduralRGBDDataset("holdout", 1)


@pytest.mark.parametrize("max_depth", [10.0, 80.0])
def test_depth_range_and_appearance(max_depth):
    ds = ProceduralRGBDDataset("test", 4, SIZE, min_depth=0.1, max_depth=max_depth)
    for i in range(len(ds)):
        s = ds[i]
        valid, depth, image = s["valid"], s["depth"], s["image"]
        assert valid.float().mean() > 0.99  # every ray ends on the ground, the wall or an object
        assert depth[valid].min() >= 0.1 and depth[valid].max() <= max_depth
        assert (depth[~valid] == 0).all()
        assert depth[valid].max() > 0.5 * max_depth  # the back wall is far, the scene spans the range
        assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.05
        colours = torch.unique((image * 255).round().reshape(3, -1), dim=1).shape[1]
        assert colours > 100  # textures and shading, not flat fills
        K = s["K"]
        assert K[0, 0] == pytest.approx(32 / math.tan(math.radians(30))) and K[0, 2] == 31.5 and K[1, 2] == 23.5


def test_datamodule_batches_and_cache(monkeypatch):
    dm = ProceduralDepthDataModule(image_size=SIZE, train_size=4, val_size=2, test_size=2, batch_size=2, cache=True)
    dm.setup("fit")

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again although cached")

    monkeypatch.setattr(pr, "render_procedural_scene", no_render)  # everything must now come from memory
    for _ in range(2):  # two epochs
        batches = list(dm.train_dataloader())
        assert len(batches) == 2
    b = batches[0]
    assert b["image"].shape == (2, 3, *SIZE) and b["image"].dtype == torch.float32
    assert b["depth"].shape == (2, 1, *SIZE) and b["depth"].dtype == torch.float32
    assert b["valid"].shape == (2, 1, *SIZE) and b["valid"].dtype == torch.bool
    assert b["K"].shape == (2, 3, 3) and len(b["name"]) == 2
    val = next(iter(dm.val_dataloader()))
    assert val["name"] == ["procedural_s0_10000000", "procedural_s0_10000001"]
    monkeypatch.undo()
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["image"].shape == (2, 3, *SIZE)


def test_missing_open3d_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open3d", None)  # makes `import open3d` fail
    with pytest.raises(ImportError, match=r"scalear\[3d\]"):
        render_procedural_scene(0, SIZE)
