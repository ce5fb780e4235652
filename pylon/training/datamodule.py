"""LightningDataModule over ``pylon.data.create_dataset`` with a data order fixed by (seed, epoch).

Every training item gets its own seed from ``(seed, epoch, index)`` and the dataset's
albumentations pipeline is re-seeded with it, so augmentation does not depend on global RNG
state, worker count or where a resumed run restarted.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pylon.data import collate, create_dataset
from pylon.training.config import DataConfig


def item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch) that yields ``(index, item_seed)`` pairs."""

    def __iter__(self):
        for index in super().__iter__():
            yield index, item_seed(self.seed, self.epoch, index)


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


def build_dataset(config: DataConfig, split: str, *, augment: bool = False):
    options = {**config.options, **config.split_options.get(split, {})}
    return create_dataset(
        config.name, config.root, split, size=config.size, augment=augment, **options
    )


def eval_loader(dataset: Dataset, config: DataConfig, *, world_size: int = 1, rank: int = 0):
    """Sequential loader; under DDP each rank reads a disjoint share with no padding repeats."""
    sampler = None
    if world_size > 1:
        sampler = UnrepeatedDistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=False
        )
    return DataLoader(
        dataset,
        batch_size=config.eval_batch_size or config.batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=config.num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
    )


class PylonDataModule(L.LightningDataModule):
    def __init__(self, config: DataConfig, seed: int):
        super().__init__()
        self.config = config
        self.seed = seed
        self.train_set = None
        self.val_set = None

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

    def train_dataloader(self) -> DataLoader:
        world_size, rank = self._world()
        sampler = SeededSampler(
            self.train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=self.seed
        )
        if len(self.train_set) < self.config.batch_size * world_size:
            raise ValueError(
                f"data: split {self.config.train_split!r} has {len(self.train_set)} images, fewer "
                f"than one batch ({self.config.batch_size} x {world_size} devices)"
            )
        return DataLoader(
            SeededItems(self.train_set),
            batch_size=self.config.batch_size,
            sampler=sampler,
            num_workers=self.config.num_workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader:
        world_size, rank = self._world()
        return eval_loader(self.val_set, self.config, world_size=world_size, rank=rank)
