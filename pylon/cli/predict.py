"""``pylon predict``, ``pylon evaluate-cam`` and ``pylon export``: using a trained model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pylon.cli.app import app, fail

PREDICTIONS_JSONL = "predictions.jsonl"
PREDICTIONS_CSV = "predictions.csv"
FAILURES_CSV = "failures.csv"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _csv_row(prediction) -> dict:
    height, width = prediction.original_size
    row = {
        "image_id": prediction.image_id,
        "path": prediction.path,
        "height": height,
        "width": width,
    }
    for name, probability in prediction.probabilities.items():
        row[f"prob_{name}"] = probability
    for name, (x, y) in prediction.peaks.items():
        row[f"peak_x_{name}"] = x
        row[f"peak_y_{name}"] = y
    row["selected"] = "|".join(prediction.selected)
    return row


@app.command("predict")
def predict_command(
    weights: Path = typer.Argument(..., help="Trained weights (.safetensors from pylon train)."),
    inputs: list[Path] = typer.Argument(..., help="PNG/JPEG/DICOM files and/or folders."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    threshold: float = typer.Option(0.5, help="Draw overlays for classes at or above this."),
    classes: str | None = typer.Option(
        None, help="Comma-separated classes to draw instead of those above the threshold."
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Search folders recursively."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write overlay PNGs."),
    precision: str = typer.Option(
        "auto", help="auto (bf16 on capable CPUs, fp16 on GPU), fp32, bf16 or fp16."
    ),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Predict class probabilities and heatmap peaks (original pixels) for images and DICOMs.

    Writes predictions.jsonl (one object per image), predictions.csv and overlays/ to --out;
    unreadable files are reported, listed in failures.csv and skipped.
    """
    import pandas as pd

    from pylon.evaluation.overlay import peak_overlay, write_png
    from pylon.inference import Failure, Predictor
    from pylon.inference.inputs import gather_inputs
    from pylon.io import write_csv_atomic, write_text_atomic

    console = Console()
    try:
        chosen = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
        predictor = Predictor(
            weights,
            device=device,
            batch_size=batch_size,
            threshold=threshold,
            classes=chosen,
            precision=precision,
        )
        items = gather_inputs(inputs, recursive=recursive)
    except (FileNotFoundError, ValueError) as err:
        raise fail(console, err, code=2) from err
    if not items:
        raise fail(console, f"no PNG/JPEG/DICOM files found in {inputs}", code=2)

    start = time.perf_counter()
    records, rows, failures, n_overlays = [], [], [], 0
    with _progress(console) as progress:
        task = progress.add_task("predicting", total=len(items))
        results = predictor.iter_items(items, skip_errors=True, keep_pixels=overlays)
        for result in results:
            progress.advance(task)
            if isinstance(result, Failure):
                failures.append({"path": result.path, "reason": result.reason})
                progress.console.print(
                    f"[yellow]skipped[/yellow] {result.path}: {result.reason}",
                    soft_wrap=True,
                    highlight=False,
                )
                continue
            record = result.to_dict()
            record["overlays"] = {}
            for name in result.selected if overlays else []:
                relative = f"overlays/{result.image_id}_{name}.png"
                image = peak_overlay(result.pixels, result.heatmap(name), result.peaks[name])
                write_png(out / relative, image)
                record["overlays"][name] = relative
                n_overlays += 1
            records.append(record)
            rows.append(_csv_row(result))

    write_text_atomic(out / PREDICTIONS_JSONL, "".join(json.dumps(r) + "\n" for r in records))
    write_csv_atomic(pd.DataFrame(rows), out / PREDICTIONS_CSV)
    if failures:
        write_csv_atomic(pd.DataFrame(failures), out / FAILURES_CSV)
    seconds = time.perf_counter() - start
    console.print(
        f"predicted {len(records)} image(s) in {seconds:.1f} s, {n_overlays} overlay(s); "
        f"{len(failures)} unreadable file(s) skipped"
        + (f" (listed in {out / FAILURES_CSV})" if failures else "")
        + f"; results in {out / PREDICTIONS_JSONL} and {out / PREDICTIONS_CSV}",
        soft_wrap=True,
        highlight=False,
    )
    if not records:
        raise typer.Exit(1)
