"""``LoopProgress``: Lightning's train, validation and test loops reported through
:mod:`pylon.progress`, so that a log file shows count, rate and ETA as a terminal does."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TextIO

import lightning as L
import torch

from pylon.progress import FRACTION, Progress

LOOPS = ("train", "validate", "test")


class LoopProgress(L.Callback):
    """Reports the batches of the train and validation loops, or the images of the test loop,
    through :class:`pylon.progress.Progress` (rank 0 only).

    Plain lines come every ``interval`` seconds and at the end of each loop; the end of an epoch's
    train loop adds that epoch's mean ``train_loss`` (rank 0's batches), the end of a validation
    loop the logged ``val_loss``. Example:
    ``train epoch 3/40: 120/500 (24%), 2.1 batch/s, elapsed 0:57, ETA 3:00``.

    Args:
        loops: which of ``"train"``, ``"validate"``, ``"test"`` to report.
        description: the test loop's label (default ``"test"``); train and validation lines are
            labelled ``train epoch e/E`` and ``validate epoch e/E``.
        enabled: ``False`` reports nothing.
        interval: seconds between plain lines (default :func:`pylon.progress.interval_s`, i.e.
            ``PYLON_PROGRESS_INTERVAL`` or 30 s).
        stream: where progress goes (default ``sys.stderr``); a bar when it is a terminal.
    """

    def __init__(
        self,
        loops: Iterable[str] = ("train", "validate"),
        *,
        description: str = "test",
        enabled: bool = True,
        interval: float | None = None,
        stream: TextIO | None = None,
    ):
        self.loops = tuple(loops)
        unknown = set(self.loops) - set(LOOPS)
        if unknown:
            raise ValueError(f"loops: unknown {sorted(unknown)}; expected some of {LOOPS}")
        self.description, self.enabled = description, enabled
        self.interval, self.stream = interval, stream
        self._reporters: dict[str, Progress] = {}
        self._loss_sum, self._loss_count = torch.zeros(()), 0

    def _start(self, trainer: L.Trainer, loop: str, description: str, total, unit: str) -> None:
        if loop not in self.loops:
            return
        total = int(total) if total is not None and math.isfinite(total) else None
        reporter = Progress(
            description,
            total,
            unit=unit,
            enabled=self.enabled and trainer.is_global_zero,
            interval=self.interval,
            fraction=FRACTION if loop == "test" else None,  # train/val: by time only
            stream=self.stream,
        )
        self._reporters[loop] = reporter.__enter__()

    def _advance(self, loop: str, n: int) -> None:
        if loop in self._reporters:
            self._reporters[loop].advance(n)

    def _finish(self, loop: str, note: str = "") -> None:
        reporter = self._reporters.pop(loop, None)
        if reporter is not None:
            reporter.finish(note)

    @staticmethod
    def _epoch(trainer: L.Trainer) -> str:
        epochs = trainer.max_epochs
        last = f"/{epochs}" if epochs is not None and epochs > 0 else ""
        return f"epoch {trainer.current_epoch + 1}{last}"

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        """Start the epoch's train line: total is ``trainer.num_training_batches``."""
        self._loss_sum, self._loss_count = torch.zeros(()), 0
        total = trainer.num_training_batches
        self._start(trainer, "train", f"train {self._epoch(trainer)}", total, "batch")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Count the batch and its loss; the last batch ends the train line."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and "train" in self._reporters:
            n = len(batch["labels"])  # weighted as Lightning's epoch mean of train_loss
            self._loss_sum = self._loss_sum.to(loss.device) + loss.detach().float() * n
            self._loss_count += n
        self._advance("train", 1)
        if batch_idx + 1 >= trainer.num_training_batches:
            self._finish_train()

    def _finish_train(self) -> None:
        if "train" in self._reporters and self._loss_count:
            mean = float(self._loss_sum) / self._loss_count
            self._finish("train", f"train_loss {mean:.4f}")
        else:
            self._finish("train")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """End the train line if the epoch stopped early."""
        self._finish_train()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        """Start the validation line: total is the sum of ``trainer.num_val_batches``."""
        if not trainer.sanity_checking:
            total = sum(trainer.num_val_batches)
            self._start(trainer, "validate", f"validate {self._epoch(trainer)}", total, "batch")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        """Count the batch."""
        self._advance("validate", 1)

    def on_validation_end(self, trainer, pl_module) -> None:
        """End the validation line with the logged ``val_loss``."""
        value = trainer.callback_metrics.get("val_loss")
        self._finish("validate", f"val_loss {float(value):.4f}" if value is not None else "")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        """Start the test line: total is this rank's share of the images."""
        loaders = trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        total = len(loader.sampler) if loader is not None else None
        self._start(trainer, "test", self.description, total, "img")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        """Count the batch's images."""
        self._advance("test", len(batch["image"]))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        """Print the test loop's final count, or close its bar."""
        self._finish("test")

    def on_exception(self, trainer, pl_module, exception) -> None:
        """Close every open line or bar when a loop fails."""
        for loop in list(self._reporters):
            self._finish(loop)
