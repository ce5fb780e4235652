"""Heatmap overlays of a few fixed validation cases in TensorBoard's images tab, once per
validation epoch, so a user watching a run sees localization improve, not only the loss.

The cases are chosen once, the first time validation ends: the first ``count`` images of the
validation split (among its first :data:`SCAN_IMAGES`) that have a ground-truth box, each with
the class of its first box; where the split has no boxes (e.g. NIH's validation split), images
with a positive label, without boxes. Each is drawn at the network's input size with
:func:`pylon.overlay_draw.overlay_image` (absolute probabilities, the class's boxes in green)
and a white ring at the map's peak (the point-localization arg-max), tagged
``val_cases/<k>_<class>_<image id>`` with the epoch as its step. Config switch: ``log_images``
(and ``log_images_count``).
"""

from __future__ import annotations

import re
import warnings

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from pylon.metrics import peak_locations
from pylon.overlay_draw import draw_peak, overlay_image

SCAN_IMAGES = 256
TAG_PREFIX = "val_cases"


def pick_cases(dataset, count: int) -> list[tuple[int, int]]:
    """``(image index, class index)`` of the validation cases to draw (see the module doc).

    Args:
        dataset: the validation dataset (a file-backed ``BoxDataset`` is read from its records,
            without decoding images; others from their samples).
        count: at most this many cases, one per image.

    Returns:
        The cases, in dataset order; empty when no image of the scanned ones has a box or a
        positive label.
    """
    records = getattr(dataset, "records", None)
    boxed: list[tuple[int, int]] = []
    labelled: list[tuple[int, int]] = []
    for index in range(min(len(dataset), SCAN_IMAGES)):
        if records is not None:
            boxes, labels = records[index].boxes, np.asarray(records[index].labels)
        else:
            sample = dataset[index]
            boxes, labels = sample["boxes"], np.asarray(sample["labels"])
        if boxes:
            boxed.append((index, int(boxes[0][4])))
            if len(boxed) == count:
                break
        elif labels.any() and len(labelled) < count:
            labelled.append((index, int(np.flatnonzero(labels)[0])))
    return boxed or labelled


def _denormalise(image: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised ``(C, H, W)`` input back to uint8 ``(H, W[, 3])`` pixels."""
    mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std, dtype=torch.float32)[:, None, None]
    pixels = (image.float().cpu() * std + mean).clamp(0, 1).mul(255).round().byte()
    pixels = pixels.permute(1, 2, 0).numpy()
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def case_tag(number: int, class_name: str, image_id: str) -> str:
    """The TensorBoard tag of case ``number`` (characters other than letters, digits, ``.``,
    ``-`` and ``_`` in the id and class become ``_``)."""
    safe = re.sub(r"[^\w.\-]", "_", f"{class_name}_{image_id}")
    return f"{TAG_PREFIX}/{number}_{safe}"


class ValidationImages(L.Callback):
    """Logs the overlays of ``count`` fixed validation cases to the run's TensorBoard logger at
    the end of every validation epoch (rank zero only; nothing without a TensorBoard logger).

    Args:
        count: the number of cases (one per image).
    """

    def __init__(self, count: int = 4):
        if count < 1:
            raise ValueError(f"log_images_count={count}; expected an integer >= 1")
        self.count = count
        self.cases: list[tuple[int, int]] | None = None
        self._samples: list[dict] = []

    def _prepare(self, dataset) -> None:
        self.cases = pick_cases(dataset, self.count)
        if not self.cases:
            warnings.warn(
                "log_images: no validation image among the first "
                f"{SCAN_IMAGES} has a box or a positive label; no images are logged",
                stacklevel=2,
            )
        self._samples = [dataset[i] for i, _ in self.cases]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        dataset = getattr(trainer.datamodule, "val_set", None)
        if dataset is None:
            return
        if self.cases is None:
            self._prepare(dataset)
        if not self.cases:
            return
        model = pl_module.model
        images = torch.stack([s["image"] for s in self._samples]).to(pl_module.device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                cams = model(images).cam.float()
        finally:
            model.train(was_training)
        size = tuple(images.shape[-2:])
        rows, cols = peak_locations(cams, size)
        mean, std = dataset.mean, dataset.std
        names = list(dataset.class_names)
        writer = loggers[0].experiment
        for number, ((_, c), sample) in enumerate(zip(self.cases, self._samples, strict=True)):
            heat = torch.sigmoid(cams[number, c]).cpu().numpy()
            boxes = [b[:4] for b in sample["boxes"] if int(b[4]) == c]
            rgb = overlay_image(
                _denormalise(sample["image"], mean, std),
                heat,
                boxes=boxes,
                style="probability",
            )
            draw_peak(rgb, (int(cols[number, c]), int(rows[number, c])))
            tag = case_tag(number, names[c], str(sample["image_id"]))
            writer.add_image(tag, rgb, global_step=trainer.current_epoch, dataformats="HWC")
        writer.flush()
