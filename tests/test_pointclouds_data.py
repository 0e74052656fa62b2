"""Point-cloud datasets: items, occupancy of a known shape, caching, bad files, HDF5, the data module."""

import shutil

import h5py
import numpy as np
import pytest
import torch
import trimesh

from scalear.datasets.pointclouds import (
    PointCloudDataModule,
    PointCloudDataset,
    h5_records,
    save_ply,
    scan_point_cloud_folder,
)
from scalear.datasets.pointclouds import data as data_mod
from conftest import (check_cache_is_reused_and_keyed_by_settings, check_data_module_config_parses_like_lightning_cli,
                      check_procedural_data_module)

TINY = dict(n_points=128, n_query=256)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """ball/ball_0.obj (a sphere, radius 0.3 before normalisation) and box/box_0.off, plus a point-cloud class."""
    root = tmp_path_factory.mktemp("shapes")
    (root / "ball").mkdir()
    (root / "box").mkdir()
    (root / "scan").mkdir()
    trimesh.creation.icosphere(subdivisions=4, radius=0.3).export(root / "ball" / "ball_0.obj")
    trimesh.creation.box(extents=(0.2, 0.4, 0.8)).export(root / "box" / "box_0.off")
    pts = np.random.default_rng(0).normal(size=(300, 3)) * [2.0, 1.0, 1.0] + 5.0
    np.savetxt(root / "scan" / "scan_0.xyz", pts)
    save_ply(pts[:100], root / "scan" / "scan_1.ply")  # a PLY without faces: a point cloud
    return root


def test_scan_point_cloud_folder(shapes):
    recs = scan_point_cloud_folder(shapes)
    assert [(r.label, r.object_id) for r in recs] == [("ball", "ball_0"), ("box", "box_0"), ("scan", "scan_0"),
                                                      ("scan", "scan_1")]


def test_items_and_sphere_occupancy(shapes, tmp_path):
    ds = PointCloudDataset(shapes, tmp_path / "cache", **TINY)
    assert ds.classes == ["ball", "box", "scan"] and len(ds) == 4 and not ds.skipped
    ball = ds[0]
    assert set(ball) == {"points", "query", "occupancy", "label", "name"}
    assert ball["points"].shape == (128, 3) and ball["points"].dtype == torch.float32
    assert ball["query"].shape == (256, 3) and ball["occupancy"].shape == (256,)
    assert ball["occupancy"].dtype == torch.float32 and set(ball["occupancy"].unique().tolist()) <= {0.0, 1.0}
    assert ball["label"].dtype == torch.int64 and ball["label"].item() == 0 and ball["name"] == "ball/ball_0"
    assert ball["query"].abs().max() <= 0.5
    # normalised to the longest side 0.9: the sphere has radius 0.45; surface points lie on it
    torch.testing.assert_close(ball["points"].norm(dim=1), torch.full((128,), 0.45), atol=0.005, rtol=0)
    r = ball["query"].norm(dim=1)
    clear = (r - 0.45).abs() > 0.005  # the icosphere is within 0.002 of the true sphere
    assert torch.equal(ball["occupancy"][clear], (r[clear] < 0.45).float())
    near = ((r - 0.45).abs() < 0.05).float().mean()
    assert 0.4 < near < 0.8  # half near the surface (plus the uniform ones that happen to be near)
    assert 0.2 < ball["occupancy"].mean() < 0.8
    box = ds[1]["points"]
    np.testing.assert_allclose(box.amax(0) - box.amin(0), [0.225, 0.45, 0.9], atol=0.02)
    for i in (2, 3):  # point clouds: normalised, no occupancy
        item = ds[i]
        assert set(item) == {"points", "label", "name"} and item["points"].shape == (128, 3)
        assert (item["points"].amax(0) - item["points"].amin(0)).max() <= 0.9 + 1e-6
        assert ds.has_occupancy(i) is False
    assert ds.has_occupancy(0)
    # evaluation items are fixed; scan_1 has only 100 points: filled up by repetition
    assert torch.equal(ds[3]["points"], ds[3]["points"]) and len(ds[3]["points"].unique(dim=0)) == 100
    train = PointCloudDataset(shapes, tmp_path / "cache", train=True, **TINY)
    a, b = train[0], train[0]
    assert not torch.equal(a["points"], b["points"]) and not torch.equal(a["query"], b["query"])


