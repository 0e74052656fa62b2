"""Lightning data modules for NYU Depth v2 and KITTI, the training augmentation (resize, random crop, flip), and
DepthART's depth encoding with the tokenizer data built on it (:class:`RGBDTokenizerData`).

The datasets themselves live in the other modules of :mod:`scalear.datasets.depth`; here they are wired into loaders. Test
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
from scalear.training.loader import ResumableDataLoader


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


# ------------------------------------------------------------------------------------------- DepthART's encoding
def depth_to_tokenizer_input(depth_B1HW: torch.Tensor, valid_B1HW: torch.Tensor | None = None,
                             quantile: float = 0.98) -> tuple[torch.Tensor, torch.Tensor]:
    """DepthART's depth encoding (``NormalizerUTSQuant`` then ``2 x - 1``): per image ``d / q`` with ``q`` the
    ``quantile`` of its valid depths, mapped to ``[-1, 1]``, clipped, repeated to 3 channels.

    Invalid pixels (``valid`` False or depth <= 0) are set to ``+1`` (as far as the clip allows): the tokenizer
    needs dense maps, which Hypersim (the paper's data) and NYU's filled depth are.

    Returns ``(x_B3HW in [-1, 1], q_B)``; ``q_B`` is the per-image scale (metres).

    >>> x, q = depth_to_tokenizer_input(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), quantile=1.0)
    >>> x[0, 0].tolist(), q.tolist()
    ([[-0.5, 0.0], [0.5, 1.0]], [4.0])
    """
    if depth_B1HW.ndim != 4 or depth_B1HW.shape[1] != 1:
        raise ValueError(f"expected depth (B, 1, H, W), got shape {tuple(depth_B1HW.shape)}")
    valid = depth_B1HW > 0 if valid_B1HW is None else valid_B1HW.bool() & (depth_B1HW > 0)
    q_B = torch.ones(depth_B1HW.shape[0], dtype=depth_B1HW.dtype, device=depth_B1HW.device)
    for b in range(depth_B1HW.shape[0]):
        d = depth_B1HW[b][valid[b]]
        if d.numel() == 0:
            raise ValueError(f"depth map {b} of the batch has no valid pixel to normalise by")
        q_B[b] = torch.quantile(d.float(), quantile).to(q_B.dtype)
    x = (2 * depth_B1HW / q_B.view(-1, 1, 1, 1) - 1).clamp(-1, 1)
    x = torch.where(valid, x, torch.ones_like(x))
    return x.expand(-1, 3, -1, -1).contiguous(), q_B


class RGBDTokenizerDataset(Dataset):
    """Sample ``2 i`` is scene ``i``'s image, ``2 i + 1`` its depth, as ``{"image": (3, H, W) in [-1, 1]}``.

    Args:
        base: a dataset of ``{"image" (3, H, W) in [0, 1], "depth" (1, H, W) metres, "valid"?}`` samples.
        image_size: (H, W) to resize to (images bilinearly, depth and validity nearest); None keeps the size.
        quantile: the depth normalisation percentile (DepthART: 0.98).
    """

    def __init__(self, base: Dataset, image_size: tuple[int, int] | None = None, quantile: float = 0.98):
        self.base, self.quantile = base, quantile
        self.image_size = tuple(image_size) if image_size is not None else None

    def __len__(self) -> int:
        return 2 * len(self.base)

    def __getitem__(self, i: int) -> dict:
        s = self.base[i // 2]
        if i % 2 == 0:
            image = s["image"][None].float()
            if self.image_size is not None and tuple(image.shape[-2:]) != self.image_size:
                image = F.interpolate(image, self.image_size, mode="bilinear", align_corners=False, antialias=True)
            return {"image": image[0].clamp(0, 1) * 2 - 1}
        depth = s["depth"][None].float()
        valid = s.get("valid", s["depth"] > 0)[None].float()
        if self.image_size is not None and tuple(depth.shape[-2:]) != self.image_size:
            depth, valid = (F.interpolate(t, self.image_size, mode="nearest") for t in (depth, valid))
        return {"image": depth_to_tokenizer_input(depth, valid > 0.5, self.quantile)[0][0]}


class RGBDTokenizerData(L.LightningDataModule):
    """Wraps an RGB-D data module (procedural, NYU, ...) into tokenizer training data (:class:`RGBDTokenizerDataset`).

    Args:
        data: the RGB-D data module; its train and val loaders' datasets are wrapped.
        image_size: the tokenizer's input size (None: the data's own size).
        quantile: depth normalisation percentile.
        batch_size, num_workers: of the wrapped loaders.
    """

    def __init__(self, data: L.LightningDataModule, image_size: tuple[int, int] | None = None, quantile: float = 0.98,
                 batch_size: int = 32, num_workers: int = 0):
        super().__init__()
        self.data, self.image_size, self.quantile = data, image_size, quantile
        self.batch_size, self.num_workers = batch_size, num_workers

    def setup(self, stage: str | None = None) -> None:
        self.data.setup(stage)

    def _loader(self, base_loader: DataLoader, shuffle: bool) -> DataLoader:
        ds = RGBDTokenizerDataset(base_loader.dataset, self.image_size, self.quantile)
        loader = ResumableDataLoader if shuffle else DataLoader
        return loader(ds, self.batch_size, shuffle=shuffle, drop_last=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data.train_dataloader(), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data.val_dataloader(), shuffle=False)
