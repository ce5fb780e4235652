"""``pylon benchmark RUN [RUN ...]``: every (run, method) scored alike, with intervals."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pylon.cli.app import app, exit_on_user_error, fail

console = Console()


@app.command("benchmark")
def benchmark_command(
    runs: list[Path] = typer.Argument(
        ...,
        help="Run folders or experiment folders (their seeds); the first run's own CAM is "
        "the reference of the paired comparisons.",
    ),
    methods: str = typer.Option(
        "own,gradcam,layercam",
        help="Comma-separated: own (the model's CAM) and pytorch-grad-cam methods.",
    ),
    split: str | None = typer.Option(None, help="Scored split (default: each run's loc split)."),
    threshold_split: str = typer.Option(
        "auto",
        help="Split MaxBoxAcc's thresholds are chosen on: auto (the run's validation split when "
        "it has boxes), a split name, or 'none' (the scored split itself: an oracle choice).",
    ),
    max_images: int | None = typer.Option(
        None, "--max-images", help="Score at most this many images with boxes per split."
    ),
    tolerance: int = typer.Option(15, help="Pointing game tolerance in input pixels."),
    cam_interval: float = typer.Option(
        0.001, help="MaxBoxAcc threshold grid step (0.001: the paper's; 0.01 is faster)."
    ),
    faithfulness_images: int = typer.Option(
        16, help="Images whose pairs also get deletion/insertion and average drop (0: none)."
    ),
    resamples: int = typer.Option(1000, help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images / pairs per forward."),
    out: Path = typer.Option(Path("benchmark"), "--out", help="Output folder."),
    layer: str | None = typer.Option(None, help="grad-cam's layer (dotted module path)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    progress: bool = typer.Option(True, help="Progress bars / log lines."),
) -> None:
    """Score runs' own CAMs and post-hoc methods with the field's localization metrics.

    Writes benchmark.csv, comparisons.csv, seeds.csv, benchmark.md and by_size.png (and
    faithfulness.png) in --out; finished (run, method) pairs are reused on a rerun.
    """
    from pylon.evaluation.benchmark import benchmark
    from pylon.evaluation.benchmark_scoring import BenchmarkOptions

    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise fail(console, "--methods is empty; expected e.g. own,gradcam,layercam", code=2)
    for option, value in (("--max-images", max_images), ("--resamples", resamples)):
        if value is not None and value < 1:
            raise fail(console, f"{option} must be >= 1, got {value}", code=2)
    with exit_on_user_error(console, code=2):
        options = BenchmarkOptions(
            tolerance=tolerance,
            cam_interval=cam_interval,
            faithfulness_images=faithfulness_images,
            batch_size=batch_size,
        )
    with exit_on_user_error(console):
        result = benchmark(
            runs,
            names,
            out_dir=out,
            split=split,
            threshold_split=None if threshold_split == "none" else threshold_split,
            max_images=max_images,
            options=options,
            resamples=resamples,
            seed=seed,
            device=device,
            target_layer=layer,
            progress=progress,
        )
    head = result.table[(result.table["size_bucket"] == "all") & (result.table["class"] == "all")]
    metrics = list(dict.fromkeys(head["metric"]))
    view = Table(title=f"benchmark ({result.out_dir}): pooled over pairs, 95 % CI")
    for column in ("run", "method", *metrics):
        view.add_column(column)
    for (run, method), group in head.groupby(["run", "method"], sort=False):
        cells = []
        for metric in metrics:
            row = group[group["metric"] == metric]
            r = row.iloc[0] if not row.empty else None
            cells.append(
                "" if r is None else f"{r['value']:.3f}\n[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            )
        view.add_row(run, method, *cells)
    console.print(view)
    for line in result.comparisons.get("line", []):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    if result.reused:
        console.print(f"reused {len(result.reused)} finished (run, method) pair(s) from {out}")
    console.print(f"wrote benchmark.csv, comparisons.csv, benchmark.md, by_size.png in {out}")
