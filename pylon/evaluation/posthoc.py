"""Post-hoc CAM methods (pytorch-grad-cam) on a trained model, scored like the model's own CAM."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from pylon.io import write_csv_atomic
from pylon.metrics import LocalizationAccumulator

METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}
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
        return self.model(x).logits


def last_encoder_stage(model: nn.Module) -> nn.Module:
    """The deepest stage of the model's smp encoder (e.g. ``layer4`` of a ResNet)."""
    encoders = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "encoder"]
    if not encoders:
        raise ValueError(f"{type(model).__name__} has no 'encoder' submodule; name a target layer")
    encoder = encoders[0]
    if hasattr(encoder, "get_stages"):
        with contextlib.suppress(NotImplementedError):
            stages = encoder.get_stages()
            return list(stages[max(stages)])[-1]
    raise ValueError(
        f"encoder {type(encoder).__name__} does not list its stages; name a target layer "
        "(a dotted module path such as 'encoder.layer4')"
    )


def resolve_methods(names: Iterable[str]) -> list[str]:
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(
            f"unknown post-hoc method(s) {unknown or names}; expected some of {', '.join(METHODS)}"
        )
    return list(dict.fromkeys(names))


@dataclass
class BoxedImages:
    """The evaluation images that have boxes: a normalised batch and their boxes/ids."""

    images: Tensor  # (N, C, H, W)
    boxes: list[list[tuple[float, float, float, float, int]]]
    image_ids: list[str]

    @classmethod
    def from_dataset(cls, dataset, max_images: int | None = None) -> BoxedImages:
        images, boxes, ids = [], [], []
        for index in range(len(dataset)):
            sample = dataset[index]
            if sample["boxes"]:
                images.append(sample["image"])
                boxes.append([tuple(b) for b in sample["boxes"]])
                ids.append(sample["image_id"])
                if max_images is not None and len(images) >= max_images:
                    break
        if not images:
            raise ValueError("the evaluation split has no image with a ground-truth box")
        return cls(torch.stack(images), boxes, ids)


def _pairs(boxes: Sequence[Sequence]) -> list[tuple[int, int]]:
    """Every (image, class) pair with at least one box, in image then class order."""
    return sorted({(i, int(b[4])) for i, image_boxes in enumerate(boxes) for b in image_boxes})


def posthoc_maps(
    cam: object, images: Tensor, pairs: Sequence[tuple[int, int]], batch_size: int
) -> Iterable[tuple[list[tuple[int, int]], Tensor]]:
    """Yield ``(pairs, maps (P, H, W) in [0, 1])`` chunks: one map per (image, class) pair,
    each with its own ``ClassifierOutputTarget``."""
    for start in range(0, len(pairs), batch_size):
        chunk = list(pairs[start : start + batch_size])
        batch = images[[i for i, _ in chunk]]
        targets = [ClassifierOutputTarget(c) for _, c in chunk]
        # ScoreCAM draws a tqdm bar per target; keep the console to our own progress display
        with contextlib.redirect_stderr(io.StringIO()):
            maps = cam(input_tensor=batch, targets=targets)
        yield chunk, torch.from_numpy(maps).float()


