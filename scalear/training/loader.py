"""Training data loaders that resume exactly and give every process its slice of one global batch.

``ResumableDataLoader`` is a ``DataLoader`` whose order is a pure function of ``(seed, epoch)`` (no draw from the
global RNG) and which remembers how many batches of the current epoch it has handed out. Lightning saves that
position in every checkpoint and gives it back on resume (the loader implements ``state_dict`` /
``load_state_dict``, Lightning's stateful-loader protocol), so a run killed mid-epoch continues with exactly the
batches the uninterrupted run would have seen.

Under DDP every process takes a contiguous slice of the same global batch: with ``W`` processes of batch ``B``,
global batch ``g`` is ``order[g*W*B : (g+1)*W*B]`` and process ``r`` gets its ``r``-th block of ``B``, so a
``W``-process run sees the batches of a one-process run with batch ``W*B`` (its gradient, the mean over the global
batch, is the same up to float rounding). Lightning's own ``DistributedSampler`` would shuffle by its own rule; as
``ResumableSampler`` is a ``DistributedSampler``, Lightning leaves it in place.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def process_group() -> tuple[int, int]:
    """``(world_size, rank)`` of the default process group, ``(1, 0)`` outside distributed runs."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def default_seed() -> int:
    """The run's seed: Lightning's ``seed_everything`` value (``PL_GLOBAL_SEED``, shared by DDP processes), else
    torch's initial seed."""
    return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))


class ResumableSampler(DistributedSampler):
    """Indices of one process for one epoch: a permutation seeded by ``seed + epoch`` (or the identity), cut into
    global batches of ``world_size * batch_size``, each split into contiguous per-process blocks.

    Without ``drop_last`` the last, partial global batch is padded by wrapping around (as ``DistributedSampler``
    does) so that every process gets the same number of batches. ``start`` skips the first indices of this
    process's list (a resumed epoch). World size and rank are read when iterating, so one object serves before and
    after the process group exists.
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int | None = None,
                 drop_last: bool = False):
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=0, drop_last=drop_last)
        self.size, self.batch_size = len(dataset), batch_size
        self.seed = default_seed() if seed is None else seed
        self.start = 0

    def indices(self) -> torch.Tensor:
        """This process's full index list for the current epoch."""
        world, rank = process_group()
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        per_global = self.batch_size * world
        n_full = self.size // per_global
        mine = order[: n_full * per_global].view(n_full, world, self.batch_size)[:, rank].reshape(-1)
        rest = order[n_full * per_global:]
        if len(rest) and not self.drop_last:
            pad = (-len(rest)) % world
            rest = torch.cat([rest, order.repeat(pad // self.size + 1)[:pad]])
            mine = torch.cat([mine, rest.view(world, -1)[rank]])
        return mine

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start:].tolist())

    def __len__(self) -> int:
        world, _ = process_group()
        per_global = self.batch_size * world
        n_full, rest = divmod(self.size, per_global)
        return n_full * self.batch_size + (0 if self.drop_last or rest == 0 else -(-rest // world))


class ResumableDataLoader(DataLoader):
    """A training ``DataLoader`` over :class:`ResumableSampler` that Lightning checkpoints and resumes mid-epoch.

    Args:
        dataset: a map-style dataset.
        batch_size: batch size of this process (the global batch is ``world_size`` times larger).
        shuffle: a new permutation every epoch (``seed + epoch``); otherwise the dataset's order.
        drop_last: drop the last, partial global batch.
        seed: the shuffle seed; default: the run's ``seed_everything`` value.
        **kwargs: the other ``DataLoader`` arguments (``num_workers``, ``collate_fn``, ...). Worker processes are
            seeded from ``(seed, epoch)`` too; randomness a dataset draws inside persistent workers is not restored on
            resume (exact resume holds with ``num_workers=0`` or datasets that draw no random numbers).
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = True, drop_last: bool = False,
                 seed: int | None = None, **kwargs):
        from scalear.errors import UsageError

        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"the training batch size must be a positive integer, got {batch_size!r} "
                             "(data.init_args.batch_size)")
        if len(dataset) == 0:
            raise UsageError("the training data is empty (no sample to train on)")
        sampler = ResumableSampler(dataset, batch_size, shuffle, seed, drop_last)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                         generator=torch.Generator(), **kwargs)
        self.batches_done = 0  # batches of the current epoch handed out
        self._resume: dict | None = None

    def __iter__(self):
        return self._iterate()

    def _iterate(self):
        # a generator: nothing below runs until the first batch is asked for, so an iterator that is created and
        # dropped unused (Lightning makes one while setting up) does not use up the resume position
        sampler: ResumableSampler = self.sampler
        skip = 0
        if self._resume is not None and self._resume["epoch"] == sampler.epoch:
            skip = self._resume["batches_done"]
        self._resume = None
        sampler.start = skip * self.batch_size
        self.generator.manual_seed(sampler.seed + 7919 * sampler.epoch + skip)  # worker seeds
        self.batches_done = skip
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict:
        sampler: ResumableSampler = self.sampler
        return {"epoch": sampler.epoch, "batches_done": self.batches_done, "seed": sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.seed = int(state["seed"])
        self._resume = {"epoch": int(state["epoch"]), "batches_done": int(state["batches_done"])}
