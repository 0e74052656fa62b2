"""Mesh loading, repair and normalisation (real meshes from ../shared/data/meshes), and the procedural objects."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from scalear.datasets.meshes import (
    PROCEDURAL_CLASSES,
    MeshError,
    inspect_mesh,
    load_mesh,
    make_shape,
    normalize_mesh,
    signed_distance,
    write_procedural_set,
)

CLOSED = ["fandisk.obj", "ballA.off", "featuretype.STL", "objects/spot.obj", "objects/nut.ply",
          "objects/mushroom.off", "objects/armchair.obj"]
OPEN = ["suzanne.ply", "objects/model24765.obj", "objects/airplane.ply", "objects/bathtub_0154.ply"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", CLOSED)
def test_closed_real_meshes_load_watertight(shared_data, name):
    mesh, info = inspect_mesh(shared_data / "meshes" / name)
    assert info.watertight and mesh.is_watertight and mesh.is_volume
    assert info.n_faces == len(mesh.faces) >= 400


@pytest.mark.shared_data
@pytest.mark.parametrize("name", OPEN)
def test_open_real_meshes_load_with_a_note(shared_data, name):
    mesh, info = inspect_mesh(shared_data / "meshes" / name)
    assert not info.watertight
    assert any("open surface" in n for n in info.notes)


@pytest.mark.shared_data
@pytest.mark.parametrize("name, reason", [("empty.ply", "empty"), ("notenoughindices.obj", "too few faces"),
                                          ("soup.stl", "triangle soup")])
def test_bad_meshes_raise_naming_the_file(shared_data, name, reason):
    with pytest.raises(MeshError, match=reason) as e:
        load_mesh(shared_data / "meshes" / "bad" / name)
    assert name in str(e.value)


@pytest.mark.shared_data
def test_wallhole_is_kept_as_an_open_surface(shared_data):
    """The wall with a hole is loaded (cleaned) but stays open: its inside is left to the winding number."""
    mesh, info = inspect_mesh(shared_data / "meshes" / "bad" / "wallhole.obj")
    assert not info.watertight and any("degenerate" in n for n in info.notes)
    assert any("open surface" in n for n in info.notes)


def test_corrupt_and_degenerate_files_raise(tmp_path):
    (tmp_path / "garbage.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\n\x00\x01")
    (tmp_path / "point.obj").write_text("v 1 1 1\nv 1 1 1\nv 1 1 1\n" + "f 1 2 3\n" * 5)
    (tmp_path / "mesh.xyz").write_text("1 2 3\n")
    for name in ("garbage.ply", "point.obj", "mesh.xyz"):
        with pytest.raises(MeshError) as e:
            load_mesh(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_mesh(tmp_path / "missing.obj")


@pytest.mark.parametrize("fmt", ["obj", "ply", "off", "stl", "glb"])
def test_formats_roundtrip_and_scenes_concatenate(tmp_path, fmt):
    a = trimesh.creation.box((1, 2, 3))
    b = trimesh.creation.icosphere(1, 0.5).apply_translation((3, 0, 0))
    path = tmp_path / f"two.{fmt}"
    trimesh.Scene([a, b]).export(path) if fmt == "glb" else trimesh.util.concatenate([a, b]).export(path)
    mesh, info = inspect_mesh(path)
    assert len(mesh.faces) == len(a.faces) + len(b.faces) and info.watertight and info.n_components == 2
    assert np.allclose(mesh.bounds, [[-0.5, -1, -1.5], [3.5, 1, 1.5]], atol=1e-5)


def test_missing_material_file_is_tolerated(tmp_path):
    path = tmp_path / "box.obj"
    path.write_text("mtllib nowhere.mtl\nusemtl wood\n" + trimesh.creation.box().export(file_type="obj"))
    assert load_mesh(path).is_watertight


def test_normalize_fits_the_unit_cube():
    rng = np.random.default_rng(0)
    mesh = trimesh.creation.box((3.0, 7.0, 1.0)).apply_translation(rng.normal(size=3) * 50)
    before = mesh.vertices.copy()
    out = normalize_mesh(mesh)
    assert np.isclose(out.extents.max(), 0.9) and np.allclose(out.bounds.sum(0), 0, atol=1e-9)
    assert np.allclose(out.extents / out.extents.max(), mesh.extents / mesh.extents.max())
    assert np.array_equal(mesh.vertices, before)  # the input is not changed
    assert np.abs(normalize_mesh(mesh, extent=0.5).vertices).max() <= 0.25 + 1e-9


def _top_slab_aspect(mesh: trimesh.Trimesh) -> float:
    """x / z spread of the surface in the top 10 % of the height (a disc: 1, a chair's back: thin)."""
    pts = mesh.sample(3000, seed=0)
    top = pts[pts[:, 1] > mesh.bounds[1, 1] - 0.1 * mesh.extents[1]]
    ex, ez = np.ptp(top[:, 0]), np.ptp(top[:, 2])
    return min(ex, ez) / max(ex, ez)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_procedural_shapes_are_watertight_and_distinct(seed):
    shapes = {c: make_shape(c, np.random.default_rng(seed)) for c in PROCEDURAL_CLASSES}
    for cls, m in shapes.items():
        assert m.is_watertight and m.is_volume and len(m.split(only_watertight=False)) == 1, cls
        assert np.isclose(m.extents.max(), 0.9) and np.allclose(m.bounds.sum(0), 0, atol=1e-6)
    chair, table, mug, lamp = (shapes[c] for c in ("chair", "table", "mug", "lamp"))
    assert table.extents[1] < max(table.extents[0], table.extents[2])  # tables: wider than tall (y up)
    assert lamp.extents[1] == pytest.approx(0.9) and lamp.extents[0] == pytest.approx(lamp.extents[2], rel=0.02)
    assert _top_slab_aspect(lamp) > 0.9 and _top_slab_aspect(chair) < 0.3  # a shade vs a chair's back
    assert mug.euler_number == 0 and all(s.euler_number == 2 for s in (chair, table, lamp))  # the handle
    # the cup is hollow: below the rim, the body's axis is outside the solid (the handle shifts the body in -x;
    # the body's diameter is the z extent)
    body_x, rim_y = mug.bounds[0, 0] + mug.extents[2] / 2, mug.bounds[1, 1] - 0.05
    assert signed_distance(mug, np.array([[body_x, rim_y, 0.0]]))[0] > 0
    assert signed_distance(lamp, np.array([[0.0, lamp.bounds[1, 1] - 0.05, 0.0]]))[0] < 0


def test_procedural_is_deterministic_and_varies():
    a, b = make_shape("chair", np.random.default_rng(5)), make_shape("chair", np.random.default_rng(5))
    c = make_shape("chair", np.random.default_rng(6))
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    assert not np.allclose(a.extents, c.extents)
    with pytest.raises(ValueError, match="unknown procedural class"):
        make_shape("sofa", np.random.default_rng(0))


def test_write_procedural_set_is_idempotent(tmp_path):
    paths = write_procedural_set(tmp_path, per_class=1, seed=3)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [f"{c}/{c}_000.obj" for c in PROCEDURAL_CLASSES]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert write_procedural_set(tmp_path, per_class=1, seed=3) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    other = write_procedural_set(tmp_path / "b", per_class=1, seed=3, classes=("mug", "chair"))
    assert np.array_equal(load_mesh(other[1]).vertices, load_mesh(paths[0]).vertices)  # keyed by class name
    write_procedural_set(tmp_path, per_class=1, seed=4)  # another seed: rewritten
    assert not np.array_equal(load_mesh(paths[0]).vertices, load_mesh(other[1]).vertices)
    for p in paths:
        mesh, info = inspect_mesh(p)
        assert info.watertight, p
    assert not list(tmp_path.rglob("*.tmp"))
