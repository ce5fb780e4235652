"""``pylon evaluate-cam RUN``: pytorch-grad-cam's post-hoc CAMs against the model's own CAM."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pylon.cli.app import app, exit_on_user_error, fail

console = Console()


@app.command("evaluate-cam")
def evaluate_cam_command(
    run: Path = typer.Argument(..., help="Run folder runs/<experiment>/<seed>."),
    methods: str = typer.Option(
        "gradcam,gradcam++,xgradcam,eigencam",
        help="Comma-separated post-hoc methods (default: those of the reference's eval_cam.py; "
        "scorecam is available too, one forward pass per channel of the layer).",
    ),
    split: str | None = typer.Option(None, help="Split with boxes (default: the run's loc split)."),
    max_images: int | None = typer.Option(
        None,
        "--max-images",
        help="Use at most this many images with boxes (default: the whole split, as the "
        "reference; scorecam is slow).",
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="(image, class) pairs per pass."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: the run)."),
    layer: str | None = typer.Option(
        None, help="Target layer as a dotted module path (default: the encoder's last stage)."
    ),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    progress: bool = typer.Option(
        True,
        help="Report progress per method, in images (a bar in a terminal, plain lines in log "
        "files).",
    ),
) -> None:
    """Compare pytorch-grad-cam methods on the model's last encoder stage with its own CAM.

    Writes posthoc_<method>.csv per method and posthoc_comparison.csv, and prints the table.
    """
    from pylon.evaluation.posthoc import OWN_CAM, evaluate_run_posthoc, resolve_methods

    try:
        names = resolve_methods(methods.split(","))
    except ValueError as err:
        raise fail(console, err, code=2) from err
    if max_images is not None and max_images < 1:
        raise fail(console, f"--max-images must be >= 1, got {max_images}", code=2)
    if batch_size < 1:
        raise fail(console, f"--batch-size must be >= 1, got {batch_size}", code=2)
    with exit_on_user_error(console):
        table = evaluate_run_posthoc(
            run,
            names,
            split=split,
            max_images=max_images,
            batch_size=batch_size,
            out_dir=out,
            target_layer=layer,
            device=device,
            progress=progress,
        )

    columns = {
        "point_acc_weighted": "point acc",
        "point_acc_macro": "point acc (macro)",
        "iobb0.25_weighted": "IoBB>0.25",
        "n_pairs": "pairs",
        "seconds": "seconds",
    }
    view = Table(title=f"post-hoc CAMs vs the model's own ({OWN_CAM}) on {run}")
    view.add_column("method")
    for header in columns.values():
        view.add_column(header, justify="right")
    for row in table.to_dict("records"):
        cells = [f"{row[c]:.0f}" if c == "n_pairs" else f"{row[c]:.3f}" for c in columns]
        view.add_row(row["method"], *cells)
    console.print(view)
    console.print(f"written to {(out or run) / 'posthoc_comparison.csv'}", highlight=False)