def evaluate_methods(
    model: nn.Module,
    data: BoxedImages,
    class_names: Sequence[str],
    methods: Sequence[str],
    *,
    batch_size: int = 8,
    target_layer: nn.Module | None = None,
    on_chunk=None,
) -> dict[str, dict[str, float]]:
    """Point/IoBB/IoU accuracy of the model's own CAM and of each post-hoc method on ``data``.

    Post-hoc maps are probabilities in [0, 1] already (``apply_sigmoid=False``); the model's CAM
    is raw scores (``apply_sigmoid=True``). Each result also holds ``seconds`` and ``n_pairs``.
    ``on_chunk(method, pairs_done, pairs_total)`` is called after each chunk (progress).
    """
    model = model.eval()
    device = next(model.parameters()).device  # grad-cam runs where the model is
    size = tuple(data.images.shape[-2:])
    num_classes = len(class_names)
    pairs = _pairs(data.boxes)
    results: dict[str, dict[str, float]] = {}

    start = time.perf_counter()
    own = LocalizationAccumulator(num_classes, size, class_names=class_names)
    with torch.no_grad():
        for first in range(0, len(data.images), batch_size):
            stop = first + batch_size
            batch = data.images[first:stop].to(device)
            own.update(model(batch).cam.float().cpu(), data.boxes[first:stop])
    results[OWN_CAM] = _finish(own, start)
    if on_chunk is not None:
        on_chunk(OWN_CAM, len(pairs), len(pairs))

    layer = target_layer if target_layer is not None else last_encoder_stage(model)
    wrapped = LogitsOnly(model).eval()
    for method in methods:
        start = time.perf_counter()
        acc = LocalizationAccumulator(
            num_classes, size, class_names=class_names, apply_sigmoid=False
        )
        cam = METHODS[method](model=wrapped, target_layers=[layer])
        if method == "scorecam":
            cam.batch_size = SCORECAM_BATCH
        try:
            done = 0
            for chunk, maps in posthoc_maps(cam, data.images, pairs, batch_size):
                # one row per pair: the pair's map in its class channel, its class's boxes only
                full = torch.zeros(len(chunk), num_classes, *maps.shape[-2:])
                full[torch.arange(len(chunk)), [c for _, c in chunk]] = maps
                boxes = [[b for b in data.boxes[i] if int(b[4]) == c] for i, c in chunk]
                acc.update(full, boxes)
                done += len(chunk)
                if on_chunk is not None:
                    on_chunk(method, done, len(pairs))
        finally:  # not ``with``: grad-cam's __exit__ swallows IndexError
            cam.activations_and_grads.release()
        results[method] = _finish(acc, start)
    return results


def _finish(acc: LocalizationAccumulator, start: float) -> dict[str, float]:
    metrics = acc.compute()
    metrics["n_pairs"] = float(acc.pairs.sum())
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def evaluate_run_posthoc(
    run_dir: str | os.PathLike,
    methods: Sequence[str],
    *,
    split: str | None = None,
    max_images: int | None = 64,
    batch_size: int = 8,
    out_dir: str | os.PathLike | None = None,
    target_layer: str | None = None,
    device: str = "cpu",
    on_chunk=None,
) -> pd.DataFrame:
    """Compare post-hoc ``methods`` with a run's own CAM on ``split`` (default: the run's
    localization split), using at most ``max_images`` images that have boxes.

    Writes ``posthoc_<method>.csv`` (``metric,value``, as ``eval_loc.csv``) per method and
    ``posthoc_comparison.csv`` (one row per method, the model's own CAM first) into ``out_dir``
    (default: the run folder), and returns the comparison table. ``target_layer`` is a dotted
    module path (e.g. ``"encoder.layer4"``); default: the encoder's last stage.
    """
    from pylon.evaluation.evaluate import write_metrics
    from pylon.models.weights import load_model
    from pylon.training.datamodule import build_dataset
    from pylon.training.runs import open_trained_run

    methods = resolve_methods(methods)
    paths, config = open_trained_run(run_dir)
    dataset = build_dataset(config.data, split or config.data.loc_split)
    data = BoxedImages.from_dataset(dataset, max_images)
    model = load_model(paths.best).to(device)
    layer = None
    if target_layer is not None:
        try:
            layer = model.get_submodule(target_layer)
        except AttributeError:
            raise ValueError(f"the model has no submodule {target_layer!r}") from None
    results = evaluate_methods(
        model,
        data,
        list(dataset.class_names),
        methods,
        batch_size=batch_size,
        target_layer=layer,
        on_chunk=on_chunk,
    )
    out = Path(out_dir) if out_dir is not None else paths.root
    for method in methods:
        write_metrics(results[method], out / f"posthoc_{method}.csv")
    table = pd.DataFrame([{"method": name, **metrics} for name, metrics in results.items()])
    write_csv_atomic(table, out / "posthoc_comparison.csv")
    return table
