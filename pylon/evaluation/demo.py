"""``pylon demo``: PYLON against the CAM baseline on synthetic X-rays, same data, budget and recipe.

Both models train through ``pylon.training.train`` on fresh synthetic images (every training image
is seen once), then ``evaluate_run`` scores them on a held-out synthetic test split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pylon.io import write_csv_atomic
from pylon.training.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

SUMMARY_COLUMNS = ["model", "auroc_macro", "point_acc_weighted", "point_acc_macro", "seconds"]


@dataclass
class DemoConfig:
    """The demo recipe. ``images`` is the training budget per model (each image seen once, as
    is and, with ``equivariance`` > 0, as one flipped/rotated view); ``minutes``, when given,
    replaces it by what fits that wall-clock budget on this machine."""

    out: Path = Path("runs/demo")
    images: int = 2560
    minutes: float | None = None
    encoder: str = "resnet18"
    seed: int = 0
    models: tuple[str, ...] = ("pylon", "cam")
    batch_size: int = 16
    lr: float = 1e-3
    warmup_frac: float = 0.1
    head_prior: float | None = 0.01
    equivariance: float = 0.1
    val_images: int = 128
    test_images: int = 512
    heatmap_images: int = 20
    benchmark_images: int = 128
    faithfulness_images: int = 2
    num_workers: int = 0
    precision: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.images < self.batch_size:
            raise ValueError(
                f"demo: --images {self.images} is less than one batch ({self.batch_size})"
            )
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"demo: --minutes must be > 0, got {self.minutes}")
        if self.equivariance < 0:
            raise ValueError(f"demo: --equivariance must be >= 0, got {self.equivariance}")
        if self.test_images < 1 or self.val_images < 1:
            raise ValueError("demo: test_images and val_images must be >= 1")
        if self.benchmark_images < 0 or self.faithfulness_images < 0:
            raise ValueError("demo: benchmark_images and faithfulness_images must be >= 0")


def train_config(demo: DemoConfig, model: str, images: int) -> TrainConfig:
    """One model's run: a single pass over ``images`` fresh images with a one-cycle schedule.

    Args:
        demo: the demo recipe.
        model: the model's registry name (``"pylon"``, ``"cam"``).
        images: training images (each seen once).

    Returns:
        The validated :class:`TrainConfig`; identical for every model but the model name.
    """
    return TrainConfig(
        experiment=model,
        seed=demo.seed,
        max_epochs=1,
        val_every=1,
        precision=demo.precision,
        progress=demo.progress,
        model=ModelConfig(
            name=model, encoder=demo.encoder, channels_last=True, head_prior=demo.head_prior
        ),
        data=DataConfig(
            name="synthetic",
            size=256,
            batch_size=demo.batch_size,
            num_workers=demo.num_workers,
            augment=True,
            options={"seed": demo.seed},
            split_options={
                "train": {"num_images": images},
                "val": {"num_images": demo.val_images},
                "test": {"num_images": demo.test_images},
            },
        ),
        optim=OptimConfig(
            lr=demo.lr,
            scheduler="onecycle",
            warmup_frac=demo.warmup_frac,
            lr_term=0.0,
            equivariance=demo.equivariance,
        ),
    ).validate()


def images_for_minutes(demo: DemoConfig) -> int:
    """Training images per model that fit ``demo.minutes`` for all models, from a timed probe.

    Args:
        demo: the recipe (``minutes`` set).

    Returns:
        A whole number of batches, at least one.
    """
    seconds_per_image = sum(_seconds_per_image(demo, model) for model in demo.models)
    # about 15% of the budget goes to validation, evaluation and figures
    budget = 0.85 * demo.minutes * 60
    images = int(budget / seconds_per_image) // demo.batch_size * demo.batch_size
    return max(images, demo.batch_size)


def _seconds_per_image(demo: DemoConfig, model_name: str, steps: int = 3) -> float:
    """Time ``steps`` training steps (after one warm-up step) with the trainer's own loss."""
    import torch

    from pylon.data import create_dataset
    from pylon.training.fit import build_model, on_gpu, resolve_precision
    from pylon.training.module import ClassifierModule

    config = train_config(demo, model_name, demo.batch_size)
    data = create_dataset("synthetic", split="train", num_images=demo.batch_size, seed=demo.seed)
    device = "cuda" if on_gpu(config) else "cpu"
    model = build_model(
        config.model,
        num_classes=len(data.class_names),
        in_channels=1,
        channels_last=bool(config.model.channels_last),
    ).to(device)
    module = ClassifierModule(model, config.optim)
    optimizer = torch.optim.Adam(model.parameters(), lr=demo.lr)
    execution = resolve_precision(config)
    elapsed = 0.0
    for step in range(steps + 1):
        started = time.perf_counter()
        batch = data.generate_batch(range(demo.batch_size))
        batch = {"image": batch["image"].to(device), "labels": batch["labels"].to(device)}
        with execution.autocast():
            loss, _ = module.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step > 0:
            elapsed += time.perf_counter() - started
    return elapsed / (steps * demo.batch_size)