def test_condition_renders_of_meshes_with_image_size(shapes, tmp_path):
    """image_size adds the 4-channel depth + normal render (SAR3D's) to mesh items: a random view in training,
    view 0 in evaluation; point clouds have none; without image_size the cache keys do not change."""
    from scalear.datasets.meshes.io import load_mesh, normalize_mesh
    from scalear.datasets.meshes.render import render_condition_image

    plain = PointCloudDataset(shapes, tmp_path / "cache", **TINY)
    ds = PointCloudDataset(shapes, tmp_path / "cache", image_size=32, **TINY)
    assert "image" not in plain[0] and set(plain.files).isdisjoint(ds.files)
    assert PointCloudDataset(shapes, tmp_path / "cache", **TINY).files == plain.files
    img = ds[0]["image"]
    assert img.shape == (4, 32, 32) and img.dtype == torch.float32
    truth = render_condition_image(normalize_mesh(load_mesh(shapes / "ball" / "ball_0.obj")), 0, 32)
    torch.testing.assert_close(img, truth, atol=2e-3, rtol=0)  # float16 in the cache
    assert "image" not in ds[2]  # a point cloud
    train = PointCloudDataset(shapes, tmp_path / "cache", image_size=32, train=True, **TINY)
    views = {tuple(train[1]["image"].flatten()[::97].tolist()) for _ in range(12)}
    assert len(views) > 1  # the box looks different from different views


def test_cache_is_reused_and_keyed_by_settings(shapes, tmp_path, monkeypatch):
    check_cache_is_reused_and_keyed_by_settings(
        monkeypatch, data_mod, "preprocess_object",
        lambda **kw: PointCloudDataset(shapes, tmp_path / "cache", **{**TINY, **kw}),
        n_objects=4, other_settings={"n_query": 64}, item=0, key="query")


def test_bad_files_are_skipped_and_named(shapes, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(shapes / "scan", folder / "scan")
    (folder / "scan" / "nan.xyz").write_text("0 0 0\nnan 1 1\n")
    np.save(folder / "scan" / "flat.npy", np.zeros((5, 2)))
    (folder / "scan" / "junk.pcd").write_bytes(b"\x00" * 100)
    with pytest.warns(UserWarning) as warned:
        ds = PointCloudDataset(folder, tmp_path / "cache", **TINY)
    skips = [str(w.message) for w in warned if str(w.message).startswith("skipping")]
    assert len(skips) == 3 and all(any(n in m for m in skips) for n in ("nan.xyz", "flat.npy", "junk.pcd"))
    assert len(ds) == 2 and {p.name for p, _ in ds.skipped} == {"nan.xyz", "flat.npy", "junk.pcd"}
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "nan.xyz").write_text("nan 0 0\n")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 objects.*nan.xyz"):
        PointCloudDataset(only_bad, tmp_path / "cache", **TINY)


def test_modelnet_h5_dataset(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "modelnet40_ply_hdf5_2048"
    folder.mkdir()
    (folder / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    for name, n in (("ply_data_train0.h5", 6), ("ply_data_test0.h5", 3)):
        with h5py.File(folder / name, "w") as f:
            f["data"] = rng.uniform(-1, 1, (n, 256, 3)).astype(np.float32)
            f["label"] = (np.arange(n) % 3).astype(np.uint8)[:, None]
    recs = h5_records(folder)
    assert len(recs) == 9 and {r.split for r in recs} == {"train", "test"}
    assert [r.label for r in recs if r.split == "test"] == ["airplane", "bathtub", "bed"]
    ds = PointCloudDataset(folder / "ply_data_train0.h5", tmp_path / "cache", **TINY)
    assert len(ds) == 6 and ds.classes == ["airplane", "bathtub", "bed"]
    item = ds[4]
    assert set(item) == {"points", "label", "name"} and item["points"].shape == (128, 3)
    assert item["label"].item() == 1 and item["name"] == "bathtub/ply_data_train0_00004"
    dm = PointCloudDataModule(root=str(folder), cache_dir=str(tmp_path / "dm"), n_points=64, batch_size=4)
    dm.setup()
    assert len(dm.train_dataset) == 6 and len(dm.val_dataset) == 3
    assert next(iter(dm.train_dataloader()))["points"].shape == (4, 64, 3)


def test_data_module_on_the_procedural_set(tmp_path):
    dm = PointCloudDataModule(cache_dir=str(tmp_path / "c"), per_class=1, val_per_class=1, n_points=64,
                              n_query=128, batch_size=3)
    batch = check_procedural_data_module(dm, n_train=4, n_val=4)
    assert set(batch) == {"points", "query", "occupancy", "label", "name"}
    assert batch["points"].shape == (3, 64, 3) and batch["query"].shape == (3, 128, 3)
    assert batch["occupancy"].shape == (3, 128) and 0 < batch["occupancy"].mean() < 1


def test_data_module_config_parses_like_lightning_cli():
    check_data_module_config_parses_like_lightning_cli(
        PointCloudDataModule, "clouds/",
        {"cache_dir": "scalear_cache/pointclouds", "n_points": 2048, "n_query": 2048, "batch_size": 16})
