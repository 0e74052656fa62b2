"""Signed distances (winding-number sign), surface and SDF samples, SDF grids, and depth / normal renders."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from scalear.datasets.meshes import (
    camera_views,
    enclosure,
    grid_points,
    inside,
    load_mesh,
    normalize_mesh,
    render_condition_image,
    render_depth_normals,
    sample_sdf,
    sample_surface,
    sdf_grid,
    shaded_preview,
    signed_distance,
    winding_numbers,
)

R_SPHERE = 0.3


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=4, radius=R_SPHERE)


def _box_sdf(p: np.ndarray, half: np.ndarray) -> np.ndarray:
    q = np.abs(p) - half
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)


def test_sphere_sdf_matches_the_analytic_distance(sphere):
    p = np.random.default_rng(0).uniform(-0.5, 0.5, (3000, 3))
    d, exact = signed_distance(sphere, p), np.linalg.norm(p, axis=1) - R_SPHERE
    assert d.dtype == np.float32 and d.shape == (3000,)
    assert np.all(np.sign(d[np.abs(exact) > 2e-3]) == np.sign(exact[np.abs(exact) > 2e-3]))
    assert np.abs(d - exact).max() < 1.5e-3  # the icosphere's facets lie within 1e-3 of the sphere


def test_box_sdf_is_exact_and_negative_inside():
    half = np.array([0.3, 0.2, 0.1])
    box = trimesh.creation.box(extents=2 * half)
    p = np.random.default_rng(1).uniform(-0.5, 0.5, (2000, 3))
    assert np.abs(signed_distance(box, p) - _box_sdf(p, half)).max() < 1e-5
    assert signed_distance(box, np.zeros((1, 3)))[0] == pytest.approx(-0.1, abs=1e-6)


def test_open_mesh_sign_by_winding_number(sphere):
    """A sphere with a hole has no true inside; its centre is still enclosed from most directions: inside."""
    holed = sphere.copy()
    holed.update_faces(holed.face_normals[:, 2] < 0.95)  # cut a cap off the top
    assert not holed.is_watertight
    d = signed_distance(holed, np.array([[0, 0, 0], [0.1, -0.1, 0], [0, 0, 0.45], [0.45, 0, 0]]))
    assert d[0] < 0 and d[1] < 0 and d[2] > 0 and d[3] > 0


def test_winding_numbers_and_enclosure(sphere):
    w = winding_numbers(sphere, np.array([[0, 0, 0], [0.1, 0.2, 0], [0.45, 0.45, 0.45]]))
    assert np.allclose(w, [1, 1, 0], atol=1e-5)
    assert enclosure(sphere, 12) == 1.0
    cyl = trimesh.creation.cylinder(0.3, 0.8, sections=24)
    half = cyl.copy()
    half.update_faces((cyl.triangles_center[:, 0] > 0) & (np.abs(cyl.face_normals[:, 2]) < 0.5))  # an open shell
    assert enclosure(half, 16) < 0.05
    holed = sphere.copy()
    holed.update_faces(holed.face_normals[:, 2] < 0.95)
    assert enclosure(holed, 16) > 0.5


def _union_of_boxes(boxes: list[tuple[tuple, tuple]]) -> trimesh.Trimesh:
    """Closed boxes (extents, centre) concatenated into one mesh without boolean merging: parts overlap."""
    return trimesh.util.concatenate([trimesh.creation.box(extents=e).apply_translation(c) for e, c in boxes])


def _in_boxes(p: np.ndarray, boxes: list[tuple[tuple, tuple]]) -> np.ndarray:
    return np.any([np.all(np.abs(p - np.array(c)) < np.array(e) / 2, axis=1) for e, c in boxes], axis=0)


@pytest.mark.parametrize("name, boxes", [
    ("overlapping", [((0.6, 0.4, 0.4), (-0.1, 0, 0)), ((0.4, 0.6, 0.4), (0.1, 0, 0))]),
    ("nested", [((0.8, 0.8, 0.8), (0, 0, 0)), ((0.3, 0.3, 0.3), (0.05, 0, 0))]),
    ("touching", [((0.4, 0.4, 0.4), (-0.2, 0, 0)), ((0.4, 0.4, 0.4), (0.2, 0, 0))]),  # they share a face
])
def test_points_inside_overlapping_closed_parts_are_inside(name, boxes):
    """Ray parity calls points inside two parts outside (an even number of crossings); the winding number counts
    them (2) and the union rule keeps them inside. Checked against the analytic union away from the surfaces."""
    mesh = _union_of_boxes(boxes)
    p = np.random.default_rng(0).uniform(-0.5, 0.5, (20000, 3))
    truth = _in_boxes(p, boxes)
    d = signed_distance(mesh, p)
    clear = np.abs(d) > 1e-4
    assert ((d < 0) == truth)[clear].mean() == 1.0, name
    both = _in_boxes(p, boxes[:1]) & _in_boxes(p, boxes[1:])
    if both.any():
        assert (d[both] < 0).all() and np.allclose(winding_numbers(mesh, p[both]), 2, atol=1e-4)


def test_inverted_closed_part_counts_as_solid():
    box = trimesh.creation.box(extents=(0.4, 0.4, 0.4))
    box.invert()  # faces point inwards: winding number -1 inside
    assert signed_distance(box, np.zeros((1, 3)))[0] == pytest.approx(-0.2, abs=1e-6)


@pytest.mark.shared_data
def test_multi_part_real_meshes_follow_the_winding_number(shared_data):
    """The armchair (4 closed parts that touch and overlap) and an open multi-part chair: the SDF sign agrees with
    the winding-number rule on >= 99.9% of uniform and near-surface points, and the armchair's volume inside
    the grid matches the union of its parts."""
    import igl

    for name in ("objects/armchair.obj", "chair_model.obj"):
        mesh = normalize_mesh(load_mesh(shared_data / "meshes" / name))
        rng = np.random.default_rng(0)
        near, _ = sample_surface(mesh, 4000, rng)
        p = np.concatenate([rng.uniform(-0.5, 0.5, (6000, 3)), near + rng.normal(0, 0.01, near.shape)])
        w = igl.winding_number(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64), p)
        assert ((signed_distance(mesh, p) < 0) == (np.abs(w) > 0.5)).mean() >= 0.999, name
        assert (inside(mesh, p) == (np.abs(w) > 0.5)).all()


def test_surface_samples_lie_on_the_surface_with_outward_unit_normals(sphere):
    pts, n = sample_surface(sphere, 500, np.random.default_rng(0))
    assert pts.dtype == np.float32 and pts.shape == n.shape == (500, 3)
    assert np.abs(signed_distance(sphere, pts)).max() < 1e-5
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert (np.sum(n * pts, 1) / np.linalg.norm(pts, axis=1)).min() > 0.99


def test_sample_sdf_near_and_uniform(sphere):
    sigma = 0.01
    p, d = sample_sdf(sphere, 400, 600, sigma, np.random.default_rng(0))
    assert p.shape == (1000, 3) and d.shape == (1000,) and p.dtype == d.dtype == np.float32
    assert np.abs(p).max() <= 0.5
    exact = np.linalg.norm(p, axis=1) - R_SPHERE
    assert np.abs(d - exact).max() < 1.5e-3
    near, uni = np.abs(d[:400]), d[400:]
    assert np.median(near) < 1.5 * sigma and near.max() < 6 * sigma
    assert abs((uni < 0).mean() - 4 / 3 * np.pi * R_SPHERE**3) < 0.05  # uniform: the inside share is the volume


def test_sdf_grid_axis_order_and_volume():
    """grid[i, j, k] is at (x_i, y_j, z_k): a box long in x, short in y, shifted to +z shows it."""
    box = trimesh.creation.box(extents=(0.8, 0.2, 0.4)).apply_translation((0, 0, 0.05))
    R = 16
    g = sdf_grid(box, R)
    assert g.shape == (R, R, R) and g.dtype == np.float32
    c = grid_points(R)
    assert np.allclose(c[3, 5, 7], [(3.5 / R) - 0.5, (5.5 / R) - 0.5, (7.5 / R) - 0.5])
    assert np.abs(g - _box_sdf(c - [0, 0, 0.05], np.array([0.4, 0.1, 0.2]))).max() < 1e-5
    inside = g < 0
    assert inside.any(axis=(1, 2)).sum() > inside.any(axis=(0, 1)).sum() > inside.any(axis=(0, 2)).sum()
    assert inside[:, :, R // 2 + 3].any() and not inside[:, :, R // 2 - 4].any()  # shifted to +z


@pytest.mark.shared_data
def test_real_closed_mesh_grid_volume(shared_data):
    mesh = normalize_mesh(load_mesh(shared_data / "meshes" / "objects" / "spot.obj"))
    g = sdf_grid(mesh, 24)
    assert (g < 0).mean() == pytest.approx(mesh.volume, rel=0.15)
    pts, _ = sample_surface(mesh, 200, np.random.default_rng(0))
    assert np.abs(signed_distance(mesh, pts)).max() < 1e-5


def test_depth_render_of_a_sphere(sphere):
    eye = np.array([0.0, 0.0, 2.0])
    depth, normals, mask = render_depth_normals(sphere, eye, size=33, fov=40.0)
    assert depth.shape == mask.shape == (33, 33) and normals.shape == (33, 33, 3)
    assert depth[16, 16] == pytest.approx(2.0 - R_SPHERE, abs=2e-3)  # centre pixel: z-depth to the pole
    assert np.all(np.isinf(depth[~mask])) and np.all(normals[~mask] == 0)
    assert np.allclose(np.linalg.norm(normals[mask], axis=-1), 1, atol=1e-5)
    f = 33 / 2 / np.tan(np.radians(20))  # projected disc of radius f * r / sqrt(d^2 - r^2) pixels
    r_px = f * R_SPHERE / np.sqrt(4 - R_SPHERE**2)
    assert mask.sum() == pytest.approx(np.pi * r_px**2, rel=0.08)
    assert (normals[mask] @ (eye / 2)).min() > 0  # facing the camera


def test_render_orientation_and_normals_face_the_camera(sphere):
    """y up, row 0 at the top, column 0 on the left; a sphere at +x +y shows in the top-right quadrant."""
    moved = sphere.copy().apply_scale(0.5).apply_translation((0.3, 0.3, 0.0))
    eye = camera_views(4)[1]
    _, _, mask = render_depth_normals(moved, np.array([0.0, 0.0, 2.0]), size=32)
    rows, cols = np.nonzero(mask)
    assert rows.max() < 16 and cols.min() >= 16
    _, normals, mask = render_depth_normals(sphere, eye, size=24)
    assert (normals[mask] @ (eye / np.linalg.norm(eye))).min() > 0


def test_camera_views():
    v = camera_views(6, radius=2.5, elevation=30)
    assert v.shape == (6, 3) and np.allclose(np.linalg.norm(v, axis=1), 2.5)
    assert np.allclose(np.degrees(np.arcsin(v[:, 1] / 2.5)), 30)
    assert len(np.unique(np.round(np.arctan2(v[:, 0], v[:, 2]), 6))) == 6


def test_condition_image_range_and_background(sphere):
    img = render_condition_image(sphere, 0, size=24)
    assert img.shape == (4, 24, 24) and img.dtype.is_floating_point
    assert img.min() >= 0 and img.max() <= 1
    fg = img[0] > 0
    assert 0.05 < fg.float().mean() < 0.5 and (img[:, ~fg] == 0).all()
    n = img[1:, fg] * 2 - 1  # camera-space normals: z points at the camera on the visible side
    assert (n[2] > -1e-3).all() and np.allclose(n.norm(dim=0), 1, atol=1e-4)
    assert not np.allclose(render_condition_image(sphere.copy().apply_translation((0.1, 0, 0)), 2, 24), img)


def test_shaded_preview_writes_a_grey_object_on_white(tmp_path, sphere):
    path = shaded_preview(sphere, tmp_path / "p.png", size=32, views=4)
    a = np.asarray(Image.open(path))
    assert a.shape == (64, 64, 3) and (a[0, 0] == 255).all()
    obj = a[(a < 250).any(-1)]
    assert len(obj) > 200 and obj.max() < 250 and obj.min() > 40
    assert shaded_preview(sphere, tmp_path / "one.png", size=16, views=1).is_file()
    assert not list(tmp_path.glob("*.tmp"))
