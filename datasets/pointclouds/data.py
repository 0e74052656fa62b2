"""Point-cloud datasets for G3PT: input clouds and, where a mesh exists, occupancy queries; the data module.

Sources (:func:`scan_point_cloud_folder`, :func:`h5_records`):

* the procedural meshes of SAR3D (chairs, tables, mugs, lamps; :func:`~scalear.datasets.meshes.write_procedural_set`);
* a folder of meshes (ShapeNetCore v2, ModelNet ``<class>/<train|test>/*.off``, generic ``<class>/*.obj``...:
  :func:`~scalear.datasets.meshes.scan_mesh_folder`) and / or of point-cloud files (``.pcd .xyz .txt .pts .npy
  .npz``, and PLY without faces) in the same layouts: the label is the first folder, a ``train`` / ``test``
  second folder is the split;
* ModelNet40 HDF5 files (PointNet's ``ply_data_{train,test}*.h5``: ``data`` (S, N, 3), ``label`` (S, 1)), one
  file or a folder of them; class names from ``shape_names.txt`` next to them when present, else the label
  number; the split from ``train`` / ``test`` in the file name.

Each object is preprocessed once into ``<cache_dir>/<label>-<object id>-<key>.npz`` (key = hash of the file's
bytes and the settings; written atomically). A mesh is loaded and normalised like SAR3D's
(:func:`~scalear.datasets.meshes.normalize_mesh`: bounding box centred, longest side 0.9, so it lies in
[-0.45, 0.45]^3); the cache holds a pool of surface samples with normals, their farthest point sample and a
pool of occupancy queries (half near the surface, surface samples + N(0, sigma^2) noise clipped to the cube,
half uniform in [-0.5, 0.5]^3) labelled inside / outside by the generalized winding number (:func:`~scalear.datasets.meshes.inside`: the union of
overlapping closed parts; open meshes inside where enclosed from more than half of all directions, and refused when
they enclose no volume). A point
cloud (file or HDF5 row) is normalised the same way (:func:`~.io.normalize_points`) and has no queries:
**occupancy needs a mesh**, so items of pure point clouds carry no ``"query"`` / ``"occupancy"``. With
``image_size`` set, a mesh's cache entry also holds :data:`~scalear.datasets.meshes.render.N_VIEWS` condition
renders (SAR3D's 4-channel depth + normals, :func:`~scalear.datasets.meshes.render_condition_image`), the image
condition of G3PT's image-to-3D generator. Items::

    {"points": (N, 3) float32 input cloud in [-0.45, 0.45]^3, N = n_points,
     "query": (Q, 3) float32 in [-0.5, 0.5]^3, "occupancy": (Q,) float32 in {0, 1}   (meshes only),
     "image": (4, S, S) float32 condition render, a random view in training, view 0 otherwise
              (meshes only, with image_size=S),
     "label": int64 class index, "name": str "<label>/<object id>"}

``points`` is the cached farthest point sample in evaluation and a random subset of the pool in training;
``query`` is the first Q of the (shuffled) pool in evaluation and a random Q of it in training. Clouds with
fewer than N points are filled up by repeating random points. A data set mixing meshes and point clouds
gives items with different keys, which the default collate function cannot batch: keep them apart.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from scalear.datasets.meshes.data import (MIN_ENCLOSURE, CachedObjectDataset, CachedSplitDataModule, _file_hash, _savez,
                                          split_records)
from scalear.datasets.meshes.folders import scan_mesh_folder
from scalear.datasets.meshes.io import MESH_SUFFIXES, MeshError, inspect_mesh, normalize_mesh
from scalear.datasets.meshes.render import N_VIEWS, render_condition_image
from scalear.datasets.meshes.sampling import enclosure, sample_sdf, sample_surface
from scalear.datasets.pointclouds.io import (
    H5_SUFFIXES,
    POINT_SUFFIXES,
    PointCloudError,
    _ply_faces,
    farthest_point_sample,
    load_h5_point_clouds,
    load_point_cloud,
    normalize_points,
)
from scalear.io import atomic_write

CACHE_VERSION = 2  # 2: occupancy by the generalized winding number (was ray parity)
POOL_FACTOR = 4  # surface samples and occupancy queries cached per object = POOL_FACTOR * n_points / n_query
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class PointCloudRecord:
    """One object: its file, class name, split (``"train"`` / ``"test"`` or None), object id, and for an HDF5
    file the row ``index`` of its cloud (None for other files)."""

    path: Path
    label: str
    split: str | None
    object_id: str
    index: int | None = None


def h5_records(path: str | Path) -> list[PointCloudRecord]:
    """The clouds of a ModelNet40 HDF5 file, or of every ``*.h5`` / ``*.hdf5`` file in a folder, as records."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in H5_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no HDF5 files (*.h5, *.hdf5) in {path}")
    records = []
    for f in files:
        names_file = f.parent / "shape_names.txt"
        names = names_file.read_text().split() if names_file.is_file() else None
        split = next((s for s in _SPLITS if s in f.stem.lower()), None)
        _, labels = load_h5_point_clouds(f)
        for i, lab in enumerate(labels.tolist()):
            label = names[lab] if names is not None and 0 <= lab < len(names) else str(lab)
            records.append(PointCloudRecord(f, label, split, f"{f.stem}_{i:05d}", i))
    return records


