"""Point localization and IoBB / IoU accuracy of class activation maps against ground-truth boxes.

For every (image, class) pair with at least one box of that class, ``sigmoid(cam)`` (float32) is
up-sampled bilinearly (``align_corners=False``) to the input size (H, W). Point: the arg-max pixel
(row, col), first in row-major order on ties, hits if ``x <= col <= x + w and y <= row <= y + h``
for any of the boxes. IoBB / IoU: the map divided by its maximum and thresholded ``> 0.5`` is the
mask; the ground truth is the union of the boxes, each covering rows ``int(y) .. int(y)+int(h)-1``
and columns ``int(x) .. int(x)+int(w)-1``; a hit if ``|mask & gt| / |mask|`` (IoBB) or
``|mask & gt| / |mask | gt|`` (IoU) exceeds the threshold. Vectorised over pairs, in chunks.

The up-sampled map is never materialised (``pylon.metrics.scoring``): its values are computed
exactly (float64, from torch's float32 sigmoid and torch's own interpolation weights) where they
matter, so results equal a per-image ``F.interpolate`` loop except for pixels whose value lies
within float32 rounding of the peak or of the 0.5 threshold, where torch's float32 rounding may
decide differently (measure zero for real maps; exact ties are handled as torch handles them).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pylon.metrics.bilinear import BLOCK, block_bounds
from pylon.metrics.scoring import score_chunk

DEFAULT_THRESHOLDS = (0.1, 0.25, 0.5)
# Source maps per chunk: a float32 buffer (reused across chunks), the per-cell work and an
# edge-padded copy when the sides are not multiples of the block size. About 85 maps of 256x256:
# the fastest chunk measured on CPU (per-call overhead against cache misses).
_CHUNK_BYTES = 64 * 2**20
_BYTES_PER_SOURCE_PIXEL = 12
# Maps scored in place need no buffer: bounds and per-cell work only.
_BYTES_PER_SOURCE_PIXEL_IN_PLACE = 2
# Maps gathered and checked (and bounded, or put through the sigmoid) at a time, while they are
# in the cache: 4 MiB of 256x256 maps, which on 2 threads is one core's L2 cache each.
_MAPS_IN_CACHE = 16


@dataclass
class PairScores:
    """Per (image, class) pair results of one ``update``; images index into that batch.

    ``peak_row``/``peak_col`` are the arg-max of the up-sampled map in input pixels; ``iobb`` is
    ``|mask & gt| / |mask|`` and ``iou`` is ``|mask & gt| / |mask | gt|`` (NaN when undefined).
    """

    image_index: Tensor  # (P,) long
    class_index: Tensor  # (P,) long
    peak_row: Tensor  # (P,) long
    peak_col: Tensor  # (P,) long
    point_hit: Tensor  # (P,) bool
    iobb: Tensor  # (P,) float64
    iou: Tensor  # (P,) float64

    def __len__(self) -> int:
        return len(self.image_index)


def _as_cams(cams, num_classes: int | None = None) -> Tensor:
    if isinstance(cams, np.ndarray):
        cams = torch.from_numpy(cams)
    if not isinstance(cams, Tensor):
        raise ValueError(f"cams must be a torch.Tensor or numpy array, got {type(cams).__name__}")
    if cams.ndim != 4:
        raise ValueError(f"cams must have shape (N, C, h, w), got {tuple(cams.shape)}")
    if num_classes is not None and cams.shape[1] != num_classes:
        raise ValueError(f"cams have {cams.shape[1]} classes, expected {num_classes}")
    if not cams.is_floating_point():
        raise ValueError(f"cams must be floating point, got {cams.dtype}")
    return cams.detach()


def _check_maps(maps: Tensor, images: Tensor, classes: Tensor, apply_sigmoid: bool) -> None:
    """Only the maps that are scored are checked: a NaN elsewhere cannot change the result."""
    # One cheap pass when all is well: a NaN or infinity anywhere makes the sum non-finite.
    fine = torch.isfinite(maps.sum(dim=(1, 2))).all()
    if not apply_sigmoid:
        fine &= maps.amin() >= 0
    if bool(fine):
        return
    bad = ~torch.isfinite(maps).flatten(1).all(dim=1)
    if not apply_sigmoid:
        bad |= (maps < 0).flatten(1).any(dim=1)
    if bad.any():
        k = int(bad.nonzero()[0, 0])
        where = f"cams[{int(images[k])}, {int(classes[k])}]"
        if not torch.isfinite(maps[k]).all():
            raise ValueError(f"{where} contains NaN or infinite values")
        raise ValueError(
            f"{where} has negative values but apply_sigmoid=False expects probabilities in "
            "[0, 1]; pass raw scores with apply_sigmoid=True"
        )


@dataclass
class _Prepared:
    """The maps of a chunk's pairs: pair ``p`` is map ``index[p]`` of ``maps`` (M, h, w), raw
    scores whose sigmoid is the probability if ``logits``; ``bounds`` their ``block_bounds`` (of
    the values in ``maps``), or None."""

    maps: Tensor
    index: Tensor | None
    logits: bool
    bounds: tuple[Tensor, Tensor] | None


def _prepare_maps(cams, images, classes, apply_sigmoid: bool, out: Tensor) -> _Prepared:
    """The scored maps, checked.

    Float32 maps with sides multiples of the block size stay where they are, raw: only their
    block bounds are computed (the sigmoid is monotonic) and checked, a few maps at a time in a
    small buffer that stays in the cache. Other maps are copied into ``out`` (P, h, w) as float32
    probabilities.
    """
    flat = cams.flatten(0, 1)
    index = (images * cams.shape[1] + classes).to(cams.device)
    if _in_place(cams):
        bounds = []
        scratch = out[:_MAPS_IN_CACHE]
        for start in range(0, len(index), _MAPS_IN_CACHE):
            part = slice(start, start + _MAPS_IN_CACHE)
            maps = torch.index_select(flat, 0, index[part], out=scratch[: len(index[part])])
            low, high = block_bounds(maps)
            # A NaN (which amin / amax propagate) or an infinity shows in the bounds, and in their
            # sum (which may also overflow: then the full check finds nothing wrong).
            fine = torch.isfinite(low.sum() + high.sum())
            if not apply_sigmoid:
                fine &= low.amin() >= 0
            if not bool(fine):
                _check_maps(maps, images[part], classes[part], apply_sigmoid)
            bounds.append((low, high))
        bounds = (torch.cat([low for low, _ in bounds]), torch.cat([high for _, high in bounds]))
        return _Prepared(flat, index, apply_sigmoid, bounds)

    # A few maps at a time, so that the check and the sigmoid find them in the cache.
    for start in range(0, len(index), _MAPS_IN_CACHE):
        part = slice(start, start + _MAPS_IN_CACHE)
        if flat.dtype == torch.float32:
            maps = torch.index_select(flat, 0, index[part], out=out[part])
        else:
            maps = out[part].copy_(flat.index_select(0, index[part]))
        _check_maps(maps, images[part], classes[part], apply_sigmoid)
        if apply_sigmoid:
            maps.sigmoid_()
    return _Prepared(out, None, False, None)


def _in_place(cams: Tensor) -> bool:
    """Whether ``_prepare_maps`` scores the maps where they are (it needs no buffer then)."""
    aligned = cams.shape[2] % BLOCK == 0 and cams.shape[3] % BLOCK == 0
    return aligned and cams.dtype == torch.float32


def _as_image_size(image_size) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), got {image_size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


def _flatten_valid_boxes(boxes, num_classes: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """All boxes at once through numpy; None when anything is off (the loop then names it)."""
    counts = [len(image_boxes) for image_boxes in boxes]
    flat = [box for image_boxes in boxes for box in image_boxes]
    if not flat:
        return None
    try:
        array = np.asarray(flat)
    except (TypeError, ValueError):  # ragged
        return None
    if array.dtype.kind not in "biuf" or array.shape != (len(flat), 5):
        return None
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        return None
    cls = array[:, 4]
    if (array[:, 2:4] < 0).any() or (cls != np.round(cls)).any():
        return None
    if (cls < 0).any() or (cls >= num_classes).any():
        return None
    images = np.repeat(np.arange(len(boxes)), counts)
    return (
        torch.from_numpy(images).long(),
        torch.from_numpy(cls).long(),
        torch.from_numpy(array[:, :4].copy()),
    )


def _flatten_boxes(boxes, num_images: int, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Validate ``boxes`` and return (image index, class index, xywh float64) per box."""
    if len(boxes) != num_images:
        raise ValueError(f"boxes has {len(boxes)} entries but cams has {num_images} images")
    fast = _flatten_valid_boxes(boxes, num_classes)
    if fast is not None:
        return fast
    images, classes, coords = [], [], []
    for i, image_boxes in enumerate(boxes):
        for j, box in enumerate(image_boxes):
            where = f"boxes[{i}][{j}]"
            if len(box) != 5:
                raise ValueError(f"{where} must be (x, y, w, h, class_index), got {box!r}")
            *xywh, cls = (b.item() if isinstance(b, (Tensor, np.generic)) else b for b in box)
            if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in xywh):
                raise ValueError(f"{where}: x, y, w, h must be finite numbers, got {box!r}")
            if xywh[2] < 0 or xywh[3] < 0:
                raise ValueError(f"{where}: width and height must be >= 0, got {box!r}")
            if isinstance(cls, float) and cls.is_integer():
                cls = int(cls)
            if not isinstance(cls, numbers.Integral) or not 0 <= cls < num_classes:
                raise ValueError(
                    f"{where}: class_index must be an integer in [0, {num_classes}), got {cls!r}"
                )
            images.append(i)
            classes.append(int(cls))
            coords.append([float(v) for v in xywh])
    return (
        torch.tensor(images, dtype=torch.long),
        torch.tensor(classes, dtype=torch.long),
        torch.tensor(coords, dtype=torch.float64).reshape(-1, 4),
    )


