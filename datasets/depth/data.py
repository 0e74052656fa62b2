"""Lightning data modules for NYU Depth v2 and KITTI, and the training augmentation (resize, random crop, flip).

The datasets themselves live in :mod:`scalear.datasets.depth`; here they are only wired into loaders. Test
and validation loaders return uncropped, unaugmented samples (batch size 1 by default, since KITTI frame sizes
differ between recording days); the evaluation protocol crops at scoring time.
"""

from __future__ import annotations

from typing import Literal, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from scalear.datasets.depth import KittiDepthDataset, NyuFolderDataset, NyuLabeledDataset
from scalear.datasets.loaders import split_loader


class DepthAugment:
    """Training augmentation of a sample dict: optional resize, random crop, random horizontal flip.

    Args:
        crop_size: (H, W) of the random crop (None: no crop); the image must be at least this large.
        resize: (H, W) to resize to first (None: keep); the image is resized bilinearly, depth and valid by
            nearest neighbour (never blending depths across edges), and ``focal`` is scaled by the width ratio.
        hflip: flip left-right with probability 1/2.
        generator: random source (default: torch's global one).
    """

    def __init__(self, crop_size: tuple[int, int] | None = None, resize: tuple[int, int] | None = None,
                 hflip: bool = True, generator: torch.Generator | None = None):
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.resize = tuple(resize) if resize is not None else None
        self.hflip, self.generator = hflip, generator

    def __call__(self, sample: dict) -> dict:
        out = dict(sample)
        image_3HW, depth_1HW = sample["image"], sample["depth"]
        valid_1HW = sample.get("valid", depth_1HW > 0)
        if self.resize is not None and tuple(image_3HW.shape[-2:]) != self.resize:
            w0 = image_3HW.shape[-1]
            image_3HW = F.interpolate(image_3HW[None], self.resize, mode="bilinear", align_corners=False,
                                      antialias=True)[0].clamp(0, 1)
            depth_1HW = F.interpolate(depth_1HW[None], self.resize, mode="nearest")[0]
            valid_1HW = F.interpolate(valid_1HW[None].float(), self.resize, mode="nearest")[0] > 0.5
            if "focal" in out:
                out["focal"] = float(out["focal"]) * self.resize[1] / w0
        if self.crop_size is not None:
            H, W = image_3HW.shape[-2:]
            ch, cw = self.crop_size
            if H < ch or W < cw:
                raise ValueError(f"{sample.get('name', 'sample')}: {H}x{W} is smaller than the crop {ch}x{cw}")
            top = int(torch.randint(0, H - ch + 1, (1,), generator=self.generator))
            left = int(torch.randint(0, W - cw + 1, (1,), generator=self.generator))
            sl = (..., slice(top, top + ch), slice(left, left + cw))
            image_3HW, depth_1HW, valid_1HW = image_3HW[sl], depth_1HW[sl], valid_1HW[sl]
        if self.hflip and torch.rand((), generator=self.generator) < 0.5:
            image_3HW, depth_1HW, valid_1HW = image_3HW.flip(-1), depth_1HW.flip(-1), valid_1HW.flip(-1)
        out.update(image=image_3HW.contiguous(), depth=depth_1HW.contiguous(), valid=valid_1HW.contiguous())
        return out