def scan_point_cloud_folder(root: str | Path) -> list[PointCloudRecord]:
    """The meshes (layouts of :func:`~scalear.datasets.meshes.scan_mesh_folder`) and point-cloud files
    (``<class>/[train|test/]<file>``, or ``"object"`` for files in the root) under ``root``, sorted by path.
    A folder with HDF5 files in it (ModelNet40's ``modelnet40_ply_hdf5_2048/``) is read by :func:`h5_records`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"point-cloud folder not found: {root}")
    if any(p.suffix.lower() in H5_SUFFIXES for p in root.iterdir()):  # modelnet40_ply_hdf5_2048/
        return h5_records(root)
    try:
        meshes = [PointCloudRecord(r.path, r.label, r.split, r.object_id) for r in scan_mesh_folder(root)]
    except ValueError:  # no mesh files
        meshes = []
    clouds = []
    suffixes = tuple(s for s in POINT_SUFFIXES if s not in MESH_SUFFIXES and s not in H5_SUFFIXES)
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        if not p.is_file() or p.suffix.lower() not in suffixes or any(s.startswith(".") for s in parts):
            continue
        label = parts[0] if len(parts) > 1 else "object"
        split = parts[1].lower() if len(parts) == 3 and parts[1].lower() in _SPLITS else None
        clouds.append(PointCloudRecord(p, label, split, p.stem))
    records = sorted(meshes + clouds, key=lambda r: str(r.path))
    if not records:
        raise ValueError(f"no mesh or point-cloud files found in {root}")
    return records


def is_mesh_record(rec: PointCloudRecord) -> bool:
    """Whether ``rec`` is a mesh (has faces: occupancy queries can be labelled), not a point cloud."""
    suffix = rec.path.suffix.lower()
    if rec.index is not None or suffix not in MESH_SUFFIXES:
        return False
    return suffix != ".ply" or _ply_faces(rec.path) > 0


def preprocess_object(rec: PointCloudRecord, settings: dict, seed: int,
                      points: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The cache entry of one object (see the module docstring); :class:`PointCloudError` if unusable.
    ``points`` (N, 3): the cloud of a point-cloud record when already read (e.g. an HDF5 row)."""
    rng = np.random.default_rng(seed)
    n_pool, n_points = settings["n_pool"], settings["n_points"]
    if not is_mesh_record(rec):
        if points is None:
            points = (load_h5_point_clouds(rec.path)[0][rec.index] if rec.index is not None
                      else load_point_cloud(rec.path))
        try:
            points = normalize_points(points)
        except ValueError as e:
            raise PointCloudError(f"{rec.path}: {e}") from e
        order = rng.permutation(len(points))
        return {"surface": points[order], "fps": farthest_point_sample(points, n_points)}
    try:
        mesh, info = inspect_mesh(rec.path)
        mesh = normalize_mesh(mesh)
        if not info.watertight and (e := enclosure(mesh)) < MIN_ENCLOSURE:
            raise MeshError(f"{rec.path}: open surface that encloses no volume (enclosure {e:.2f} < "
                            f"{MIN_ENCLOSURE}): no inside to label")
    except MeshError as e:
        raise PointCloudError(str(e)) from e
    surface, normals = sample_surface(mesh, n_pool, rng)
    n_query_pool = settings["n_query_pool"]
    n_near = int(round(settings["near_fraction"] * n_query_pool))
    query, sdf = sample_sdf(mesh, n_near, n_query_pool - n_near, settings["sigma"], rng)
    order = rng.permutation(n_query_pool)  # mix near and uniform queries: any prefix has the same proportions
    out = {"surface": surface, "normals": normals, "fps": farthest_point_sample(surface, n_points),
           "query": query[order], "occupancy": sdf[order] < 0}
    if settings.get("image_size"):
        views = [render_condition_image(mesh, v, settings["image_size"]) for v in range(N_VIEWS)]
        out["images"] = torch.stack(views).numpy().astype(np.float16)
    return out


