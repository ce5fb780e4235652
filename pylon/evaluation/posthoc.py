"""Post-hoc CAM methods (pytorch-grad-cam) on a trained model, scored like the model's own CAM."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from pytorch_grad_cam import (
    EigenCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from pylon.io import write_csv_atomic
from pylon.metrics import LocalizationAccumulator
from pylon.models.precision import Execution
from pylon.progress import Progress

METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "gradcamelementwise": GradCAMElementWise,
    "shapleycam": ShapleyCAM,
    "fullgrad": FullGrad,  # every bias of the network: the target layer is not used
    # LayerCAM fused over the encoder's stages at strides 8, 16 and 32 (pytorch-grad-cam averages
    # the layers' maps, each ReLU'd and resized to the input): the high-resolution post-hoc rival
    "layercam-multi": LayerCAM,
}
# Methods that read several encoder stages instead of one target layer.
MULTI_LAYER_STRIDES = {"layercam-multi": (8, 16, 32)}
OWN_CAM = "model_cam"
# ScoreCAM runs one forward per activation channel (512 for resnet18/34, 2048 for resnet50):
# batching them this many at a time is several times faster on CPU than grad-cam's default 16.
SCORECAM_BATCH = 64


class LogitsOnly(nn.Module):
    """Exposes only ``model(x).logits``: pytorch-grad-cam expects a plain classifier output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits ``(N, classes)`` of input ``x``."""
        return self.model(x).logits


def find_encoder(model: nn.Module, hint: str = "") -> nn.Module:
    """The model's first submodule named ``encoder``; ``ValueError`` (ending with ``hint``) when
    there is none."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "encoder":
            return module
    raise ValueError(f"{type(model).__name__} has no 'encoder' submodule{hint}")


def last_encoder_stage(model: nn.Module) -> nn.Module:
    """The deepest stage of the model's smp encoder (e.g. ``layer4`` of a ResNet, whose output is
    that of ``layer4[-1]``, the reference's target layer).

    Args:
        model: a model with an ``encoder`` submodule that lists its stages (``get_stages``).

    Returns:
        The stage module. Raises ``ValueError`` when there is none (name a target layer).
    """
    encoder = find_encoder(model, "; name a target layer")
    if hasattr(encoder, "get_stages"):
        with contextlib.suppress(NotImplementedError):
            stages = encoder.get_stages()
            return list(stages[max(stages)])[-1]
    raise ValueError(
        f"encoder {type(encoder).__name__} does not list its stages; name a target layer "
        "(a dotted module path such as 'encoder.layer4')"
    )