class TransformedDataset(Dataset):
    """``dataset`` with ``transform`` applied to every sample."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict:
        return self.transform(self.dataset[i])


class _DepthDataModule(L.LightningDataModule):
    """Loaders over ``self._make(split)``; subclasses say how a split's dataset is built."""

    def __init__(self, batch_size: int, test_batch_size: int, num_workers: int, crop_size: Sequence[int] | None,
                 resize: Sequence[int] | None, hflip: bool):
        super().__init__()
        self.batch_size, self.test_batch_size, self.num_workers = batch_size, test_batch_size, num_workers
        self.augment = DepthAugment(tuple(crop_size) if crop_size else None, tuple(resize) if resize else None, hflip)
        self.datasets: dict[str, Dataset] = {}

    def _make(self, split: Literal["train", "test"]) -> Dataset:
        raise NotImplementedError

    def dataset(self, split: Literal["train", "test"]) -> Dataset:
        """The dataset of ``split`` (built once)."""
        if split not in self.datasets:
            self.datasets[split] = self._make(split)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        for split in {"fit": ("train", "test"), "validate": ("test",), "test": ("test",)}.get(stage or "", ("test",)):
            self.dataset(split)

    def train_dataloader(self) -> DataLoader:
        return split_loader(TransformedDataset(self.dataset("train"), self.augment), self.batch_size, shuffle=True,
                            num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return split_loader(self.dataset("test"), self.test_batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class NyuDepthDataModule(_DepthDataModule):
    """NYU Depth v2 from the labeled .mat (official 795/654 split) or from folders of RGB + millimetre PNGs.

    Args:
        mat_path: ``nyu_depth_v2_labeled.mat``; needs ``splits_file`` (``splits.mat``) for train/test.
        splits_file: the official ``splits.mat``.
        depth_key: ``"depths"`` (filled) or ``"rawDepths"`` (raw, holes = 0), for the .mat.
        root: folder of RGB/depth pairs (instead of ``mat_path``); ``test_list`` / ``train_list`` are BTS lists
            or DenseDepth CSVs relative to it (None scans ``root`` for the test set).
        depth_root: where the lists' depth paths are relative to (default ``root``).
        batch_size, test_batch_size, num_workers: loaders.
        crop_size, resize, hflip: training augmentation (:class:`DepthAugment`); e.g. BTS crops 416x544.
    """

    def __init__(self, mat_path: str | None = None, splits_file: str | None = None,
                 depth_key: Literal["depths", "rawDepths"] = "depths", root: str | None = None,
                 test_list: str | None = None, train_list: str | None = None, depth_root: str | None = None,
                 batch_size: int = 8, test_batch_size: int = 1, num_workers: int = 0,
                 crop_size: Sequence[int] | None = (416, 544), resize: Sequence[int] | None = None, hflip: bool = True):
        super().__init__(batch_size, test_batch_size, num_workers, crop_size, resize, hflip)
        if (mat_path is None) == (root is None):
            raise ValueError("give exactly one of mat_path (nyu_depth_v2_labeled.mat) and root (a folder of pairs)")
        self.mat_path, self.splits_file, self.depth_key = mat_path, splits_file, depth_key
        self.root, self.test_list, self.train_list, self.depth_root = root, test_list, train_list, depth_root

    def _make(self, split: Literal["train", "test"]) -> Dataset:
        if self.mat_path is not None:
            return NyuLabeledDataset(self.mat_path, split, self.splits_file, self.depth_key)
        file_list = self.test_list if split == "test" else self.train_list
        if split == "train" and file_list is None:
            raise ValueError("training from a NYU folder needs train_list (a BTS list or DenseDepth CSV)")
        return NyuFolderDataset(self.root, file_list, self.depth_root)  # type: ignore[arg-type]


class KittiDepthDataModule(_DepthDataModule):
    """KITTI raw data with split lists (monodepth2 or BTS format) and annotated or Velodyne ground truth.

    Args:
        root: KITTI raw data root (``<date>/<drive>/image_02/data``, ``<date>/calib_*.txt``).
        test_split: e.g. ``eigen_test_files_with_gt.txt`` (697 listed, the 652 with GT are used).
        train_split: training list (needed only for fitting).
        depth_root: root of the annotated depth (default ``root``).
        gt: ``"annotated"`` or ``"velodyne"``.
        kb_crop: the 352x1216 KB crop on image and depth (BTS / ZoeDepth input), for train and test.
        batch_size, test_batch_size, num_workers, crop_size, resize, hflip: as :class:`NyuDepthDataModule`
            (BTS crops 352x704 for training).
    """

    def __init__(self, root: str, test_split: str | None = None, train_split: str | None = None,
                 depth_root: str | None = None, gt: Literal["annotated", "velodyne"] = "annotated",
                 kb_crop: bool = False, batch_size: int = 8, test_batch_size: int = 1, num_workers: int = 0,
                 crop_size: Sequence[int] | None = (352, 704), resize: Sequence[int] | None = None, hflip: bool = True):
        super().__init__(batch_size, test_batch_size, num_workers, crop_size, resize, hflip)
        self.root, self.test_split, self.train_split = root, test_split, train_split
        self.depth_root, self.gt, self.kb_crop = depth_root, gt, kb_crop

    def _make(self, split: Literal["train", "test"]) -> Dataset:
        lst = self.test_split if split == "test" else self.train_split
        if lst is None:
            raise ValueError(f"KittiDepthDataModule: the {split} split needs {split}_split (a split list file)")
        return KittiDepthDataset(self.root, lst, gt=self.gt, depth_root=self.depth_root, kb_crop=self.kb_crop)

