"""The LightningModule: BCE-with-logits on ``output.logits`` (optionally plus an equivariance loss),
Adam, LR schedules, NaN checks.

ReduceLROnPlateau is stepped here, right after validation, instead of by Lightning: Lightning steps
epoch schedulers after ``on_train_epoch_end``, i.e. after the resume checkpoint is written, so a
resumed run would lose that step.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from pylon.training.checkpoint import capture_rng_states, restore_rng_states
from pylon.training.config import OptimConfig
from pylon.training.equivariance import apply_views, equivariance_loss, random_views


class ClassifierModule(L.LightningModule):
    """Trains any pylon model (``forward`` returns ``ModelOutput``) on multi-label targets."""

    def __init__(self, model: nn.Module, optim: OptimConfig, *, check_gradients: bool = True):
        super().__init__()
        self.model = model
        self.optim = optim
        self.check_gradients = check_gradients
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.stop_reason = ""
        self._pending_plateau_state: dict | None = None
        self._val_sums = torch.zeros(2, dtype=torch.float64)

    def forward(self, images: torch.Tensor):
        return self.model(images)

    def _loss(self, batch, reduction: str = "mean") -> torch.Tensor:
        output = self.model(batch["image"])
        return F.binary_cross_entropy_with_logits(
            output.logits.float(), batch["labels"].float(), reduction=reduction
        )

    def training_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The loss to minimise on ``batch``, and the equivariance term inside it (None when
        ``optim.equivariance`` is 0): BCE on each image and, with the term on, also on a
        flipped/rotated view of it, plus the weight times the disagreement of their class maps
        (pylon.training.equivariance)."""
        if self.optim.equivariance <= 0:
            return self._loss(batch), None
        images, labels = batch["image"], batch["labels"].float()
        square = images.shape[-1] == images.shape[-2]
        views = random_views(len(images), square=square, device=images.device)
        output = self.model(torch.cat([images, apply_views(images, views)]))
        bce = F.binary_cross_entropy_with_logits(output.logits.float(), torch.cat([labels, labels]))
        n = len(images)
        consistency = equivariance_loss(output.cam[:n], output.cam[n:], views, labels)
        return bce + self.optim.equivariance * consistency, consistency

    def training_step(self, batch, batch_idx):
        loss, consistency = self.training_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); lower optim.lr or train "
                "without mixed precision (precision=32)"
            )
        n = len(batch["labels"])
        self.log(
            "train_loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=n,
            sync_dist=True,
        )
        if consistency is not None:
            self.log(
                "train_eq_loss",
                consistency,
                on_step=True,
                on_epoch=True,
                batch_size=n,
                sync_dist=True,
            )
        self.log("lr", self.current_lr(), prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if not self.check_gradients:
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            bad = next(
                n
                for n, p in self.named_parameters()
                if p.grad is not None and not p.grad.isfinite().all()
            )
            raise FloatingPointError(
                f"non-finite gradient in {bad} at global step {self.global_step} "
                f"(epoch {self.current_epoch}); lower optim.lr or train with precision=32"
            )

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch, reduction="sum")
        self._val_sums += torch.stack(
            [loss.double(), loss.new_tensor(batch["labels"].numel()).double()]
        )

    def on_validation_epoch_end(self) -> None:
        # Sum over ranks, then divide: the exact mean over the whole validation set.
        total, count = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum").tolist()
        val_loss = total / max(count, 1.0)
        # identical on every rank already; sync_dist only silences Lightning's DDP warning
        self.log("val_loss", val_loss, prog_bar=True, sync_dist=True)
        if self.trainer.sanity_checking:
            return
        if self.plateau is not None:
            self.plateau.step(val_loss)
        if self.current_lr() <= self.optim.lr_term:  # <=, as the reference's TerminateLRCb
            self.stop_reason = (
                f"learning rate {self.current_lr():.2e} <= lr_term {self.optim.lr_term:.0e}"
            )
            self.trainer.should_stop = True

    def current_lr(self) -> float:
        if self.trainer is None or not self.trainer.optimizers:
            return self.optim.lr
        return float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        kind = self.optim.scheduler
        if kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=self.optim.factor, patience=self.optim.patience
            )
            if self._pending_plateau_state is not None:
                self.plateau.load_state_dict(self._pending_plateau_state)
            return optimizer
        if kind == "none":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(round(self.optim.warmup_frac * total))
        if kind == "onecycle":
            if total < 4:
                raise ValueError(f"optim.scheduler=onecycle needs >= 4 training steps, got {total}")
            # each of OneCycle's two phases must span at least 2 steps
            pct = min(max(self.optim.warmup_frac, 2.0 / total), 1.0 - 2.0 / total)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=self.optim.lr, total_steps=total, pct_start=pct
            )
        else:  # cosine with linear warmup
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(total - warmup, 1)
            )
            if warmup > 0:
                ramp = torch.optim.lr_scheduler.LinearLR(
                    optimizer, start_factor=1e-3, total_iters=warmup
                )
                scheduler = torch.optim.lr_scheduler.SequentialLR(
                    optimizer, [ramp, cosine], milestones=[warmup]
                )
            else:
                scheduler = cosine
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["pylon_rng"] = capture_rng_states()
        checkpoint["pylon_stop_reason"] = self.stop_reason
        if self.plateau is not None:
            checkpoint["pylon_plateau"] = self.plateau.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._pending_plateau_state = checkpoint.get("pylon_plateau")
        self.stop_reason = checkpoint.get("pylon_stop_reason", "")
        if "pylon_rng" in checkpoint:
            restore_rng_states(checkpoint["pylon_rng"])