def run_demo(demo: DemoConfig, *, console: Any = None) -> pd.DataFrame:
    """Train and evaluate every model of ``demo.models``; write ``summary.csv``, per-class
    accuracies and heatmap pages into ``demo.out``, then the benchmark (:func:`run_benchmark`)
    into ``demo.out / "benchmark"``.

    Args:
        demo: the recipe.
        console: a rich console for the opening line (``None``: quiet).

    Returns:
        The summary table (:data:`SUMMARY_COLUMNS`, one row per model).
    """
    from pylon.evaluation.evaluate import evaluate_run
    from pylon.training.fit import train

    out = Path(demo.out)
    images = images_for_minutes(demo) if demo.minutes is not None else demo.images
    if console is not None:
        console.print(
            f"demo: {', '.join(demo.models)} on {images} fresh synthetic images each "
            f"({demo.encoder}, batch {demo.batch_size}, one-cycle lr {demo.lr}, "
            f"head prior {demo.head_prior}, equivariance {demo.equivariance}), "
            f"tested on {demo.test_images} held-out images"
        )
    rows, per_class, run_dirs = [], [], []
    for model in demo.models:
        config = train_config(demo, model, images)
        started = time.perf_counter()
        run_dir = train(config, runs_dir=out / "runs", retrain=True)
        metrics = evaluate_run(run_dir, progress=demo.progress)
        seconds = time.perf_counter() - started
        loc = metrics["loc"]
        rows.append(
            {
                "model": model,
                "auroc_macro": metrics["auc"]["auroc_macro"],
                "point_acc_weighted": loc["point_acc_weighted"],
                "point_acc_macro": loc["point_acc_macro"],
                "seconds": round(seconds, 1),
            }
        )
        per_class.append({"model": model, **_point_acc_per_class(loc)})
        write_demo_heatmaps(run_dir, out / "heatmaps" / model, demo)
        run_dirs.append(run_dir)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    write_csv_atomic(summary, out / "summary.csv")
    write_csv_atomic(pd.DataFrame(per_class), out / "point_acc_per_class.csv")
    if demo.benchmark_images:
        run_benchmark(demo, run_dirs)
    return summary


def run_benchmark(demo: DemoConfig, run_dirs: list[Path]):
    """The localization benchmark of the demo's models on ``benchmark_images`` test images:
    every model's own CAM, plus GradCAM and LayerCAM on the CAM baseline (its post-hoc rivals
    at 1/32 and at full resolution), MaxBoxAcc's threshold chosen on the validation split,
    faithfulness on ``faithfulness_images`` images (20 deletion steps: the demo's budget).

    Args:
        demo: the recipe.
        run_dirs: the trained runs, in ``demo.models`` order (the first is the reference).

    Returns:
        The :class:`~pylon.evaluation.benchmark.BenchmarkResult` (files in ``out/benchmark``).
    """
    from pylon.evaluation.benchmark import benchmark
    from pylon.evaluation.benchmark_scoring import OWN, BenchmarkOptions

    methods = {
        str(run): [OWN, "gradcam", "layercam"] if model == "cam" else [OWN]
        for model, run in zip(demo.models, run_dirs, strict=True)
    }
    return benchmark(
        [str(run) for run in run_dirs],
        methods,
        out_dir=Path(demo.out) / "benchmark",
        max_images=demo.benchmark_images,
        options=BenchmarkOptions(faithfulness_images=demo.faithfulness_images, deletion_steps=20),
        progress=demo.progress,
    )


def _point_acc_per_class(loc: dict[str, float]) -> dict[str, float]:
    skip = ("point_acc_weighted", "point_acc_macro")
    return {
        key.removeprefix("point_acc_"): value
        for key, value in loc.items()
        if key.startswith("point_acc_") and key not in skip
    }


def write_demo_heatmaps(run_dir: Path, out_dir: Path, demo: DemoConfig) -> list[Path]:
    """Heatmap pages (10 rows each) of the first ``heatmap_images`` (image, class) test pairs with
    boxes: the same pairs, in the same order, for every model.

    Args:
        run_dir: the model's run folder.
        out_dir: where the pages go.
        demo: the recipe (``heatmap_images``, ``progress``).

    Returns:
        The pages written.
    """
    from pylon.evaluation.heatmaps import write_run_heatmaps

    return write_run_heatmaps(run_dir, out_dir, limit=demo.heatmap_images, progress=demo.progress)
