"""Callbacks writing the run folder's checkpoints: best weights (safetensors), resume state."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L

from pylon.data.preprocessing import Preprocessing
from pylon.models.weights import save_weights


class BestWeights(L.Callback):
    """After each validation, saves the model to ``path`` when the validation loss improved.

    The file is a plain safetensors model (``pylon.save_weights``) carrying the run's
    :class:`~pylon.data.preprocessing.Preprocessing` record, so that inference needs nothing else.
    """

    def __init__(self, path: Path, preprocessing: Preprocessing, monitor: str = "val_loss"):
        self.path = Path(path)
        self.preprocessing = preprocessing
        self.monitor = monitor
        self.best = math.inf
        self.best_epoch = -1

    @property
    def state_key(self) -> str:
        return "BestWeights"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if value < self.best:
            self.best, self.best_epoch = value, trainer.current_epoch
            if trainer.is_global_zero:
                metadata = {
                    **self.preprocessing.to_metadata(),
                    "val_loss": json.dumps(value),
                    "epoch": json.dumps(trainer.current_epoch),
                }
                save_weights(pl_module.model, self.path, metadata=metadata)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict["best"]
        self.best_epoch = state_dict["best_epoch"]


class ResumeCheckpoint(L.Callback):
    """Writes the full training state (``trainer.save_checkpoint``) at the end of every epoch.

    Runs at ``on_train_epoch_end``, after validation, best-weights and the plateau step, so a
    resumed run starts exactly where the uninterrupted one continued.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
