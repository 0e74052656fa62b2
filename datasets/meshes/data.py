"""SDF datasets of meshes for SAR3D: a per-mesh preprocessing cache, the dataset, the Lightning data module.

Each mesh is loaded (:func:`~.io.inspect_mesh`), normalised to the longest side 0.9 in [-0.5, 0.5]^3 and
preprocessed once into ``<cache_dir>/<object id>-<key>.npz`` (key = hash of the file's bytes and the
settings): the SDF grid, a pool of SDF samples, surface points with normals, and :data:`~.render.N_VIEWS`
condition renders. Items are::

    {"grid": (1, R, R, R) float32 SDF at voxel centres, grid[0, i, j, k] at (x_i, y_j, z_k),
     "points": (N, 3) float32 in [-0.5, 0.5]^3, "sdf": (N,) float32 (negative inside),
     "surface": (M, 3) float32, "normals": (M, 3) float32 unit outward,
     "image": (4, S, S) float32 condition render (see render_condition_image),
     "label": int64 class index, "name": str}
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from scalear.datasets.meshes.folders import MeshRecord, scan_mesh_folder
from scalear.datasets.meshes.io import MeshError, inspect_mesh, normalize_mesh
from scalear.datasets.meshes.procedural import PROCEDURAL_CLASSES, write_procedural_set
from scalear.datasets.meshes.render import N_VIEWS, render_condition_image
from scalear.datasets.meshes.sampling import enclosure, sample_sdf, sample_surface, sdf_grid
from scalear.io import atomic_write
from scalear.training.loader import ResumableDataLoader

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # 3: SDF sign by the generalized winding number (was ray parity)
POOL_FACTOR = 4  # SDF samples cached per mesh = POOL_FACTOR * n_points
MIN_ENCLOSURE = 0.2  # open meshes below this (see sampling.enclosure) have no usable inside


def preprocess_mesh(path: Path, settings: dict, seed: int) -> dict[str, np.ndarray]:
    """The cache entry of one mesh (arrays named as in the module docstring); :class:`MeshError` if unusable."""
    mesh, info = inspect_mesh(path)
    mesh = normalize_mesh(mesh)
    rng = np.random.default_rng(seed)
    grid = sdf_grid(mesh, settings["grid_resolution"])
    n_pool = settings["n_pool"]
    n_near = int(round(settings["near_fraction"] * n_pool))
    points, sdf = sample_sdf(mesh, n_near, n_pool - n_near, settings["sigma"], rng)
    if not info.watertight and (e := enclosure(mesh)) < MIN_ENCLOSURE:  # e.g. an open sheet
        raise MeshError(f"{path}: open surface that encloses no volume (enclosure {e:.2f} < {MIN_ENCLOSURE}: "
                        "rays disagree on its inside)")
    order = rng.permutation(n_pool)  # mix near and uniform samples, so any prefix has the same proportions
    surface, normals = sample_surface(mesh, settings["n_surface"], rng)
    images = torch.stack([render_condition_image(mesh, v, settings["image_size"]) for v in range(N_VIEWS)])
    return {"grid": grid, "points": points[order], "sdf": sdf[order], "surface": surface, "normals": normals,
            "images": images.numpy().astype(np.float16), "watertight": np.array(info.watertight)}


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
        np.savez(f, **arrays)


def _file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CachedObjectDataset(Dataset):
    """What the mesh and point-cloud datasets share: the records of one split, each preprocessed once into a cache
    file (``files``); unusable ones skipped with a warning and listed in ``skipped`` as ``(path, reason)``;
    ``labels`` index ``classes`` (default: the sorted labels of all given records, before the split filter)."""

    #: what one record is and what several are, in messages
    item, items = "object", "objects"
    #: the errors that make one record unusable (skipped) rather than the whole dataset
    unusable: tuple[type[Exception], ...] = (FileNotFoundError,)

    def _cache_split(self, all_records: Sequence, split: str | None, classes: Sequence[str] | None,
                     cache_one: Callable[[Any], Path]) -> None:
        """Set ``classes``, ``records``, ``files``, ``skipped`` and ``labels`` from the records of ``split``."""
        self.classes: list[str] = list(classes) if classes is not None else sorted({r.label for r in all_records})
        recs = [r for r in all_records if split is None or r.split == split]
        if not recs:
            raise ValueError(f"no {self.items} with split {split!r} among {len(all_records)} records")
        self.records: list = []
        self.files: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        for rec in tqdm(recs, desc=f"{self.items} -> {self.cache_dir}", leave=False):
            try:
                self.files.append(cache_one(rec))
                self.records.append(rec)
            except self.unusable as e:
                self.skipped.append((rec.path, str(e)))
                warnings.warn(f"skipping {self.item}: {e}", stacklevel=3)
        if not self.records:
            raise ValueError(f"none of the {len(recs)} {self.items} could be used; reasons: "
                             + "; ".join(reason for _, reason in self.skipped[:5]))
        if unknown := sorted({r.label for r in self.records} - set(self.classes)):
            raise ValueError(f"labels {unknown} are not among classes {self.classes}")
        self.labels = [self.classes.index(r.label) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)


class MeshSDFDataset(CachedObjectDataset):
    """Meshes as SDF grids, SDF samples, surface samples and condition renders (items: module docstring).

    ``records`` is a list of :class:`MeshRecord` or a folder for :func:`scan_mesh_folder`; ``split`` keeps
    the records of that split. Bad meshes are skipped with a warning and listed in ``skipped`` as
    ``(path, reason)``. ``train`` (default: ``split == "train"``) draws random samples and a random view per
    item; otherwise items are fixed (the first N cached samples, view 0). ``classes`` fixes the label order
    (default: the sorted labels of all given records, before the split filter).
    """

    item, items = "mesh", "meshes"
    unusable = (MeshError, FileNotFoundError)

    def __init__(self, records: Sequence[MeshRecord] | str | Path, cache_dir: str | Path,
                 grid_resolution: int = 32, n_points: int = 4096, near_fraction: float = 0.5, sigma: float = 0.01,
                 n_surface: int = 2048, image_size: int = 64, split: str | None = None, seed: int = 0,
                 train: bool | None = None, classes: Sequence[str] | None = None) -> None:
        if not 0 <= near_fraction <= 1:
            raise ValueError(f"near_fraction must be in [0, 1], got {near_fraction}")
        self.cache_dir = Path(cache_dir)
        self.n_points, self.train = n_points, (split == "train") if train is None else train
        self.settings = {"version": CACHE_VERSION, "grid_resolution": grid_resolution, "n_pool": POOL_FACTOR * n_points,
                         "near_fraction": near_fraction, "sigma": sigma, "n_surface": n_surface,
                         "image_size": image_size, "n_views": N_VIEWS, "seed": seed}
        all_records = scan_mesh_folder(records) if isinstance(records, (str, Path)) else list(records)
        self._cache_split(all_records, split, classes, self._cached)
        self.label_names: list[str] = [r.label for r in self.records]  # per item

    def _cached(self, rec: MeshRecord) -> Path:
        if not rec.path.is_file():
            raise FileNotFoundError(f"mesh file not found: {rec.path}")
        key_src = _file_hash(rec.path) + json.dumps(self.settings, sort_keys=True)
        key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
        path = self.cache_dir / f"{rec.label}-{rec.object_id}-{key}.npz"
        if not path.is_file():
            arrays = preprocess_mesh(rec.path, self.settings, int(key, 16) % 2**32)
            atomic_write(path, lambda p: _savez(p, arrays))
        return path

    def __getitem__(self, i: int) -> dict:
        with np.load(self.files[i]) as z:
            points, sdf, images = z["points"], z["sdf"], z["images"]
            if self.train:
                idx = torch.randperm(len(points))[: self.n_points].numpy()
                view = int(torch.randint(len(images), ()))
            else:
                idx, view = np.arange(min(self.n_points, len(points))), 0
            rec = self.records[i]
            return {"grid": torch.from_numpy(z["grid"][None].astype(np.float32)),
                    "points": torch.from_numpy(points[idx].astype(np.float32)),
                    "sdf": torch.from_numpy(sdf[idx].astype(np.float32)),
                    "surface": torch.from_numpy(z["surface"].astype(np.float32)),
                    "normals": torch.from_numpy(z["normals"].astype(np.float32)),
                    "image": torch.from_numpy(images[view].astype(np.float32)),
                    "label": torch.tensor(self.labels[i], dtype=torch.int64),
                    "name": f"{rec.label}/{rec.object_id}"}


def split_records(records: Sequence[MeshRecord], val_per_class: int) -> tuple[list[MeshRecord], list[MeshRecord]]:
    """(train, val): the recognised split when the records have one ("test" -> val), else per class the
    ``val_per_class`` objects whose ids hash lowest (deterministic; at least one object stays in train)."""
    if any(r.split is not None for r in records):
        return [r for r in records if r.split != "test"], [r for r in records if r.split == "test"]
    train, val = [], []
    for label in sorted({r.label for r in records}):
        group = sorted((r for r in records if r.label == label),
                       key=lambda r: hashlib.sha1(r.object_id.encode()).hexdigest())
        k = min(val_per_class, len(group) - 1)
        val += group[:k]
        train += group[k:]
    return train, val


class CachedSplitDataModule(L.LightningDataModule):
    """What the mesh and point-cloud data modules share: ``setup()`` builds ``train_dataset`` and ``val_dataset``
    (None without held-out objects) from a subclass's ``_records()`` and ``_dataset()``; ``prepare_data`` fills the
    cache once; ``classes`` and the loaders (``hparams.batch_size``, ``hparams.num_workers``) come from them."""

    train_dataset: Dataset | None = None
    val_dataset: Dataset | None = None
    #: what the held-out items are, for the error when there are none
    val_items: str = "objects"

    def _records(self) -> tuple[list, list]:
        """(train, val) records."""
        raise NotImplementedError

    def _dataset(self, records: list, train: bool, classes: list[str]) -> Dataset:
        """The dataset of ``records`` (``train``: random draws per item) with the label order ``classes``."""
        raise NotImplementedError

    def _procedural_records(self, scan: Callable[[Path], list]) -> tuple[list, list]:
        """(train, val) records of the procedural set in ``<cache_dir>/procedural`` (written once), read by
        ``scan``: per class the objects numbered below ``per_class`` for training, the next ``val_per_class``
        for validation."""
        hp = self.hparams
        n = hp.per_class + hp.val_per_class
        folder = Path(hp.cache_dir) / "procedural"
        write_procedural_set(folder, n, hp.seed)
        number = lambda r: int(r.object_id.rsplit("_", 1)[1])  # noqa: E731
        records = [r for r in scan(folder) if r.label in PROCEDURAL_CLASSES and number(r) < n]
        return [r for r in records if number(r) < hp.per_class], [r for r in records if number(r) >= hp.per_class]

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train, val = self._records()
        classes = sorted({r.label for r in train + val})
        self.train_dataset = self._dataset(train, train=True, classes=classes)
        self.val_dataset = self._dataset(val, train=False, classes=classes) if val else None

    def prepare_data(self) -> None:
        self.setup()  # writes the procedural set and the cache once (rank 0); setup() on each rank reads it

    @property
    def classes(self) -> list[str]:
        if self.train_dataset is None:
            self.setup()
        return self.train_dataset.classes

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return ResumableDataLoader(self.train_dataset, batch_size=self.hparams.batch_size, shuffle=True,
                                   drop_last=False,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        if self.val_dataset is None:
            raise ValueError(f"no validation {self.val_items}: set val_per_class > 0 or use data with a test split")
        return DataLoader(self.val_dataset, batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers)


class MeshDataModule(CachedSplitDataModule):
    """Train / val :class:`MeshSDFDataset` s of a mesh folder, or of the procedural set (``root=None``:
    ``per_class + val_per_class`` objects of each of :data:`PROCEDURAL_CLASSES` in ``<cache_dir>/procedural``)."""

    val_items = "meshes"

    def __init__(self, root: str | None = None, cache_dir: str = "scalear_cache/meshes", per_class: int = 24,
                 val_per_class: int = 4, grid_resolution: int = 32, n_points: int = 4096, image_size: int = 64,
                 batch_size: int = 8, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_dataset: MeshSDFDataset | None = None
        self.val_dataset: MeshSDFDataset | None = None

    def _records(self) -> tuple[list[MeshRecord], list[MeshRecord]]:
        if self.hparams.root is None:
            return self._procedural_records(scan_mesh_folder)
        return split_records(scan_mesh_folder(self.hparams.root), self.hparams.val_per_class)

    def _dataset(self, records: list[MeshRecord], train: bool, classes: list[str]) -> MeshSDFDataset:
        hp = self.hparams
        return MeshSDFDataset(records, Path(hp.cache_dir) / "samples", grid_resolution=hp.grid_resolution,
                              n_points=hp.n_points, image_size=hp.image_size, seed=hp.seed, train=train,
                              classes=classes)

