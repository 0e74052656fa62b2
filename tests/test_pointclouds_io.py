"""Point-cloud files: the real PCD encodings, round trips of every format, refusal of bad files, normalisation,
farthest point sampling and PLY export."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh

from scalear.datasets.pointclouds import (PointCloudError, farthest_point_sample, load_h5_point_clouds,
                                          load_point_cloud, normalize_points, save_ply)

# (file, DATA encoding, points, has normals) from ../shared/data/pointclouds/MANIFEST.md
REAL_PCD = [
    ("shapenet_partial_pcn/airplane.pcd", "ascii", 753, False),
    ("shapenet_partial_pcn/car.pcd", "ascii", 1511, False),
    ("shapenet_partial_pcn/chair.pcd", "ascii", 1193, False),
    ("scans_pcl/bunny.pcd", "ascii", 397, False),
    ("scans_pcl/bun0.pcd", "ascii", 397, True),
    ("scans_pcl/car6.pcd", "binary_compressed", 10031, False),
    ("scans_pcl/milk.pcd", "binary_compressed", 13704, False),
    ("scans_pcl/colored_cloud.pcd", "binary", 1000, True),
]


@pytest.mark.shared_data
@pytest.mark.parametrize("name, encoding, n, has_normals", REAL_PCD)
def test_real_pcd_encodings(shared_data, name, encoding, n, has_normals):
    path = shared_data / "pointclouds" / name
    with open(path, "rb") as f:
        assert f"DATA {encoding}".encode() in f.read(2048)
    points, normals = load_point_cloud(path, return_normals=True)
    assert points.shape == (n, 3) and points.dtype == np.float64 and np.isfinite(points).all()
    assert (normals is not None) == has_normals
    if has_normals:
        assert normals.shape == (n, 3)
        assert np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-3)


@pytest.mark.shared_data
def test_real_pcd_extents(shared_data):
    car6 = load_point_cloud(shared_data / "pointclouds/scans_pcl/car6.pcd")  # far from the origin (MANIFEST)
    assert -41 < car6[:, 0].min() and car6[:, 0].max() < -33 and -70 < car6[:, 1].min() < -60
    airplane = load_point_cloud(shared_data / "pointclouds/shapenet_partial_pcn/airplane.pcd")
    np.testing.assert_allclose(np.ptp(airplane, 0), [0.70, 0.20, 0.66], atol=0.01)


@pytest.mark.shared_data
def test_real_meshes_give_surface_samples(shared_data):
    meshes = shared_data / "meshes"
    for name in ("suzanne.ply", "ballA.off", "featuretype.STL"):  # suzanne.ply: a PLY with faces
        points, normals = load_point_cloud(meshes / name, return_normals=True, n_mesh_points=256, seed=1)
        assert points.shape == normals.shape == (256, 3) and np.isfinite(points).all(), name
        assert np.array_equal(points, load_point_cloud(meshes / name, n_mesh_points=256, seed=1))  # seeded
    for name, problem in (("soup.stl", "triangle soup"), ("notenoughindices.obj", "too few faces"),
                          ("empty.ply", "no points")):
        with pytest.raises(PointCloudError, match=f"{name}.*{problem}"):
            load_point_cloud(meshes / "bad" / name)


def test_text_npy_npz_round_trips(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    np.savetxt(tmp_path / "a.xyz", pts)
    np.savetxt(tmp_path / "b.txt", np.c_[pts, np.ones((50, 2))], delimiter=",", header="x,y,z,r,g")
    np.save(tmp_path / "c.npy", np.c_[pts, np.zeros((50, 3))])
    np.savez(tmp_path / "d.npz", points=pts, normals=np.tile([0.0, 1.0, 0.0], (50, 1)), other=np.zeros(3))
    np.savez(tmp_path / "e.npz", data=pts)
    np.savez(tmp_path / "f.npz", pts)
    for name in ("a.xyz", "b.txt", "c.npy", "d.npz", "e.npz", "f.npz"):
        out = load_point_cloud(tmp_path / name)
        assert out.dtype == np.float64 and out.shape == (50, 3), name  # as stored, not rounded to float32
        np.testing.assert_allclose(out, pts, rtol=1e-6, atol=1e-6, err_msg=name)
    _, normals = load_point_cloud(tmp_path / "d.npz", return_normals=True)
    assert np.array_equal(normals[:, 1], np.ones(50))
    np.savez(tmp_path / "g.npz", points=pts, normals=np.full((50, 3), np.nan))  # bad normals are dropped
    assert load_point_cloud(tmp_path / "g.npz", return_normals=True)[1] is None
    assert load_point_cloud(tmp_path / "a.xyz", return_normals=True)[1] is None


def test_modelnet_h5(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (5, 64, 3)).astype(np.float32)
    with h5py.File(tmp_path / "ply_data_train0.h5", "w") as f:  # the layout of modelnet40_ply_hdf5_2048
        f["data"] = data
        f["label"] = np.array([[3], [0], [7], [3], [39]], dtype=np.uint8)
        f["normal"] = np.zeros_like(data)
    points, labels = load_h5_point_clouds(tmp_path / "ply_data_train0.h5")
    assert points.shape == (5, 64, 3) and points.dtype == np.float32 and np.array_equal(points, data)
    assert labels.dtype == np.int64 and labels.tolist() == [3, 0, 7, 3, 39]
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["data"] = data[:1]
    assert np.array_equal(load_point_cloud(tmp_path / "one.h5"), data[0])
    with pytest.raises(PointCloudError, match="ply_data_train0.h5.*load_h5_point_clouds"):
        load_point_cloud(tmp_path / "ply_data_train0.h5")


def test_ply_point_cloud_and_mesh(tmp_path):
    pts = np.random.default_rng(1).uniform(-1, 1, (100, 3)).astype(np.float32)
    normals = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    save_ply(pts, tmp_path / "cloud.ply", normals=normals)
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    out, nrm = load_point_cloud(tmp_path / "cloud.ply", return_normals=True)
    np.testing.assert_allclose(out, pts, atol=1e-6)
    np.testing.assert_allclose(nrm, normals, atol=1e-6)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    for suffix in (".ply", ".obj", ".off", ".stl"):  # a PLY with faces is a mesh: its surface is sampled
        sphere.export(tmp_path / f"sphere{suffix}")
        out, nrm = load_point_cloud(tmp_path / f"sphere{suffix}", return_normals=True, n_mesh_points=300)
        assert out.shape == (300, 3) and nrm.shape == (300, 3), suffix
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 0.4, atol=0.01)


def _bad_files(tmp: Path) -> dict[str, str]:
    """name -> the problem its PointCloudError must mention."""
    (tmp / "empty.xyz").write_text("")
    (tmp / "empty.pcd").write_bytes(b"")
    (tmp / "blank.xyz").write_text("# only a comment\n")
    (tmp / "nan.xyz").write_text("nan 0 0\n1 nan 0\n")
    (tmp / "inf.txt").write_text("inf,0,0\n1,-inf,0\n")
    np.save(tmp / "flat.npy", np.zeros((10, 2)))
    np.save(tmp / "vector.npy", np.zeros(30))
    np.save(tmp / "zero.npy", np.zeros((0, 3)))
    (tmp / "corrupt.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    (tmp / "corrupt.pcd").write_bytes(bytes(range(256)) * 4)
    (tmp / "truncated.pcd").write_bytes(b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
                                        b"WIDTH 100\nHEIGHT 1\nPOINTS 100\nDATA binary\n" + b"\x00" * 40)
    (tmp / "corrupt.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\n")
    (tmp / "words.txt").write_text("hello world again\n")
    (tmp / "corrupt.h5").write_bytes(b"not hdf5 at all" * 10)
    with h5py.File(tmp / "nodata.h5", "w") as f:
        f["label"] = np.zeros((3, 1), dtype=np.int64)
    np.savez(tmp / "two.npz", a=np.zeros((4, 3)), b=np.zeros((4, 3)))
    (tmp / "broken.obj").write_text("v 0 0 0\nf 1 2 3\n")
    return {"empty.xyz": "empty", "empty.pcd": "empty", "blank.xyz": "empty|shape", "nan.xyz": "all 2 points hold NaN",
            "inf.txt": "NaN or infinite", "flat.npy": r"shape \(10, 2\)", "vector.npy": r"shape \(30,\)",
            "zero.npy": "empty", "corrupt.npy": "cannot read", "corrupt.pcd": "not a PCD",
            "truncated.pcd": "no points read", "corrupt.ply": "corrupt PLY", "words.txt": "cannot parse",
            "corrupt.h5": "cannot read HDF5", "nodata.h5": "no 'data'", "two.npz": "expected an array",
            "broken.obj": "broken.obj"}


def test_bad_files_raise_naming_the_file(tmp_path):
    for name, problem in _bad_files(tmp_path).items():
        with pytest.raises(PointCloudError, match=problem) as e:
            load_point_cloud(tmp_path / name)
        assert str(tmp_path / name) in str(e.value), name
    with pytest.raises(PointCloudError, match="nodata.h5.*no 'data'"):
        load_h5_point_clouds(tmp_path / "nodata.h5")
    (tmp_path / "a.las").write_text("x")
    with pytest.raises(PointCloudError, match="a.las.*unsupported"):
        load_point_cloud(tmp_path / "a.las")
    with pytest.raises(FileNotFoundError):
        load_point_cloud(tmp_path / "missing.pcd")


def _organized_pcd(path: Path, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """An organized ASCII PCD as a stereo rig writes it: WIDTH x HEIGHT points, NaN where no depth was found."""
    pts = rng.uniform(-1, 1, (width * height, 3))
    pts[rng.random(len(pts)) < 0.3] = np.nan
    header = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {width}\n"
              f"HEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {width * height}\nDATA ascii\n")
    path.write_text(header + "\n".join(" ".join("nan" if np.isnan(v) else f"{v:.6f}" for v in p) for p in pts) + "\n")
    return pts


def test_organized_pcd_with_nan_points_keeps_the_finite_ones(tmp_path):
    pts = _organized_pcd(tmp_path / "stereo.pcd", 32, 24, np.random.default_rng(0))
    finite = np.isfinite(pts).all(1)
    with pytest.warns(UserWarning, match=rf"stereo.pcd: dropped {(~finite).sum()} of 768 points with NaN"):
        out = load_point_cloud(tmp_path / "stereo.pcd")
    np.testing.assert_allclose(out, pts[finite], atol=1e-6)
    np.savez(tmp_path / "n.npz", points=np.array([[0.0, 0, 0], [np.nan, 1, 1], [1, 1, 1]]),
             normals=np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]))
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        p, n = load_point_cloud(tmp_path / "n.npz", return_normals=True)
    assert p.tolist() == [[0, 0, 0], [1, 1, 1]] and n.tolist() == [[0, 0, 1], [1, 0, 0]]  # normals follow


def test_georeferenced_xyz_keeps_its_precision(tmp_path):
    """UTM coordinates (~5.65e6 m) are spaced 0.5 m apart in float32; millimetre detail survives the loader in
    float64 and is centred before normalize_points casts to float32."""
    rng = np.random.default_rng(0)
    local = rng.uniform(0, 2.0, (400, 3))  # a 2 m object with millimetre detail
    utm = local + [512_345.678, 5_650_123.456, 210.5]
    np.savetxt(tmp_path / "scan.xyz", utm, fmt="%.4f")
    out = load_point_cloud(tmp_path / "scan.xyz")
    np.testing.assert_allclose(out - utm.min(0), local - local.min(0), atol=1e-4)
    unit = normalize_points(out)
    expect = normalize_points(local)
    np.testing.assert_allclose(unit, expect, atol=1e-4)  # float32 snapping would be 0.5 m / 2 m * 0.9 = 0.22
    assert np.unique(np.round(unit[:, 1], 4)).size > 300


def test_normalize_points():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3)) * [3.0, 1.0, 0.5] + [10.0, -4.0, 2.0]
    out = normalize_points(pts)
    lo, hi = out.min(0), out.max(0)
    assert out.dtype == np.float32 and np.all(out >= -0.45 - 1e-6) and np.all(out <= 0.45 + 1e-6)
    assert (hi - lo).max() == pytest.approx(0.9, abs=1e-6)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6)
    assert (np.ptp(normalize_points(pts, extent=1.0), 0)).max() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="zero extent"):
        normalize_points(np.ones((4, 3)))


def test_farthest_point_sample_covers_better_than_random():
    rng = np.random.default_rng(0)
    pts = (rng.normal(size=(3000, 3)) * [1.0, 0.3, 0.3]).astype(np.float32)
    sub, idx = farthest_point_sample(pts, 128, return_index=True)
    assert sub.shape == (128, 3) and len(np.unique(idx)) == 128
    assert np.array_equal(sub, pts[idx])

    def min_gap(p):
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        return d[np.triu_indices(len(p), 1)].min()

    def cover(p):  # largest distance of an input point to the subset
        return np.linalg.norm(pts[:, None] - p[None], axis=-1).min(1).max()

    rand = pts[rng.choice(len(pts), 128, replace=False)]
    assert min_gap(sub) > 3 * min_gap(rand) and cover(sub) < cover(rand)
    assert np.ptp(sub, 0)[0] >= 0.95 * np.ptp(pts, 0)[0]  # reaches the ends of the long axis
    dup = np.repeat(pts[:10], 5, axis=0)  # 10 distinct points, each 5 times
    _, idx = farthest_point_sample(dup, 10, return_index=True)
    assert len(np.unique(dup[idx], axis=0)) == 10
    assert farthest_point_sample(pts[:5], 8).shape == (5, 3)
