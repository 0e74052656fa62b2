"""The data loader of one split, as every data module in :mod:`scalear.datasets` hands it to Lightning."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

from scalear.training.loader import ResumableDataLoader


def split_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0) -> DataLoader:
    """Training (``shuffle``): a :class:`~scalear.training.loader.ResumableDataLoader` (resumes mid-epoch) that drops
    the last partial batch unless it is the only one; evaluation: every item in order."""
    loader = ResumableDataLoader if shuffle else DataLoader
    return loader(dataset, batch_size, shuffle=shuffle, drop_last=shuffle and len(dataset) >= batch_size,
                  num_workers=num_workers, persistent_workers=num_workers > 0)
