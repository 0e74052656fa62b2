"""Real handwritten digits shipped with scikit-learn (``sklearn.datasets.load_digits``): 1,797 8x8 gray
images with 17 intensity levels, 10 classes (UCI "Optical Recognition of Handwritten Digits", test part).

Used by the core quickstart: images are upsampled (bicubic) to ``image_size`` and scaled to [-1, 1].
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from scalear.training.loader import ResumableDataLoader


def load_digit_images(image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as ``(N, 1, image_size, image_size)`` float images in [-1, 1] and ``(N,)`` labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False).clamp(0, 1)
    return x * 2 - 1, torch.from_numpy(d.target.astype(np.int64))


def to_digit_features(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] of any size -> sklearn's digit features: 8x8 area averages on the 0..16 scale, (N, 64)."""
    x = F.interpolate((images.float() + 1) / 2, size=(8, 8), mode="area").clamp(0, 1) * 16
    return x.flatten(1).cpu().numpy()


class DictDataset(Dataset):
    """Rows of equally long tensors as ``{"image": ..., "label": ...}`` dicts."""

    def __init__(self, **tensors: torch.Tensor):
        n = {len(t) for t in tensors.values()}
        if len(n) != 1:
            raise ValueError(f"tensors have different lengths: { {k: len(t) for k, t in tensors.items()} }")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: t[i] for k, t in self.tensors.items()}


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a train/val split with the same class proportions, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


class DigitsDataModule(L.LightningDataModule):
    """scikit-learn's real handwritten digits as a Lightning data module (batches: ``image``, ``label``).

    Args:
        image_size: side of the upsampled images (8 keeps the originals).
        batch_size: batch size of both loaders.
        val_fraction: share of every class held out for validation.
        seed: seed of the split.
        num_workers: DataLoader workers.
    """

    def __init__(self, image_size: int = 16, batch_size: int = 64, val_fraction: float = 0.1, seed: int = 0, num_workers: int = 0):
        super().__init__()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.image_size, self.batch_size, self.val_fraction = image_size, batch_size, val_fraction
        self.seed, self.num_workers = seed, num_workers

    def setup(self, stage: str | None = None) -> None:
        x, y = load_digit_images(self.image_size)
        tr, va = stratified_split(y, self.val_fraction, self.seed)
        self.train_set, self.val_set = DictDataset(image=x[tr], label=y[tr]), DictDataset(image=x[va], label=y[va])

    def train_dataloader(self) -> DataLoader:
        return ResumableDataLoader(self.train_set, self.batch_size, shuffle=True, drop_last=True,
                                   num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, num_workers=self.num_workers)