def encoder_stages(model: nn.Module, strides: Sequence[int], probe: int = 256) -> list[nn.Module]:
    """The last of the encoder's blocks whose output has each of ``strides`` (e.g. ``layer2``,
    ``layer3``, ``layer4`` of a ResNet for 8, 16, 32), found by one probe forward of the encoder
    with hooks on its blocks (smp's ``get_stages`` only lists the stages it can dilate).

    Raises ``ValueError`` when the model has no encoder or no block at one of the strides.
    """
    encoder = find_encoder(model)
    blocks = list(encoder.children())
    while len(blocks) == 1:  # wrappers such as timm's "model"
        blocks = list(blocks[0].children())
    widths: dict[int, int] = {}

    def record(k: int):
        def hook(_module, _inputs, output):
            if isinstance(output, Tensor) and output.ndim == 4:
                widths[k] = output.shape[-1]

        return hook

    first = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
    parameter = next(encoder.parameters())
    handles = [b.register_forward_hook(record(k)) for k, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            encoder(torch.zeros(1, first.in_channels, probe, probe, device=parameter.device))
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for stride in strides:
        hits = [k for k, width in widths.items() if width == probe // stride]
        if not hits:
            raise ValueError(f"the model's encoder has no block with output stride {stride}")
        found.append(blocks[max(hits)])
    return found


def make_method(name: str, model: nn.Module, target_layer: nn.Module | None = None):
    """A pytorch-grad-cam method object on ``model``'s logits.

    Args:
        name: a key of :data:`METHODS`.
        model: the trained model (``ModelOutput``); grad-cam sees only its logits.
        target_layer: the layer single-layer methods read (default: the encoder's last stage);
            multi-layer methods read the stages of :data:`MULTI_LAYER_STRIDES`, FullGrad every
            bias.

    Returns:
        The method object; call ``obj.activations_and_grads.release()`` when done.
    """
    if name not in METHODS:
        raise ValueError(f"unknown post-hoc method {name!r}; expected one of {', '.join(METHODS)}")
    if name in MULTI_LAYER_STRIDES:
        layers = encoder_stages(model, MULTI_LAYER_STRIDES[name])
    elif METHODS[name] is FullGrad:
        layers = []
    else:
        layers = [target_layer if target_layer is not None else last_encoder_stage(model)]
    cam = METHODS[name](model=LogitsOnly(model).eval(), target_layers=layers)
    if name == "scorecam":
        cam.batch_size = SCORECAM_BATCH
    return cam


def resolve_methods(names: Iterable[str]) -> list[str]:
    """Normalise method names (lower case, stripped, duplicates dropped).

    Args:
        names: method names, e.g. ``["GradCAM++", "scorecam"]``.

    Returns:
        The names, in order, each a key of :data:`METHODS`.

    Raises:
        ValueError: listing unknown names (or none given) and the known ones.
    """
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(
            f"unknown post-hoc method(s) {unknown or names}; expected some of {', '.join(METHODS)}"
        )
    return list(dict.fromkeys(names))


@dataclass
class BoxedImages:
    """Evaluation images that have boxes: a normalised batch and their boxes/ids.

    Attributes:
        images: ``(N, C, H, W)`` network inputs.
        boxes: per image, ``(x, y, w, h, class_index)`` in input pixels.
        image_ids: per image, its id.
    """

    images: Tensor  # (N, C, H, W)
    boxes: list[list[tuple[float, float, float, float, int]]]
    image_ids: list[str]

    @classmethod
    def from_dataset(cls, dataset, max_images: int | None = None) -> BoxedImages:
        """All images of ``dataset`` that have boxes (at most ``max_images``), in one batch.

        Args:
            dataset: an evaluation dataset (samples with ``image``, ``boxes``, ``image_id``).
            max_images: stop after this many images with boxes.

        Returns:
            The batch. Raises ``ValueError`` when no image has a box.
        """
        blocks = list(cls.blocks(dataset, max_images=max_images, block_images=None))
        if not blocks:
            raise ValueError("the evaluation split has no image with a ground-truth box")
        return blocks[0]

    @classmethod
    def blocks(
        cls,
        dataset,
        *,
        max_images: int | None = None,
        block_images: int | None = 32,
        on_image=None,
        indices: Sequence[int] | None = None,
    ) -> Iterator[BoxedImages]:
        """Stream the images with boxes of ``dataset`` in blocks, so that a whole split never has
        to be in memory at once.

        Args:
            dataset: an evaluation dataset.
            max_images: stop after this many images with boxes (``None``: the whole split).
            block_images: images per block (``None``: one block).
            on_image: called once per dataset image read (progress).
            indices: read only these samples (e.g. :func:`boxed_indices`; default: all).

        Returns:
            An iterator of non-empty blocks, in dataset order.
        """
        images, boxes, ids, taken = [], [], [], 0
        for index in range(len(dataset)) if indices is None else indices:
            if max_images is not None and taken >= max_images:
                break
            sample = dataset[index]
            if on_image is not None:
                on_image()
            if not sample["boxes"]:
                continue
            images.append(sample["image"])
            boxes.append([tuple(b) for b in sample["boxes"]])
            ids.append(sample["image_id"])
            taken += 1
            if block_images is not None and len(images) == block_images:
                yield cls(torch.stack(images), boxes, ids)
                images, boxes, ids = [], [], []
        if images:
            yield cls(torch.stack(images), boxes, ids)


def boxed_indices(dataset, max_images: int | None = None) -> list[int]:
    """The indices of the samples that have ground-truth boxes, the first ``max_images`` of them.

    File-backed datasets answer from their records without reading an image; others (the
    synthetic one) are read sample by sample.

    Args:
        dataset: an evaluation dataset.
        max_images: keep at most this many (``None``: all).

    Returns:
        The indices, in dataset order.
    """
    records = getattr(dataset, "records", None)
    if records is not None and len(records) == len(dataset):
        has_boxes = (bool(record.boxes) for record in records)
    else:
        has_boxes = (bool(dataset[i]["boxes"]) for i in range(len(dataset)))
    found: list[int] = []
    for index, boxed in enumerate(has_boxes):
        if max_images is not None and len(found) >= max_images:
            break
        if boxed:
            found.append(index)
    return found


def _pairs(boxes: Sequence[Sequence]) -> list[tuple[int, int]]:
    """Every (image, class) pair with at least one box, in image then class order."""
    return sorted({(i, int(b[4])) for i, image_boxes in enumerate(boxes) for b in image_boxes})


def posthoc_maps(
    cam: object, images: Tensor, pairs: Sequence[tuple[int, int]], batch_size: int
) -> Iterable[tuple[list[tuple[int, int]], Tensor]]:
    """Post-hoc maps of (image, class) pairs, ``batch_size`` pairs per grad-cam call.

    Args:
        cam: a pytorch-grad-cam method object.
        images: ``(N, C, H, W)`` inputs.
        pairs: ``(image index, class index)`` pairs.
        batch_size: pairs per call.

    Returns:
        An iterator of ``(pairs, maps)`` chunks, ``maps`` ``(P, H, W)`` float32 in [0, 1]: one map
        per pair, each with its own ``ClassifierOutputTarget``.
    """
    for start in range(0, len(pairs), batch_size):
        chunk = list(pairs[start : start + batch_size])
        batch = images[[i for i, _ in chunk]]
        targets = [ClassifierOutputTarget(c) for _, c in chunk]
        # ScoreCAM draws a tqdm bar per target; keep the console to our own progress display
        with contextlib.redirect_stderr(io.StringIO()):
            maps = cam(input_tensor=batch, targets=targets)
        yield chunk, torch.from_numpy(maps).float()


class MethodScores:
    """Localization counts of the model's own CAM and of each post-hoc method, added up over
    blocks of images (:meth:`add`), then summarised (:meth:`results`).

    Args:
        model: the trained model (grad-cam runs where it is).
        class_names: its classes.
        methods: post-hoc method names (:data:`METHODS`).
        batch_size: images per forward of the own CAM, (image, class) pairs per grad-cam call.
        target_layer: the layer grad-cam reads (default: the encoder's last stage).
        execution: precision / memory format of the own CAM's forward (default: fp32 as is);
            grad-cam methods run in float32 (they read activations into numpy, which has no bf16).
        on_chunk: ``on_chunk(method, pairs_done, pairs_so_far)`` after each chunk: the pairs
            that method has scored, of those of the blocks given to it so far.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        methods: Sequence[str],
        *,
        batch_size: int = 8,
        target_layer: nn.Module | None = None,
        execution: Execution | None = None,
        on_chunk=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.class_names = list(class_names)
        self.methods = list(methods)
        self.batch_size = batch_size
        self.execution = execution
        self.on_chunk = on_chunk
        self.layer = target_layer if target_layer is not None else last_encoder_stage(model)
        self.device = next(model.parameters()).device
        self.accumulators: dict[str, LocalizationAccumulator] = {}
        self.seconds = dict.fromkeys([OWN_CAM, *self.methods], 0.0)
        self.pairs_done = dict.fromkeys([OWN_CAM, *self.methods], 0)
        self.pairs_seen = 0

    def _accumulator(self, name: str, size: tuple[int, int]) -> LocalizationAccumulator:
        if name not in self.accumulators:
            self.accumulators[name] = LocalizationAccumulator(
                len(self.class_names),
                size,
                class_names=self.class_names,
                apply_sigmoid=name == OWN_CAM,
            )
        return self.accumulators[name]

    def add(
        self,
        data: BoxedImages,
        *,
        only: Sequence[str] | None = None,
        on_images: Callable[[int], None] | None = None,
    ) -> None:
        """Score the own CAM and every method on one block of images.

        Args:
            data: the block (images with boxes).
            only: score just these of :data:`OWN_CAM` and the methods (default: all of them);
                call once per name over the same blocks to report progress per method.
            on_images: ``on_images(n)`` when ``n`` more images of the block are done by a method
                (``len(data.image_ids)`` in all per method).

        Returns:
            None; the counts are added up.
        """
        names = [OWN_CAM, *self.methods]
        if only is not None:
            unknown = [name for name in only if name not in names]
            if unknown:
                raise ValueError(f"not scored here: {unknown}; expected some of {names}")
            names = [name for name in names if name in only]
        size = tuple(data.images.shape[-2:])
        pairs = _pairs(data.boxes)
        for name in names:
            start = time.perf_counter()
            before = self.pairs_done[name]
            self.pairs_done[name] += len(pairs)
            if name == OWN_CAM:
                self._add_own(data, size, on_images)
            else:
                self._add_method(name, data, size, pairs, before, on_images)
            self.seconds[name] += time.perf_counter() - start
        self.pairs_seen = max(self.pairs_done.values())

    def _add_own(self, data: BoxedImages, size, on_images) -> None:
        own = self._accumulator(OWN_CAM, size)
        execution = self.execution
        with torch.no_grad():
            for first in range(0, len(data.images), self.batch_size):
                stop = first + self.batch_size
                batch = data.images[first:stop].to(self.device)
                if execution is not None:
                    with execution.autocast():
                        cam = self.model(execution.prepare_input(batch)).cam
                else:
                    cam = self.model(batch).cam
                own.update(cam.float(), data.boxes[first:stop])
                if on_images is not None:
                    on_images(len(batch))
        if self.on_chunk is not None:
            self.on_chunk(OWN_CAM, self.pairs_done[OWN_CAM], self.pairs_done[OWN_CAM])

    def _add_method(self, method: str, data: BoxedImages, size, pairs, done, on_images) -> None:
        num_classes = len(self.class_names)
        acc = self._accumulator(method, size)
        cam = make_method(method, self.model, self.layer)
        images_done, position = 0, 0
        try:
            for chunk, maps in posthoc_maps(cam, data.images, pairs, self.batch_size):
                # one row per pair: the pair's map in its class channel, its boxes only
                full = torch.zeros(len(chunk), num_classes, *maps.shape[-2:])
                full[torch.arange(len(chunk)), [c for _, c in chunk]] = maps
                boxes = [[b for b in data.boxes[i] if int(b[4]) == c] for i, c in chunk]
                acc.update(full, boxes)
                done += len(chunk)
                position += len(chunk)
                if self.on_chunk is not None:
                    self.on_chunk(method, done, self.pairs_done[method])
                if on_images is not None:
                    # pairs run image by image: the images before the next pair's are done
                    now = pairs[position][0] if position < len(pairs) else len(data.images)
                    if now > images_done:
                        on_images(now - images_done)
                        images_done = now
        finally:  # not ``with``: grad-cam's __exit__ swallows IndexError
            cam.activations_and_grads.release()

    def results(self) -> dict[str, dict[str, float]]:
        """Metrics per method (the own CAM first), each with ``n_pairs`` and ``seconds``.

        Returns:
            ``{method: {metric: value}}``.
        """
        if not self.accumulators:
            raise ValueError("the evaluation split has no image with a ground-truth box")
        out = {}
        for name in [OWN_CAM, *self.methods]:
            acc = self.accumulators[name]
            metrics = acc.compute()
            metrics["n_pairs"] = float(acc.pairs.sum())
            metrics["seconds"] = self.seconds[name]
            out[name] = metrics
        return out


def evaluate_methods(
    model: nn.Module,
    data: BoxedImages,
    class_names: Sequence[str],
    methods: Sequence[str],
    *,
    batch_size: int = 8,
    target_layer: nn.Module | None = None,
    execution: Execution | None = None,
    on_chunk=None,
) -> dict[str, dict[str, float]]:
    """Point/IoBB/IoU accuracy of the model's own CAM and of each post-hoc method on ``data``.

    Post-hoc maps are probabilities in [0, 1] already (``apply_sigmoid=False``); the model's CAM
    is raw scores (``apply_sigmoid=True``).

    Args:
        model, class_names, methods, batch_size, target_layer, execution, on_chunk: as
            :class:`MethodScores`.
        data: the images with boxes.

    Returns:
        ``{method: metrics}``, the own CAM (:data:`OWN_CAM`) first; each also holds ``seconds``
        and ``n_pairs``.
    """
    scores = MethodScores(
        model,
        class_names,
        methods,
        batch_size=batch_size,
        target_layer=target_layer,
        execution=execution,
        on_chunk=on_chunk,
    )
    scores.add(data)
    return scores.results()


def evaluate_run_posthoc(
    run_dir: str | os.PathLike,
    methods: Sequence[str],
    *,
    split: str | None = None,
    max_images: int | None = None,
    batch_size: int = 8,
    out_dir: str | os.PathLike | None = None,
    target_layer: str | None = None,
    device: str | None = "cpu",
    progress: bool = True,
    on_chunk=None,
) -> pd.DataFrame:
    """Compare post-hoc ``methods`` with a run's own CAM on a split with boxes.

    As the reference's ``eval_cam.py``, every image of the split that has boxes is scored by
    default; images are streamed in blocks, so memory does not grow with the split.

    Args:
        run_dir: a trained run folder.
        methods: post-hoc method names (:data:`METHODS`).
        split: the split (default: the run's ``loc_split``).
        max_images: use at most this many images with boxes (``None``: all of them).
        batch_size: images per own-CAM forward and (image, class) pairs per grad-cam call.
        out_dir: where the CSVs go (default: the run folder).
        target_layer: a dotted module path (e.g. ``"encoder.layer4"``); default: the encoder's
            last stage.
        device: where the model runs (``None``: where training runs); the own CAM uses the run's
            precision policy and channels_last (:func:`pylon.evaluation.execution.run_execution`).
        progress: report progress per method, in images with boxes scored (a bar in a terminal,
            plain lines in log files); the images are read once per method.
        on_chunk: see :class:`MethodScores`.

    Returns:
        The comparison table (one row per method, the model's own CAM first), also written as
        ``posthoc_comparison.csv``, beside ``posthoc_<method>.csv`` (``metric,value``, as
        ``eval_loc.csv``) per method.
    """
    from pylon.evaluation.evaluate import write_metrics
    from pylon.evaluation.execution import load_run_model
    from pylon.training.datamodule import build_dataset
    from pylon.training.runs import open_trained_run

    methods = resolve_methods(methods)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths, config = open_trained_run(run_dir)
    split = split or config.data.loc_split
    dataset = build_dataset(config.data, split)
    model, execution, _ = load_run_model(paths, config, device)
    layer = None
    if target_layer is not None:
        try:
            layer = model.get_submodule(target_layer)
        except AttributeError:
            raise ValueError(f"the model has no submodule {target_layer!r}") from None
    scores = MethodScores(
        model,
        list(dataset.class_names),
        methods,
        batch_size=batch_size,
        target_layer=layer,
        execution=execution,
        on_chunk=on_chunk,
    )
    indices = boxed_indices(dataset, max_images)
    if not indices:
        raise ValueError(f"split {split!r} has no image with a ground-truth box")
    # one pass over the images per method, each with its own count: the methods' costs differ
    # by orders of magnitude (scorecam runs a forward per channel), so one shared bar's ETA lies
    for name in [OWN_CAM, *methods]:
        label = f"evaluate-cam {split} ({name})"
        with Progress(label, len(indices), unit="img", enabled=progress) as reporter:
            for block in BoxedImages.blocks(dataset, indices=indices):
                scores.add(block, only=[name], on_images=reporter.advance)
    results = scores.results()
    out = Path(out_dir) if out_dir is not None else paths.root
    for method in methods:
        write_metrics(results[method], out / f"posthoc_{method}.csv")
    table = pd.DataFrame([{"method": name, **metrics} for name, metrics in results.items()])
    write_csv_atomic(table, out / "posthoc_comparison.csv")
    return table
