"""ClassifierModule: a non-finite loss or gradient stops training with a message naming the step;
the learning-rate stop is the reference's; the item seeds of the data order depend only on
(seed, epoch, index)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from pylon.data import collate
from pylon.models import ModelOutput
from pylon.training.config import OptimConfig
from pylon.training.datamodule import SeededItems, SeededSampler
from pylon.training.module import ClassifierModule


class _Toy(nn.Module):
    """Logits from a single weight; ``mode`` makes the loss or the gradient non-finite."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        n = x.shape[0]
        if self.mode == "nan_loss":
            logits = self.w * x.mean() * torch.nan
        elif self.mode == "constant":  # the same loss every epoch: the plateau never improves
            logits = self.w * 0.0 + x.mean() * 0
        else:  # sqrt at 0: the value is finite (0), its gradient is not
            logits = torch.sqrt(self.w * 0.0) + x.mean() * 0
        logits = logits.expand(n, 2)
        return ModelOutput(logits, logits[:, :, None, None])


def _loader():
    samples = [
        {
            "image": torch.rand(1, 8, 8),
            "labels": torch.tensor([1.0, 0.0]),
            "boxes": [],
            "image_id": str(i),
        }
        for i in range(4)
    ]
    return DataLoader(samples, batch_size=2, collate_fn=collate)


@pytest.mark.parametrize(
    "mode, message",
    [
        ("nan_loss", r"training loss is nan at global step 0"),
        ("nan_grad", r"non-finite gradient in model\.w at global step 0"),
    ],
)
def test_non_finite_training_stops_with_the_step(mode, message):
    module = ClassifierModule(_Toy(mode), OptimConfig(scheduler="none"))
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match=message):
        trainer.fit(module, train_dataloaders=_loader())


def test_training_stops_once_the_lr_reaches_lr_term():
    """The reference's TerminateLRCb stops at ``lr <= lr_thresh``: 1e-3 halved twice is exactly
    2.5e-4 (halving is exact in binary), so training stops after the third epoch, not the
    fourth."""
    optim = OptimConfig(lr=1e-3, scheduler="plateau", patience=0, factor=0.5, lr_term=2.5e-4)
    module = ClassifierModule(_Toy("constant"), optim)
    trainer = L.Trainer(
        max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader())
    assert module.current_lr() == 2.5e-4
    assert trainer.current_epoch == 3  # epochs 0, 1, 2 ran: lr 1e-3, then 5e-4, then 2.5e-4
    assert "lr_term" in module.stop_reason


def test_data_order_and_item_seeds_depend_on_seed_and_epoch_only():
    data = list(range(10))

    def epoch(seed, e, replicas=1, rank=0):
        sampler = SeededSampler(data, num_replicas=replicas, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(e)
        return list(sampler)

    assert epoch(0, 1) == epoch(0, 1)
    assert epoch(0, 1) != epoch(0, 2) and epoch(0, 1) != epoch(1, 1)
    # under DDP the ranks' shares are disjoint and cover the data, with the same item seeds
    shares = epoch(0, 1, 2, 0) + epoch(0, 1, 2, 1)
    assert sorted(i for i, _ in shares) == data
    assert dict(shares) == dict(epoch(0, 1))


def test_seeded_items_reseed_the_augmentation():
    class Dataset:
        class transform:  # noqa: N801  (mimics albumentations' Compose.set_random_seed)
            seed = None

            @classmethod
            def set_random_seed(cls, seed):
                cls.seed = seed

        def __len__(self):
            return 3

        def __getitem__(self, index):
            return index, self.transform.seed

    items = SeededItems(Dataset())
    assert items[(2, 1234)] == (2, 1234)
    assert items.__getitems__([(0, 7), (1, 8)]) == [(0, 7), (1, 8)]