def score_pairs(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    apply_sigmoid: bool = True,
    chunk_pairs: int | None = None,
) -> PairScores:
    """Score every (image, class) pair that has at least one box (rules in the module docstring).

    ``cams`` (N, C, h, w) raw scores (or probabilities with ``apply_sigmoid=False``); ``boxes`` a
    list of N lists of ``(x, y, w, h, class_index)`` in input pixels; ``image_size`` = (H, W) of
    the network input. Only the maps of pairs with boxes are scored, ``chunk_pairs`` at a time,
    on the device of ``cams``; the scores come back on the CPU. Only scored maps are validated.
    """
    cams = _as_cams(cams)
    image_size = _as_image_size(image_size)
    num_images, num_classes = cams.shape[:2]
    box_image, box_class, box_xywh = _flatten_boxes(boxes, num_images, num_classes)
    keys, box_pair = torch.unique(box_image * num_classes + box_class, return_inverse=True)
    order = torch.argsort(box_pair, stable=True)
    box_pair, box_xywh = box_pair[order], box_xywh[order]
    pair_image, pair_class = keys // num_classes, keys % num_classes
    num_pairs = len(keys)
    in_place = _in_place(cams)
    if chunk_pairs is None:
        pixels = cams.shape[2] * cams.shape[3]
        budget = _CHUNK_BYTES if cams.device.type == "cpu" else 32 * _CHUNK_BYTES
        per_pixel = _BYTES_PER_SOURCE_PIXEL_IN_PLACE if in_place else _BYTES_PER_SOURCE_PIXEL
        chunk_pairs = max(1, budget // (per_pixel * pixels))

    outputs = []
    # One buffer for every chunk: a fresh one each time would page-fault in its memory again.
    buffered = min(_MAPS_IN_CACHE if in_place else chunk_pairs, num_pairs)
    buffer = cams.new_empty((buffered, *cams.shape[2:]), dtype=torch.float32)
    # Many small tensor operations: inference mode trims their overhead. The results are
    # concatenated outside it, so the caller gets ordinary tensors.
    with torch.inference_mode():
        for start in range(0, num_pairs, chunk_pairs):
            stop = min(start + chunk_pairs, num_pairs)
            images, classes = pair_image[start:stop], pair_class[start:stop]
            prepared = _prepare_maps(cams, images, classes, apply_sigmoid, buffer[: stop - start])
            first, last = torch.searchsorted(box_pair, torch.tensor([start, stop])).tolist()
            chunk_boxes = (box_pair[first:last] - start, box_xywh[first:last])
            chunk_boxes = [t.to(cams.device) for t in chunk_boxes]
            scores = score_chunk(
                prepared.maps,
                *chunk_boxes,
                image_size,
                prepared.bounds,
                map_index=prepared.index,
                logits=prepared.logits,
            )
            outputs.append([t.cpu() for t in scores])
    if outputs:
        peak_row, peak_col, point_hit, iobb, iou = (
            torch.cat(t) for t in zip(*outputs, strict=True)
        )
    else:
        peak_row = peak_col = torch.zeros(0, dtype=torch.long)
        point_hit = torch.zeros(0, dtype=torch.bool)
        iobb = iou = torch.zeros(0, dtype=torch.float64)
    return PairScores(pair_image, pair_class, peak_row, peak_col, point_hit, iobb, iou)


def _threshold_key(t: float) -> str:
    return f"{t:g}"


class LocalizationAccumulator:
    """Streaming point / IoBB / IoU accuracy: ``update`` per batch, then ``compute``.

    The state is integer counts per class (``counts()``), so accumulators from several processes
    combine exactly by summing them (``merge`` or ``from_counts``).
    """

    def __init__(
        self,
        num_classes: int,
        image_size: tuple[int, int],
        *,
        class_names: Sequence[str] | None = None,
        apply_sigmoid: bool = True,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        chunk_pairs: int | None = None,
    ):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class_names for {num_classes} classes")
        if any(not 0 <= t < 1 for t in thresholds):
            raise ValueError(f"thresholds must lie in [0, 1), got {tuple(thresholds)}")
        self.num_classes = num_classes
        self.image_size = _as_image_size(image_size)
        self.class_names = list(class_names) if class_names is not None else None
        self.apply_sigmoid = apply_sigmoid
        self.thresholds = tuple(float(t) for t in thresholds)
        self.chunk_pairs = chunk_pairs
        num_t = len(self.thresholds)
        self.pairs = torch.zeros(num_classes, dtype=torch.long)
        self.point_hits = torch.zeros(num_classes, dtype=torch.long)
        self.iobb_hits = torch.zeros(num_t, num_classes, dtype=torch.long)
        self.iou_hits = torch.zeros(num_t, num_classes, dtype=torch.long)

    def update(self, cams, boxes: Sequence[Sequence]) -> PairScores:
        """Add one batch; returns its per-pair scores (e.g. to pick heatmaps to draw)."""
        cams = _as_cams(cams, self.num_classes)
        scores = score_pairs(
            cams,
            boxes,
            self.image_size,
            apply_sigmoid=self.apply_sigmoid,
            chunk_pairs=self.chunk_pairs,
        )
        cls = scores.class_index
        self.pairs.index_add_(0, cls, torch.ones_like(cls))
        self.point_hits.index_add_(0, cls, scores.point_hit.long())
        for k, t in enumerate(self.thresholds):
            self.iobb_hits[k].index_add_(0, cls, (scores.iobb > t).long())
            self.iou_hits[k].index_add_(0, cls, (scores.iou > t).long())
        return scores

    def counts(self) -> dict[str, Tensor]:
        """The integer state: sum these across processes to combine accumulators."""
        return {
            "pairs": self.pairs,
            "point_hits": self.point_hits,
            "iobb_hits": self.iobb_hits,
            "iou_hits": self.iou_hits,
        }

    def load_counts(self, counts: dict[str, Tensor]) -> LocalizationAccumulator:
        """Replace the state with ``counts`` (e.g. summed over DDP ranks); returns ``self``."""
        for name, current in self.counts().items():
            value = torch.as_tensor(counts[name], dtype=torch.long).cpu()
            if value.shape != current.shape:
                raise ValueError(
                    f"counts[{name!r}] has shape {tuple(value.shape)}, "
                    f"expected {tuple(current.shape)}"
                )
            setattr(self, name, value.clone())
        return self

    @classmethod
    def from_counts(cls, counts: dict[str, Tensor], **kwargs) -> LocalizationAccumulator:
        """Build an accumulator holding ``counts``; ``kwargs`` as for the constructor."""
        num_classes = len(counts["pairs"])
        return cls(num_classes, **kwargs).load_counts(counts)

    def merge(self, other: LocalizationAccumulator) -> LocalizationAccumulator:
        """Add ``other``'s counts into this accumulator; returns ``self``."""
        if (other.num_classes, other.image_size, other.thresholds) != (
            self.num_classes,
            self.image_size,
            self.thresholds,
        ):
            raise ValueError("cannot merge accumulators with different classes, size or thresholds")
        summed = {k: v + other.counts()[k] for k, v in self.counts().items()}
        return self.load_counts(summed)

    def _name(self, c: int) -> str:
        return self.class_names[c] if self.class_names is not None else str(c)

    def _report(self, prefix: str, hits: Tensor, out: dict[str, float]) -> None:
        has = self.pairs > 0
        total = int(self.pairs[has].sum())
        per_class = hits[has].double() / self.pairs[has].double()
        out[f"{prefix}_weighted"] = int(hits[has].sum()) / total if total else math.nan
        out[f"{prefix}_macro"] = float(per_class.mean()) if total else math.nan
        for c in has.nonzero().flatten().tolist():
            out[f"{prefix}_{self._name(c)}"] = int(hits[c]) / int(self.pairs[c])

    def compute(self) -> dict[str, float]:
        """Accuracies: ``*_weighted`` pools pairs, ``*_macro`` averages classes that have pairs."""
        if int(self.pairs.sum()) == 0:
            warnings.warn("no ground-truth boxes seen: localization accuracy is NaN", stacklevel=2)
        out: dict[str, float] = {}
        self._report("point_acc", self.point_hits, out)
        for k, t in enumerate(self.thresholds):
            self._report(f"iobb{_threshold_key(t)}", self.iobb_hits[k], out)
        for k, t in enumerate(self.thresholds):
            self._report(f"iou{_threshold_key(t)}", self.iou_hits[k], out)
        return out


def localization_accuracy(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    class_names: Sequence[str] | None = None,
    apply_sigmoid: bool = True,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Point, IoBB and IoU accuracy of one batch of CAMs (a one-shot ``LocalizationAccumulator``).

    Keys: ``point_acc_{weighted,macro,<class>}``, ``iobb<t>_...`` and ``iou<t>_...`` per threshold
    ``t``; ``<class>`` is the class name (or index); classes without boxes are omitted.
    """
    cams = _as_cams(cams)
    acc = LocalizationAccumulator(
        cams.shape[1],
        image_size,
        class_names=class_names,
        apply_sigmoid=apply_sigmoid,
        thresholds=thresholds,
    )
    acc.update(cams, boxes)
    return acc.compute()