class PointCloudDataset(CachedObjectDataset):
    """Input point clouds with occupancy queries where a mesh exists (items and caching: module docstring).

    ``records``: a list of :class:`PointCloudRecord`, a folder (:func:`scan_point_cloud_folder`) or an HDF5 file
    (:func:`h5_records`); ``split`` keeps the records of that split; ``image_size``: add condition renders of
    meshes (module docstring). Bad files are skipped with a warning and listed in ``skipped`` as ``(path,
    reason)``; ValueError when none is left. ``meshes_only`` skips point-cloud files the same way (evaluating
    occupancy needs a mesh). ``train`` (default: ``split ==
    "train"``) draws random points and queries per item; otherwise items are fixed. ``classes`` fixes the label
    order (default: the sorted labels of all given records, before the split filter).
    """

    unusable = (PointCloudError, FileNotFoundError)

    def __init__(self, records: Sequence[PointCloudRecord] | str | Path, cache_dir: str | Path,
                 n_points: int = 2048, n_query: int = 2048, near_fraction: float = 0.5, sigma: float = 0.01,
                 split: str | None = None, seed: int = 0, train: bool | None = None,
                 classes: Sequence[str] | None = None, image_size: int | None = None,
                 meshes_only: bool = False) -> None:
        if not 0 <= near_fraction <= 1:
            raise ValueError(f"near_fraction must be in [0, 1], got {near_fraction}")
        if n_points < 1 or n_query < 1:
            raise ValueError(f"n_points and n_query must be >= 1, got {n_points} and {n_query}")
        self.cache_dir = Path(cache_dir)
        self.n_points, self.n_query = n_points, n_query
        self.train = (split == "train") if train is None else train
        self.settings = {"version": CACHE_VERSION, "n_points": n_points, "n_pool": POOL_FACTOR * n_points,
                         "n_query_pool": POOL_FACTOR * n_query, "near_fraction": near_fraction, "sigma": sigma,
                         "seed": seed}
        if image_size:  # only then in the settings, so the cache keys of image-less data stay the same
            self.settings["image_size"] = int(image_size)
        hashes: dict[Path, str] = {}
        h5: dict[Path, np.ndarray] = {}  # HDF5 files read once, not once per row

        def cache_one(rec: PointCloudRecord) -> Path:
            if meshes_only and not is_mesh_record(rec):
                raise PointCloudError(f"{rec.path}: a point cloud (no faces); occupancy needs a mesh")
            return self._cached(rec, hashes, h5)

        if isinstance(records, (str, Path)):
            src = Path(records)
            all_records = h5_records(src) if src.is_file() else scan_point_cloud_folder(src)
        else:
            all_records = list(records)
        self._cache_split(all_records, split, classes, cache_one)

    def _cached(self, rec: PointCloudRecord, hashes: dict[Path, str], h5: dict[Path, np.ndarray]) -> Path:
        if not rec.path.is_file():
            raise FileNotFoundError(f"file not found: {rec.path}")
        if rec.path not in hashes:  # an HDF5 file holds many objects: hash it once
            hashes[rec.path] = _file_hash(rec.path)
        key_src = hashes[rec.path] + json.dumps({**self.settings, "index": rec.index}, sort_keys=True)
        key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
        safe_id = re.sub(r"[^\w.-]", "_", f"{rec.label}-{rec.object_id}")
        path = self.cache_dir / f"{safe_id}-{key}.npz"
        if not path.is_file():
            points = None
            if rec.index is not None:
                if rec.path not in h5:
                    h5[rec.path] = load_h5_point_clouds(rec.path)[0]
                points = h5[rec.path][rec.index]
            arrays = preprocess_object(rec, self.settings, int(key, 16) % 2**32, points)
            atomic_write(path, lambda p: _savez(p, arrays))
        return path

    def has_occupancy(self, i: int) -> bool:
        """Whether item ``i`` carries ``"query"`` / ``"occupancy"`` (its object is a mesh)."""
        with np.load(self.files[i]) as z:
            return "query" in z.files

    def _take(self, n_have: int, n: int) -> np.ndarray:
        """Indices of ``n`` of ``n_have`` items: random in training, the first ones otherwise; repeated random
        ones fill up when ``n_have < n``."""
        if n_have >= n:
            return torch.randperm(n_have)[:n].numpy() if self.train else np.arange(n)
        extra = torch.randint(n_have, (n - n_have,)).numpy() if self.train else \
            np.random.default_rng(n_have).integers(n_have, size=n - n_have)
        return np.concatenate([np.arange(n_have), extra])

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        with np.load(self.files[i]) as z:
            pool = z["surface"] if self.train else z["fps"]
            item = {"points": torch.from_numpy(pool[self._take(len(pool), self.n_points)].astype(np.float32))}
            if "query" in z.files:
                q = self._take(len(z["query"]), self.n_query)
                item["query"] = torch.from_numpy(z["query"][q].astype(np.float32))
                item["occupancy"] = torch.from_numpy(z["occupancy"][q].astype(np.float32))
            if "images" in z.files:
                view = int(torch.randint(len(z["images"]), ())) if self.train else 0
                item["image"] = torch.from_numpy(z["images"][view].astype(np.float32))
        item["label"] = torch.tensor(self.labels[i], dtype=torch.int64)
        item["name"] = f"{rec.label}/{rec.object_id}"
        return item


