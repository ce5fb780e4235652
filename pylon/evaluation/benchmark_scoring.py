"""Scoring one (trained model, map method) pair of the benchmark into per-pair records.

Every (image, class) pair with a ground-truth box of that class gets one map: the model's own CAM
shown as a heatmap (``sigmoid(cam)`` at the CAM's resolution, what the paper's point metric
up-samples) or a post-hoc method's map (pytorch-grad-cam: in [0, 1] at the input size). Each
metric of ``pylon.metrics`` then scores that map against the pair's boxes, and the records of
all metrics are kept in one flat dict of tensors (saved with safetensors, so the benchmark
resumes and the viewer reads them without re-running the model).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import Tensor, nn

from pylon.metrics.chexlocalize import hit_rate, segmentation_iou
from pylon.metrics.faithfulness import causal_curves, confidence_change, road
from pylon.metrics.maxboxacc import BoxIoURecords, box_iou_records
from pylon.metrics.pairs import score_pairs
from pylon.metrics.pointing import energy_pointing_game, pointing_game
from pylon.metrics.records import PairRecords
from pylon.metrics.sizes import records_from_pair_scores
from pylon.models.precision import Execution

OWN = "own"
# Metrics stored as PairRecords, in the order of the tables.
PAIR_METRICS = (
    "point",
    "pointing_game",
    "energy_pg",
    "hit_rate",
    "seg_iou",
    "iobb0.5",
)
FAITHFULNESS_METRICS = (
    "deletion_auc",
    "insertion_auc",
    "average_drop",
    "increase",
    "road_morf",
    "road_lerf",
    "road_combined",
)


@dataclass(frozen=True)
class BenchmarkOptions:
    """What the benchmark computes; part of every records file's key (changing one recomputes).

    Attributes:
        tolerance: the pointing game's tolerance in input pixels (TorchRay's 15 was defined on
            ~500 px VOC images).
        cam_interval: MaxBoxAcc's threshold grid ``np.arange(0, 1, cam_interval)`` (0.001: the
            paper's; any grid finer than 1/255 gives the same figure).
        faithfulness_images: images with boxes whose pairs also get deletion / insertion curves
            and average drop (the first ones of the split; 0 turns faithfulness off).
        deletion_steps: points of the deletion / insertion curves (minus one).
        road_percentiles: ROAD's removal percentiles (pytorch-grad-cam's default is 10..90;
            three keep its sparse in-painting solves affordable on a CPU).
        batch_size: images per own-CAM forward, pairs per grad-cam call.
    """

    tolerance: int = 15
    cam_interval: float = 0.001
    faithfulness_images: int = 16
    deletion_steps: int = 50
    road_percentiles: tuple[int, ...] = (20, 50, 80)
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.tolerance < 1:
            raise ValueError(f"tolerance must be >= 1 pixel, got {self.tolerance}")
        if not 0 < self.cam_interval < 1:
            raise ValueError(f"cam_interval must lie in (0, 1), got {self.cam_interval}")
        if self.faithfulness_images < 0:
            raise ValueError(f"faithfulness_images must be >= 0, got {self.faithfulness_images}")
        if not self.road_percentiles or any(not 0 < p < 100 for p in self.road_percentiles):
            raise ValueError(
                f"road_percentiles must be values in (0, 100), got {self.road_percentiles}"
            )
        if self.deletion_steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"deletion_steps={self.deletion_steps}, batch_size={self.batch_size}: "
                "expected integers >= 1"
            )

    def as_dict(self) -> dict[str, object]:
        """The options as plain values (for the records' metadata)."""
        return asdict(self)


@dataclass
class PairBlock:
    """One block of images with boxes, as (image, class) pairs.

    Attributes:
        images: (N, C, H, W) network inputs.
        boxes: per image, ``(x, y, w, h, class_index)`` in input pixels.
        offset: the index of the block's first image among all images scored.
        image_ids: per image, its id.
        pairs: (image in block, class) for every pair with a box, image then class order.
    """

    images: Tensor
    boxes: list[list[tuple]]
    offset: int
    image_ids: list[str] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.pairs = sorted({(i, int(b[4])) for i, bs in enumerate(self.boxes) for b in bs})

    def pair_boxes(self) -> list[list[tuple]]:
        """Per pair, its class's boxes relabelled as class 0 (maps are scored one per pair)."""
        return [[(*b[:4], 0) for b in self.boxes[i] if int(b[4]) == c] for i, c in self.pairs]

    def pair_indices(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(global image, class) of the pairs ``rows`` (default: every pair, in order), (P,)
        long each: what the per-pair maps' row indices stand for."""
        image = torch.tensor([i for i, _ in self.pairs], dtype=torch.long) + self.offset
        cls = torch.tensor([c for _, c in self.pairs], dtype=torch.long)
        return (image, cls) if rows is None else (image[rows], cls[rows])

    def relabel(self, records: PairRecords) -> PairRecords:
        """Records of the per-pair maps back to (global image, class) indices."""
        image, cls = self.pair_indices(records.image_index)
        return PairRecords(image, cls, records.value, records.box_area, records.image_area)


def own_maps(model: nn.Module, execution: Execution | None, block: PairBlock, batch: int) -> Tensor:
    """The model's heatmap of each pair, ``sigmoid(cam)`` float32 (P, 1, h, w)."""
    device = next(model.parameters()).device
    cams = []
    with torch.no_grad():
        for first in range(0, len(block.images), batch):
            x = block.images[first : first + batch].to(device)
            if execution is not None:
                with execution.autocast():
                    cam = model(execution.prepare_input(x)).cam
            else:
                cam = model(x).cam
            cams.append(torch.sigmoid(cam.float()).cpu())
    cam = torch.cat(cams)
    return torch.stack([cam[i, c] for i, c in block.pairs])[:, None]


class SigmoidTarget:
    """pytorch-grad-cam target: the sigmoid of one class's logit (a multi-label model's score;
    the library's ``ClassifierOutputTarget`` is the raw logit, its softmax target is for
    single-label models)."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.sigmoid(model_output[..., self.category])


def posthoc_pair_maps(cam_method, block: PairBlock, batch: int) -> Tensor:
    """A pytorch-grad-cam method's map of each pair (P, 1, H, W) in [0, 1], one
    :class:`SigmoidTarget` each."""
    maps = []
    for start in range(0, len(block.pairs), batch):
        chunk = block.pairs[start : start + batch]
        x = block.images[[i for i, _ in chunk]]
        targets = [SigmoidTarget(c) for _, c in chunk]
        with contextlib.redirect_stderr(io.StringIO()):  # ScoreCAM's tqdm bars
            maps.append(torch.from_numpy(cam_method(input_tensor=x, targets=targets)).float())
    return torch.cat(maps)[:, None]


def score_maps(
    maps: Tensor,
    block: PairBlock,
    options: BenchmarkOptions,
    timings: dict[str, float] | None = None,
) -> dict[str, object]:
    """Every localization metric of the block's per-pair maps.

    Args:
        maps: (P, 1, h, w) heatmaps in [0, 1], one per pair of ``block``.
        block: the pairs and their boxes.
        options: tolerance and threshold grid.
        timings: if given, the seconds of each metric family are added to it.

    Returns:
        ``{metric: PairRecords}`` for :data:`PAIR_METRICS` and ``"maxboxacc"``:
        :class:`BoxIoURecords` (all contours, MaxBoxAccV2), indices global.
    """
    size = tuple(block.images.shape[-2:])
    boxes = block.pair_boxes()
    timings = {} if timings is None else timings
    out: dict[str, object] = {}
    with timed(timings, "paper (point, IoBB)"):
        scores = score_pairs(maps, boxes, size, apply_sigmoid=False)
        out["point"] = records_from_pair_scores(scores, size, value="point")
        out["iobb0.5"] = records_from_pair_scores(scores, size, value="iobb", threshold=0.5)
    with timed(timings, "pointing games"):
        out["pointing_game"] = pointing_game(maps, boxes, size, tolerance=options.tolerance)
        out["energy_pg"] = energy_pointing_game(maps, boxes, size)
    with timed(timings, "CheXlocalize"):
        out["hit_rate"] = hit_rate(maps, boxes, size)
        out["seg_iou"] = segmentation_iou(maps, boxes, size, threshold="otsu")
    out = {name: block.relabel(records) for name, records in out.items()}
    with timed(timings, "MaxBoxAccV2"):
        grid = np.arange(0, 1, options.cam_interval)
        box = box_iou_records(maps, boxes, size, cam_thresholds=grid, multi_contour=True)
    image, cls = block.pair_indices(box.image_index)
    out["maxboxacc"] = BoxIoURecords(
        image,
        cls,
        box.iou,
        box.box_area,
        box.image_area,
        box.cam_thresholds,
        box.multi_contour,
    )
    return out


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time to ``timings[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def score_faithfulness(
    score_fn: Callable[[Tensor], Tensor],
    maps: Tensor,
    block: PairBlock,
    options: BenchmarkOptions,
    box_area: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, object]:
    """Deletion / insertion areas and curves, average drop and increase, and ROAD of each
    pair's map.

    Args:
        score_fn: inputs -> class probabilities.
        maps: (P, 1, h, w) heatmaps in [0, 1], one per pair of ``block``.
        block: the pairs.
        options: the curves' steps.
        box_area: (P,) pixels of each pair's boxes (the localization records' ``box_area``).
        mean, std: the input normalisation (average drop multiplies the image before it).

    Returns:
        ``{metric: PairRecords}`` for :data:`FAITHFULNESS_METRICS` plus ``"deletion_curves"``
        and ``"insertion_curves"`` (P, points) float64.
    """
    size = tuple(block.images.shape[-2:])
    up = torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    up = up[:, 0].clamp(0, 1)
    images = block.images[[i for i, _ in block.pairs]]
    classes = [c for _, c in block.pairs]
    out: dict[str, object] = {}
    for mode in ("deletion", "insertion"):
        curves, auc = causal_curves(
            score_fn, images, up, classes, mode=mode, steps=options.deletion_steps,
            batch_size=max(options.batch_size, 16),
        )  # fmt: skip
        out[f"{mode}_curves"] = curves
        out[f"{mode}_auc"] = auc
    change = confidence_change(score_fn, images, up, classes, mean=mean, std=std)
    out["average_drop"], out["increase"] = change["drop"], change["increase"]
    removal = road(score_fn, images, up, classes, percentiles=options.road_percentiles)
    for key in ("morf", "lerf", "combined"):
        out[f"road_{key}"] = removal[key]
    image, cls = block.pair_indices()
    area = torch.full((len(classes),), size[0] * size[1], dtype=torch.long)
    for name in FAITHFULNESS_METRICS:
        out[name] = PairRecords(image, cls, out[name].double(), box_area, area)
    return out


def flatten(results: dict[str, object]) -> dict[str, Tensor]:
    """Records as one flat dict of tensors (``metric/field``), for safetensors."""
    flat: dict[str, Tensor] = {}
    for name, value in results.items():
        if isinstance(value, Tensor):
            flat[name] = value.contiguous()
        elif isinstance(value, BoxIoURecords):
            for f in ("image_index", "class_index", "iou", "box_area", "image_area"):
                flat[f"{name}/{f}"] = getattr(value, f).contiguous()
            flat[f"{name}/cam_thresholds"] = value.cam_thresholds.contiguous()
        else:
            for f in fields(PairRecords):
                flat[f"{name}/{f.name}"] = getattr(value, f.name).contiguous()
    return flat


def unflatten(flat: dict[str, Tensor]) -> dict[str, object]:
    """The inverse of :func:`flatten`."""
    groups: dict[str, dict[str, Tensor]] = {}
    out: dict[str, object] = {}
    for key, tensor in flat.items():
        if "/" in key:
            name, part = key.split("/", 1)
            groups.setdefault(name, {})[part] = tensor
        else:
            out[key] = tensor
    for name, parts in groups.items():
        if "iou" in parts:
            out[name] = BoxIoURecords(
                parts["image_index"],
                parts["class_index"],
                parts["iou"],
                parts["box_area"],
                parts["image_area"],
                parts["cam_thresholds"],
                True,
            )
        else:
            out[name] = PairRecords(**parts)
    return out


def concatenate(parts: Sequence[dict[str, object]]) -> dict[str, object]:
    """The results of several blocks as one (records concatenated, curves stacked)."""
    if not parts:
        return {}
    out: dict[str, object] = {}
    for name in parts[0]:
        values = [p[name] for p in parts if name in p]
        first = values[0]
        if isinstance(first, PairRecords):
            out[name] = PairRecords.cat(values)
        elif isinstance(first, BoxIoURecords):
            out[name] = BoxIoURecords.cat(values)
        else:
            out[name] = torch.cat(values)
    return out


def blocks(dataset, indices: Sequence[int], block_images: int = 32) -> Iterator[PairBlock]:
    """The images ``indices`` of ``dataset`` (each with boxes) in blocks of pairs."""
    offset = 0
    for start in range(0, len(indices), block_images):
        samples = [dataset[i] for i in indices[start : start + block_images]]
        images = torch.stack([s["image"] for s in samples])
        boxes = [[tuple(b) for b in s["boxes"]] for s in samples]
        yield PairBlock(images, boxes, offset, [str(s["image_id"]) for s in samples])
        offset += len(samples)
