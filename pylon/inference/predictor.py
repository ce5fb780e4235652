"""``Predictor``: a trained weights file in, per-image probabilities, peaks and heatmaps out."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from pylon.data.dicom import check_voi
from pylon.data.images import PNG16
from pylon.data.preprocessing import Preprocessing
from pylon.data.transforms import apply_transform
from pylon.evaluation.overlay import DISPLAY_MAX_SIDE, display_scale
from pylon.inference.capture import DecoderMessages
from pylon.inference.inputs import (
    PREDICT_VOI,
    InputImage,
    array_input,
    gather_inputs,
    load_input,
)
from pylon.inference.result import Failure, Prediction, peaks_in_original
from pylon.models.folder import weights_file
from pylon.models.precision import resolve_execution
from pylon.models.registry import create_model_from_config
from pylon.models.weights import MODEL_METADATA_KEY, load_weights, read_weights_metadata


@dataclass
class _Prepared:
    """An input ready for the network: its tensor, original size and (optionally) the image
    shrunk to the display size; the full-resolution pixels are not kept."""

    image_id: str
    path: Path | None
    size: tuple[int, int]
    tensor: torch.Tensor
    pixels: np.ndarray | None
    pixels_scale: float
    warnings: list[str] = field(default_factory=list)
    pixel_spacing: tuple[float, float] | None = None
    spacing_attribute: str | None = None
    reading: str | None = None


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, without checking that this machine has it.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (``"gpu"`` means CUDA), or a device.

    Returns:
        The device.

    Raises:
        ValueError: a name PyTorch does not know.
    """
    name = "cuda" if str(device) == "gpu" else device
    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {str(device)!r}: {err}; expected cpu, cuda or cuda:N") from None


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, refused with a clear message where it cannot run.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (``"gpu"`` means CUDA), or a device.

    Returns:
        The device.

    Raises:
        ValueError: an unknown device name, or CUDA asked for where PyTorch sees no GPU.
    """
    resolved = parse_device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r}: no CUDA GPU is available to PyTorch on this machine "
                "(torch.cuda.is_available() is False); use device 'cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s)")
    return resolved


def check_class_names(class_names: Sequence[str], source: str | os.PathLike) -> None:
    """Refuse a model whose class names repeat: results are keyed by name, so one would be lost.

    Args:
        class_names: the model's classes, in output order.
        source: the weights file, for the message.

    Raises:
        ValueError: naming ``source`` and the repeated name(s).
    """
    names = list(class_names)
    repeated = [c for k, c in enumerate(names) if c in names[:k]]
    if repeated:
        raise ValueError(
            f"{source}: class name(s) {', '.join(map(repr, dict.fromkeys(repeated)))} repeated "
            f"in the weights' class names ({', '.join(names)}); each output needs its own name"
        )


def check_class_choice(
    classes: Sequence[str] | None, class_names: Sequence[str], *, what: str = "classes"
) -> list[str] | None:
    """Check a choice of classes against the model's.

    Args:
        classes: the chosen classes (``None``: no choice, those above the threshold are used).
        class_names: the model's classes.
        what: how messages name the choice (``"--classes"`` on the command line).

    Returns:
        The chosen classes, each once, in the order given (``None`` for no choice).

    Raises:
        ValueError: an empty choice or an unknown class, listing the model's classes.
    """
    if classes is None:
        return None
    valid = ", ".join(class_names)
    if isinstance(classes, str):
        classes = [classes]
    chosen = list(dict.fromkeys(classes))
    if not chosen:
        raise ValueError(f"{what} names no class; expected one or more of the model's: {valid}")
    unknown = [c for c in chosen if c not in class_names]
    if unknown:
        raise ValueError(
            f"{what}: unknown class(es) {', '.join(map(repr, unknown))}; the model's classes "
            f"are {valid}"
        )
    return chosen


class Predictor:
    """Rebuilds a trained model from its weights file alone (or a model folder written by
    ``pylon export-model``) and predicts on images or files.

    ``threshold``: classes whose probability reaches it are ``selected`` (overlays are drawn for
    them); ``classes`` replaces that choice by a fixed list. ``precision`` follows the one policy,
    :func:`pylon.models.precision.resolve_execution` (``"auto"``: bf16 autocast + channels_last on
    CPUs that compute bf16 natively, about 2x faster, fp16 on CUDA; ``"fp32"``, ``"bf16"``,
    ``"fp16"`` force one). ``max_pixels``: images whose header declares more pixels are refused
    before decoding (default ``$PYLON_MAX_PIXELS`` or 100 MP; 0: no limit). ``display_max_side``:
    kept pixels (``keep_pixels=True``, for overlays) are shrunk so that their longer side is at
    most this (``None``: full resolution); inputs are otherwise not kept beyond their batch, so
    memory is bounded by the batch, not by the largest image. ``voi``: how DICOMs are read
    (``"window"``: modality LUT, then the file's VOI LUT or first window, the radiology reading;
    ``"minmax"``: modality LUT, then min-max; both invert MONOCHROME1). ``png16``: how 16-bit
    images are scaled (:func:`pylon.data.images.read_image`: ``"bits"``, ``"minmax"``,
    ``"full"``).
    """

    def __init__(
        self,
        weights_path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        threshold: float = 0.5,
        classes: Sequence[str] | None = None,
        precision: str = "auto",
        workers: int = 2,
        max_pixels: int | None = None,
        display_max_side: int | None = DISPLAY_MAX_SIDE,
        voi: str = "window",
        png16: str = "bits",
    ):
        self.device = check_device(device)
        self.voi = check_voi(voi, PREDICT_VOI)
        if png16 not in PNG16:
            raise ValueError(f"png16 {png16!r}: expected one of {', '.join(PNG16)}")
        self.png16 = png16
        path = weights_file(weights_path)  # a model folder: its checked model.safetensors
        metadata = read_weights_metadata(path)
        if metadata["model"] is None:
            raise ValueError(
                f"{path}: no '{MODEL_METADATA_KEY}' metadata (the architecture); save the weights "
                "with pylon.save_weights(model, path) from a model built by pylon.create_model"
            )
        self.data = Preprocessing.from_metadata(metadata, path)
        check_class_names(self.data.class_names, path)
        self.model: nn.Module = create_model_from_config(metadata["model"])
        load_weights(self.model, path, strict=True)
        num_classes = metadata["model"]["num_classes"]
        if len(self.data.class_names) != num_classes:
            raise ValueError(
                f"{path}: {len(self.data.class_names)} class names for a {num_classes}-class model"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.classes = check_class_choice(classes, self.data.class_names)
        self.threshold = float(threshold)
        self.batch_size = batch_size
        self.workers = workers
        self.max_pixels = max_pixels
        self.display_max_side = display_max_side
        self.execution = resolve_execution(precision, self.device)
        self.model.eval().to(self.device)
        self.execution.prepare_model(self.model)
        self.transform = self.data.eval_transform()
        self._local = threading.local()  # one pipeline per decoding thread (Compose holds state)

    @property
    def class_names(self) -> list[str]:
        """The model's classes, in output order."""
        return list(self.data.class_names)

    def to_input(self, image: Any, image_id: str | None = None) -> InputImage:
        """Decode a path (PNG/JPEG/DICOM) or wrap an ndarray / PIL image."""
        if isinstance(image, InputImage):
            return image
        if isinstance(image, str | os.PathLike):
            return self._load(image, image_id)
        return array_input(image, self.data.in_channels, image_id or "array")

    def _load(self, path: str | os.PathLike, image_id: str | None) -> InputImage:
        return load_input(
            path,
            self.data.in_channels,
            image_id,
            max_pixels_limit=self.max_pixels,
            voi=self.voi,
            png16=self.png16,
        )

    def predict(self, image: Any, *, image_id: str | None = None, keep_pixels: bool = False):
        """Predict one image: a PNG/JPEG/DICOM path, an ndarray or a PIL image."""
        return self.predict_inputs([self.to_input(image, image_id)], keep_pixels=keep_pixels)[0]

    def prepare(self, item: InputImage, *, keep_pixels: bool = False) -> _Prepared:
        """The network input of ``item`` (the record's resize + normalise), and the image shrunk
        to ``display_max_side`` when ``keep_pixels``."""
        if threading.current_thread() is threading.main_thread():
            transform = self.transform
        else:
            transform = getattr(self._local, "transform", None)
            if transform is None:
                transform = self._local.transform = self.data.eval_transform()
        tensor = apply_transform(transform, item.pixels)[0]
        pixels, scale = None, 1.0
        if keep_pixels:
            pixels = item.pixels
            scale = display_scale(pixels.shape, self.display_max_side)
            if scale < 1.0:
                height, width = pixels.shape[:2]
                size = (max(1, round(width * scale)), max(1, round(height * scale)))  # (w, h)
                pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
                pixels = pixels.reshape(size[1], size[0], -1)
        return _Prepared(
            item.image_id,
            item.path,
            item.size,
            tensor,
            pixels,
            scale,
            pixel_spacing=item.pixel_spacing,
            spacing_attribute=item.spacing_attribute,
            reading=item.reading,
        )

    def predict_inputs(
        self, inputs: Sequence[InputImage], *, keep_pixels: bool = False
    ) -> list[Prediction]:
        """Predict decoded inputs, ``batch_size`` at a time."""
        results: list[Prediction] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            results += self._predict_prepared(
                [self.prepare(i, keep_pixels=keep_pixels) for i in chunk]
            )
        return results

    @torch.inference_mode()
    def _predict_prepared(self, chunk: Sequence[_Prepared]) -> list[Prediction]:
        if not chunk:
            return []
        probabilities, cams = self.forward(torch.stack([item.tensor for item in chunk]))
        peaks = peaks_in_original(cams, self.data.size, [item.size for item in chunk])
        return [
            self._result(item, probabilities[i], cams[i], peaks[i]) for i, item in enumerate(chunk)
        ]

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``(N, C, size, size)`` batch -> (probabilities ``(N, K)``, raw CAM ``(N, K, h,
        w)``), both float32 on the CPU."""
        batch = self.execution.prepare_input(batch.to(self.device))
        with self.execution.autocast():
            output = self.model(batch)
        return output.logits.float().sigmoid().cpu(), output.cam.float().contiguous().cpu()

    def _result(self, item: _Prepared, probs, cam, peaks) -> Prediction:
        names = self.data.class_names
        probabilities = {c: float(p) for c, p in zip(names, probs.tolist(), strict=True)}
        if self.classes is not None:
            selected = list(self.classes)
        else:
            selected = [c for c in names if probabilities[c] >= self.threshold]
        return Prediction(
            image_id=item.image_id,
            path=str(item.path) if item.path is not None else None,
            original_size=item.size,
            probabilities=probabilities,
            peaks=dict(zip(names, peaks, strict=True)),
            selected=selected,
            cam=cam,
            pixels=item.pixels,
            pixels_scale=item.pixels_scale,
            warnings=list(item.warnings),
            pixel_spacing=item.pixel_spacing,
            spacing_attribute=item.spacing_attribute,
            reading=item.reading,
        )

    def iter_predict(
        self,
        inputs: Iterable[str | os.PathLike],
        *,
        recursive: bool = False,
        skip_errors: bool = False,
        keep_pixels: bool = False,
    ) -> Iterator[Prediction | Failure]:
        """Predict files and folders lazily, decoding the next batch while the model runs.

        With ``skip_errors`` an unreadable file yields a :class:`Failure` (file and reason)
        instead of raising, and the other files are still processed.
        """
        items = gather_inputs(inputs, recursive=recursive)
        return self.iter_items(items, skip_errors=skip_errors, keep_pixels=keep_pixels)

    def iter_items(
        self,
        items: Sequence[tuple[str, Path]],
        *,
        skip_errors: bool = False,
        keep_pixels: bool = False,
        messages: DecoderMessages | None = None,
    ) -> Iterator[Prediction | Failure]:
        """:meth:`iter_predict` over ``(image_id, path)`` pairs from ``gather_inputs``.

        Args:
            items: the ``(image_id, path)`` pairs.
            skip_errors: yield a :class:`Failure` for an unreadable file instead of raising.
            keep_pixels: keep the (display-sized) image in each result, for overlays.
            messages: an entered :class:`~pylon.inference.capture.DecoderMessages`: what the
                decoders warn about a file (Python warnings, libpng's stderr lines) goes into
                its result's ``warnings`` instead of the terminal (decodes are then serialised).

        Yields:
            A :class:`Prediction` or :class:`Failure` per item, in order.
        """

        def read(item: tuple[str, Path]) -> _Prepared | Failure:
            image_id, path = item
            found: list[str] = []
            try:
                with messages.file() if messages else contextlib.nullcontext(found) as found:
                    image = self._load(path, image_id)
                prepared = self.prepare(image, keep_pixels=keep_pixels)
                prepared.warnings = found
                return prepared
            except (ValueError, OSError) as err:
                if not skip_errors:
                    raise
                return Failure(image_id, str(path), str(err), found)

        chunks = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            # decode and resize the next batch in threads while the model runs on this one; only
            # network-sized tensors (and display-sized pixels) outlive a decode
            pending = [pool.submit(read, item) for item in chunks[0]] if chunks else []
            for k in range(len(chunks)):
                decoded = [future.result() for future in pending]
                if k + 1 < len(chunks):
                    pending = [pool.submit(read, item) for item in chunks[k + 1]]
                images = [d for d in decoded if isinstance(d, _Prepared)]
                predicted = iter(self._predict_prepared(images))
                for d in decoded:
                    yield d if isinstance(d, Failure) else next(predicted)

    def predict_many(
        self,
        inputs: Iterable[str | os.PathLike],
        *,
        recursive: bool = False,
        skip_errors: bool = False,
    ) -> list[Prediction | Failure]:
        """:meth:`iter_predict` as a list (files in folder order, batched)."""
        return list(self.iter_predict(inputs, recursive=recursive, skip_errors=skip_errors))