class PointCloudDataModule(CachedSplitDataModule):
    """Train / val :class:`PointCloudDataset` s of the procedural meshes (``root=None``: ``per_class +
    val_per_class`` objects of each of :data:`~scalear.datasets.meshes.PROCEDURAL_CLASSES` in
    ``<cache_dir>/procedural``, the last ``val_per_class`` of each class for validation), of a folder, or of a
    ModelNet40 HDF5 file / folder. A folder's or file's own train / test split is used when it has one (test ->
    val), else ``val_per_class`` objects per class are held out (:func:`~scalear.datasets.meshes.split_records`).
    ``image_size``: items of meshes also carry a condition render ``"image"`` of that side. ``meshes_only``: point-
    cloud files are skipped (listed in the datasets' ``skipped``), for training or scoring occupancy."""

    def __init__(self, root: str | None = None, cache_dir: str = "scalear_cache/pointclouds", per_class: int = 24,
                 val_per_class: int = 4, n_points: int = 2048, n_query: int = 2048, batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0, image_size: int | None = None,
                 meshes_only: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_dataset: PointCloudDataset | None = None
        self.val_dataset: PointCloudDataset | None = None

    def _records(self) -> tuple[list[PointCloudRecord], list[PointCloudRecord]]:
        hp = self.hparams
        if hp.root is None:
            return self._procedural_records(scan_point_cloud_folder)
        root = Path(hp.root)
        records = h5_records(root) if root.is_file() else scan_point_cloud_folder(root)
        return split_records(records, hp.val_per_class)

    def _dataset(self, records: list[PointCloudRecord], train: bool, classes: list[str]) -> PointCloudDataset:
        hp = self.hparams
        return PointCloudDataset(records, Path(hp.cache_dir) / "samples", n_points=hp.n_points, n_query=hp.n_query,
                                 seed=hp.seed, train=train, classes=classes, image_size=hp.image_size,
                                 meshes_only=hp.meshes_only)

