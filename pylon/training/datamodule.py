"""LightningDataModule over ``pylon.data.create_dataset`` with a data order fixed by (seed, epoch).

Every training item gets its own seed from ``(seed, epoch, index)`` and the dataset's
albumentations pipeline is re-seeded with it, so augmentation does not depend on global RNG
state, worker count or where a resumed run restarted. Worker counts default from the CPUs
available (:mod:`pylon.data.workers`), and the train loader ends each epoch itself (a
``limit_train_batches`` cap is applied in its sampler), so its workers exit before validation
starts: only one worker pool is alive at a time unless ``data.persistent_workers`` is set.
"""

from __future__ import annotations

import itertools
import math
import os

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pylon.data import collate, create_dataset, get_dataset_class
from pylon.data.workers import default_num_workers
from pylon.training.config import DataConfig


def item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch) that yields ``(index, item_seed)`` pairs;
    ``max_samples`` keeps only the first that many of each epoch (``limit_train_batches``)."""

    max_samples: int | None = None

    def __iter__(self):
        indices = itertools.islice(super().__iter__(), self.max_samples)
        for index in indices:
            yield index, item_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        n = super().__len__()
        return n if self.max_samples is None else min(n, self.max_samples)


class SeededItems(Dataset):
    """Reads ``dataset[index]`` after re-seeding the dataset's augmentation with the item's seed."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        transform = getattr(dataset, "transform", None)
        self._reseed = getattr(transform, "set_random_seed", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        if self._reseed is not None:
            self._reseed(seed)
        return self.dataset[index]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        if self._reseed is None and hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__([index for index, _ in keys])
        return [self[key] for key in keys]


class EpochLoader(DataLoader):
    """DataLoader whose worker processes exit as soon as its last batch is out.

    Lightning stops an epoch by count and never asks past the last batch, so a plain loader's
    workers would stay alive until the next epoch replaces its iterator, beside the other
    loader's workers (two pools at once). Here the iterator is driven to its end right after
    the last batch arrives, which makes torch shut the workers down. Persistent workers are
    kept, as asked.
    """

    _live = None

    def __iter__(self):
        iterator = super().__iter__()
        if self.num_workers == 0 or self.persistent_workers:
            return iterator
        self._live = _ending(iterator, len(self))
        return self._live

    def stop(self) -> None:
        """End a pass left unfinished (Lightning's sanity check reads only a few batches)."""
        if self._live is not None:
            self._live.close()  # drops torch's iterator, whose finaliser stops the workers
            self._live = None


def _ending(iterator, length: int):
    for count, batch in enumerate(iterator, start=1):
        if count == length:
            next(iterator, None)  # the end: torch's iterator stops its workers
        yield batch


def build_dataset(config: DataConfig, split: str, *, augment: bool = False, cache: bool = True):
    """The dataset of ``split``.

    Args:
        config: the data config; ``data.cache_dir`` / ``data.cache_size`` go to datasets that
            cache (all but ``synthetic``, which renders its images).
        split: the split name.
        augment: the training transform.
        cache: ``False`` reads the split's records without building or opening an image cache
            (enough to count and check a split before a run starts).

    Returns:
        The dataset (``pylon.data.create_dataset``).
    """
    from pylon.data.base import BoxDataset

    options = {**config.options, **config.split_options.get(split, {})}
    if issubclass(get_dataset_class(config.name), BoxDataset):
        if not cache:
            options.update(cache=False, progress=False)
        for key in ("cache_dir", "cache_size"):
            value = getattr(config, key)
            if value is None:
                continue
            if options.get(key, value) != value:
                raise ValueError(
                    f"data.{key}={value!r} and data.options.{key}={options[key]!r} disagree; "
                    f"set only data.{key}"
                )
            options[key] = value
    return create_dataset(
        config.name, config.root, split, size=config.size, augment=augment, **options
    )


def resolve_num_workers(config: DataConfig, processes_per_node: int = 1) -> int:
    """``data.num_workers``, or when it is ``None`` the default from the CPUs available."""
    if config.num_workers is not None:
        return config.num_workers
    return default_num_workers(processes_per_node)


def init_worker(_: int) -> None:
    """DataLoader worker start-up: one OpenCV thread per worker (each worker is one CPU's worth
    of loading; OpenCV's own thread pool on top would oversubscribe the CPUs), as the reference.

    Safe after a multi-threaded OpenCV call in the main process thanks to
    :func:`pylon.data.workers.install_opencv_fork_guard` (without it the worker hung here)."""
    cv2.setNumThreads(1)


def _local_processes(world_size: int) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size))


def eval_loader(dataset: Dataset, config: DataConfig, *, world_size: int = 1, rank: int = 0):
    """Sequential loader; under DDP each rank reads a disjoint share with no padding repeats."""
    workers = resolve_num_workers(config, _local_processes(world_size))
    sampler = None
    if world_size > 1:
        sampler = UnrepeatedDistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=False
        )
    return EpochLoader(
        dataset,
        batch_size=config.eval_batch_size or config.batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=init_worker if workers else None,
        persistent_workers=bool(workers and config.persistent_workers),
    )


class PylonDataModule(L.LightningDataModule):
    def __init__(self, config: DataConfig, seed: int):
        super().__init__()
        self.config = config
        self.seed = seed
        self.train_set = None
        self.val_set = None
        self._val_loader: EpochLoader | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = build_dataset(
                self.config, self.config.train_split, augment=self.config.augment
            )
            self.val_set = build_dataset(self.config, self.config.val_split)
            if list(self.val_set.class_names) != list(self.train_set.class_names):
                raise ValueError(
                    f"data: split {self.config.val_split!r} has classes "
                    f"{self.val_set.class_names}, split {self.config.train_split!r} has "
                    f"{self.train_set.class_names}"
                )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _max_train_batches(self, batches: int) -> int:
        """Batches per epoch under the Trainer's ``limit_train_batches`` (int or fraction)."""
        limit = self.trainer.limit_train_batches if self.trainer is not None else None
        if isinstance(limit, int) and not isinstance(limit, bool):
            return min(batches, limit)
        if isinstance(limit, float) and limit < 1.0:
            return max(1, math.floor(batches * limit))
        return batches

    def train_dataloader(self) -> DataLoader:
        if self._val_loader is not None:  # Lightning asks for it after the sanity check
            self._val_loader.stop()
        world_size, rank = self._world()
        sampler = SeededSampler(
            self.train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=self.seed
        )
        if len(self.train_set) < self.config.batch_size * world_size:
            raise ValueError(
                f"data: split {self.config.train_split!r} has {len(self.train_set)} images, fewer "
                f"than one batch ({self.config.batch_size} x {world_size} devices)"
            )
        # The cap goes into the sampler, so that the loader itself ends the epoch and its
        # workers exit before validation (Lightning stopping early would keep them alive).
        batches = self._max_train_batches(len(sampler) // self.config.batch_size)
        sampler.max_samples = batches * self.config.batch_size
        workers = resolve_num_workers(self.config, _local_processes(world_size))
        return EpochLoader(
            SeededItems(self.train_set),
            batch_size=self.config.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=init_worker if workers else None,
            persistent_workers=bool(workers and self.config.persistent_workers),
        )

    def val_dataloader(self) -> DataLoader:
        world_size, rank = self._world()
        self._val_loader = eval_loader(self.val_set, self.config, world_size=world_size, rank=rank)
        return self._val_loader
