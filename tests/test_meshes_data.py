"""Mesh folder layouts, the cached SDF dataset (cache reuse, bad meshes skipped) and the data module."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import trimesh

import scalear.datasets.meshes.data as data_mod
from scalear.datasets.meshes import (
    PROCEDURAL_CLASSES,
    MeshDataModule,
    MeshSDFDataset,
    scan_mesh_folder,
    split_records,
    write_procedural_set,
)
from conftest import (check_cache_is_reused_and_keyed_by_settings, check_data_module_config_parses_like_lightning_cli,
                      check_procedural_data_module)

TINY = dict(grid_resolution=8, n_points=64, n_surface=32, image_size=16)
KEYS = {"grid", "points", "sdf", "surface", "normals", "image", "label", "name"}


def _box(path, size=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.creation.box((size, size * 0.5, size * 0.7)).export(path)


def test_shapenet_layout(tmp_path):
    for syn, model in [("03001627", "1a2b"), ("03001627", "3c4d"), ("04379243", "5e6f"), ("09999999", "7a8b")]:
        _box(tmp_path / syn / model / "models" / "model_normalized.obj")
    _box(tmp_path / ".hidden" / "x" / "models" / "model_normalized.obj")
    recs = scan_mesh_folder(tmp_path)
    assert [(r.label, r.object_id, r.split) for r in recs] == [
        ("chair", "1a2b", None), ("chair", "3c4d", None), ("table", "5e6f", None), ("09999999", "7a8b", None)]


def test_modelnet_generic_and_flat_layouts(tmp_path):
    for rel in ["chair/train/chair_0001.off", "chair/test/chair_0002.off", "bed/train/bed_0001.off",
                "bed/train/.bed_0009.off"]:
        _box(tmp_path / "mn" / rel)
    recs = scan_mesh_folder(tmp_path / "mn")
    assert [(r.label, r.split, r.object_id) for r in recs] == [
        ("bed", "train", "bed_0001"), ("chair", "test", "chair_0002"), ("chair", "train", "chair_0001")]
    _box(tmp_path / "gen" / "mug" / "a.stl")
    _box(tmp_path / "gen" / "lamp" / "sub" / "b.ply")
    assert [(r.label, r.split) for r in scan_mesh_folder(tmp_path / "gen")] == [("lamp", None), ("mug", None)]
    _box(tmp_path / "flat" / "thing.obj")
    (tmp_path / "flat" / "notes.txt").write_text("not a mesh")
    assert [(r.label, r.object_id) for r in scan_mesh_folder(tmp_path / "flat")] == [("object", "thing")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no mesh files.*empty"):
        scan_mesh_folder(tmp_path / "empty")


def test_split_records_is_deterministic_and_disjoint(tmp_path):
    for c in ("a", "b"):
        for i in range(5):
            _box(tmp_path / c / f"{c}{i}.obj")
    recs = scan_mesh_folder(tmp_path)
    train, val = split_records(recs, val_per_class=2)
    assert len(val) == 4 and {r.label for r in val} == {"a", "b"} and not set(train) & set(val)
    assert split_records(list(reversed(recs)), 2)[1] == val or set(split_records(recs[::-1], 2)[1]) == set(val)


@pytest.fixture(scope="module")
def procedural_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("procedural")
    write_procedural_set(folder, per_class=2, seed=0)
    return folder


def test_dataset_items(procedural_folder, tmp_path):
    ds = MeshSDFDataset(procedural_folder, tmp_path / "cache", **TINY)
    assert ds.classes == sorted(PROCEDURAL_CLASSES) and len(ds) == 8 and ds.skipped == []
    for i in (0, 5):
        item = ds[i]
        assert set(item) == KEYS
        R, S = TINY["grid_resolution"], TINY["image_size"]
        assert item["grid"].shape == (1, R, R, R) and item["image"].shape == (4, S, S)
        assert item["points"].shape == (64, 3) and item["sdf"].shape == (64,) and item["surface"].shape == (32, 3)
        assert all(item[k].dtype == torch.float32 for k in KEYS - {"label", "name"})
        assert item["label"].dtype == torch.int64 and ds.classes[item["label"]] == ds.label_names[i]
        assert item["name"].startswith(ds.label_names[i] + "/")
        assert item["points"].abs().max() <= 0.5 and (item["grid"] < 0).any() and (item["grid"] > 0).any()
        assert (item["sdf"] < 0).any() and (item["sdf"] > 0).any()
        assert torch.allclose(item["normals"].norm(dim=1), torch.ones(32), atol=1e-4)
    a, b = ds[3], ds[3]  # not train: fixed samples and view 0
    assert torch.equal(a["points"], b["points"]) and torch.equal(a["image"], b["image"])


def test_train_items_are_random_draws_from_the_cached_pool(procedural_folder, tmp_path):
    ds = MeshSDFDataset(procedural_folder, tmp_path / "cache", train=True, **TINY)
    items = [ds[0] for _ in range(6)]
    assert not torch.equal(items[0]["points"], items[1]["points"])
    assert len({tuple(it["image"].flatten()[:: 37].tolist()) for it in items}) > 1  # several views
    with np.load(ds.files[0]) as z:
        pool = {tuple(p) for p in z["points"].tolist()}
    assert all(tuple(p) in pool for p in items[0]["points"].tolist())


def test_cache_is_reused_and_keyed_by_settings(procedural_folder, tmp_path, monkeypatch):
    check_cache_is_reused_and_keyed_by_settings(
        monkeypatch, data_mod, "preprocess_mesh",
        lambda **kw: MeshSDFDataset(procedural_folder, tmp_path / "cache", **{**TINY, **kw}),
        n_objects=8, other_settings={"sigma": 0.02}, item=2, key="grid")


@pytest.mark.shared_data
def test_bad_meshes_are_skipped_and_named(procedural_folder, tmp_path, shared_data):
    folder = tmp_path / "meshes"
    shutil.copytree(procedural_folder / "mug", folder / "mug")
    shutil.copy(shared_data / "meshes" / "bad" / "soup.stl", folder / "mug" / "soup.stl")
    shutil.copy(shared_data / "meshes" / "bad" / "empty.ply", folder / "mug" / "empty.ply")
    xy = np.stack(np.meshgrid(np.linspace(0, 1, 4), np.linspace(0, 1, 4), indexing="ij"), -1).reshape(-1, 2)
    q = np.array([[i * 4 + j, i * 4 + j + 4, i * 4 + j + 1, i * 4 + j + 1, i * 4 + j + 4, i * 4 + j + 5]
                  for i in range(3) for j in range(3)]).reshape(-1, 3)
    trimesh.Trimesh(np.c_[xy, np.zeros(16)], q).export(folder / "mug" / "sheet.ply")  # flat: no inside
    with pytest.warns(UserWarning) as warned:
        ds = MeshSDFDataset(folder, tmp_path / "cache", **TINY)
    skips = [str(w.message) for w in warned if str(w.message).startswith("skipping mesh")]
    assert len(skips) == 3 and all(any(n in m for m in skips) for n in ("empty.ply", "sheet.ply", "soup.stl"))
    assert len(ds) == 2 and {p.name for p, _ in ds.skipped} == {"soup.stl", "empty.ply", "sheet.ply"}
    reasons = {p.name: reason for p, reason in ds.skipped}
    assert "triangle soup" in reasons["soup.stl"] and "encloses no volume" in reasons["sheet.ply"]
    assert all(name in reason for name, reason in reasons.items())
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(shared_data / "meshes" / "bad" / "soup.stl", only_bad / "soup.stl")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 meshes.*soup"):
        MeshSDFDataset(only_bad, tmp_path / "cache", **TINY)


def test_data_module_on_the_procedural_set(tmp_path):
    dm = MeshDataModule(cache_dir=str(tmp_path / "c"), per_class=2, val_per_class=1, grid_resolution=8,
                        n_points=32, image_size=16, batch_size=3)
    batch = check_procedural_data_module(dm, n_train=8, n_val=4)
    assert batch["grid"].shape == (3, 1, 8, 8, 8) and batch["image"].shape == (3, 4, 16, 16)


def test_data_module_config_parses_like_lightning_cli():
    check_data_module_config_parses_like_lightning_cli(MeshDataModule, "meshes/", {"cache_dir": "scalear_cache/meshes"})
