"""``pylon demo``: train PYLON and the CAM baseline on synthetic X-rays and compare them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pylon.cli.app import app, exit_on_user_error


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder (summary.csv, heatmaps/)."),
    images: int | None = typer.Option(
        None,
        help="Training images per model (default 2560: about 8 minutes of training and "
        "evaluation on 2 CPU cores with native bf16, about 4x that where the CPU computes in "
        "fp32; then the benchmark).",
    ),
    minutes: float | None = typer.Option(
        None, help="Wall-clock budget instead of --images: sized from a timed probe."
    ),
    encoder: str = typer.Option("resnet18", help="Encoder of both models."),
    seed: int = typer.Option(0, help="Seed of the data and the models."),
    test_images: int = typer.Option(512, help="Held-out synthetic test images."),
    val_images: int = typer.Option(128, help="Validation images (validation loss only)."),
    batch_size: int = typer.Option(
        16, help="Training batch size (images; each also goes through as a second view)."
    ),
    head_prior: float = typer.Option(
        0.01,
        help="Both models' class maps start at this probability everywhere (prior init); "
        "0 turns it off: each model keeps its own initialisation (the paper's: smp's for PYLON, "
        "PyTorch's defaults for the CAM head).",
    ),
    equivariance: float = typer.Option(
        0.1, help="Weight of the flip/rotation equivariance loss for both models; 0 turns it off."
    ),
    benchmark_images: int = typer.Option(
        128,
        help="Test images of the closing benchmark (own CAMs, GradCAM and LayerCAM on the CAM "
        "baseline; 0 skips it).",
    ),
    faithfulness_images: int = typer.Option(
        2, help="Benchmark images that also get deletion/insertion, average drop and ROAD."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Train PYLON and the CAM baseline with the same recipe and budget; print and save a table."""
    import pandas as pd

    from pylon.evaluation.demo import DemoConfig, run_demo

    console = Console()
    if images is not None and minutes is not None:
        raise typer.BadParameter("give --images or --minutes, not both")
    with exit_on_user_error(console):
        demo = DemoConfig(
            out=out,
            minutes=minutes,
            encoder=encoder,
            seed=seed,
            test_images=test_images,
            val_images=val_images,
            batch_size=batch_size,
            head_prior=head_prior or None,
            equivariance=equivariance,
            benchmark_images=benchmark_images,
            faithfulness_images=faithfulness_images,
            progress=not no_progress,
            **({"images": images} if images is not None else {}),
        )
        summary = run_demo(demo, console=console)

    table = Table(title=f"pylon demo ({encoder}, synthetic test set of {test_images} images)")
    for column in summary.columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in summary.itertuples(index=False):
        table.add_row(row.model, *(f"{value:.3f}" for value in row[1:-1]), f"{row.seconds:.0f}")
    console.print(table)
    per_class = pd.read_csv(out / "point_acc_per_class.csv")
    table = Table(title="point localization accuracy per finding class (small to large)")
    for column in per_class.columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in per_class.itertuples(index=False):
        table.add_row(row[0], *(f"{value:.3f}" for value in row[1:]))
    console.print(table)
    if benchmark_images:
        report = out / "benchmark" / "benchmark.md"
        comparisons = pd.read_csv(out / "benchmark" / "comparisons.csv")
        for line in comparisons.loc[comparisons["metric"] == "point", "line"]:
            console.print(line, soft_wrap=True, markup=False, highlight=False)
        console.print(f"benchmark: {report}, by lesion size: {out / 'benchmark' / 'by_size.png'}")
    console.print(
        f"wrote {out / 'summary.csv'}, {out / 'point_acc_per_class.csv'}, {out / 'heatmaps'}"
    )
