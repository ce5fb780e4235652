"""``pylon predict``: probabilities, heatmap peaks and overlays of a trained model on images."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from pylon.cli.app import app, exit_on_user_error

console = Console()


def _settings(weights: Path, inputs: list[Path], predictor, **options) -> dict:
    """What the results depend on; a rerun into the same --out must match to resume."""
    from pylon.data.images import max_pixels

    stat = weights.stat()
    return {
        "weights": str(weights.resolve()),
        "weights_bytes": stat.st_size,
        "weights_mtime_ns": stat.st_mtime_ns,
        "inputs": [str(p.resolve()) for p in inputs],
        "precision": predictor.execution.precision,
        "max_pixels": max_pixels(predictor.max_pixels),
        **options,
    }


@app.command("predict")
def predict_command(
    weights: Path = typer.Argument(..., help="Trained weights (.safetensors from pylon train)."),
    inputs: list[Path] = typer.Argument(..., help="PNG/JPEG/DICOM files and/or folders."),
    out: Path = typer.Option(..., "--out", help="Output folder (created if missing)."),
    threshold: float = typer.Option(
        0.5, min=0.0, max=1.0, help="Draw overlays for classes at or above this."
    ),
    classes: str | None = typer.Option(
        None, help="Comma-separated classes to draw instead of those above the threshold."
    ),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Search folders recursively."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write overlay PNGs."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Start clean: remove an earlier run's predictions, failures.csv and overlays in "
        "--out (default: resume it, skipping images already in predictions.jsonl).",
    ),
    max_pixels: int | None = typer.Option(
        None,
        "--max-pixels",
        min=0,
        help="Refuse images with more pixels, from their header before decoding (default "
        "$PYLON_MAX_PIXELS or 100000000; 0: no limit).",
    ),
    precision: str = typer.Option(
        "auto", help="auto (bf16 on capable CPUs, fp16 on GPU), fp32, bf16 or fp16."
    ),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    progress: bool = typer.Option(
        True, help="Report progress (a bar in a terminal, plain lines in log files)."
    ),
) -> None:
    """Predict class probabilities and heatmap peaks (original pixels) for images and DICOMs.

    Appends to predictions.jsonl after every batch, writes predictions.csv from it at the end and
    overlays/ as it goes; a rerun into the same --out skips images already predicted (--overwrite
    starts clean). Unreadable files are reported, listed in failures.csv and skipped.
    """
    from pylon.evaluation.overlay import write_png
    from pylon.inference import Failure, Predictor
    from pylon.inference.inputs import gather_inputs
    from pylon.inference.outputs import (
        FAILURES_CSV,
        PREDICTIONS_CSV,
        PREDICTIONS_JSONL,
        PredictionFolder,
        check_output_folder,
        overlay_relative_path,
        overlay_stems,
    )
    from pylon.progress import Progress

    with exit_on_user_error(console, code=2):  # the command line's --out itself
        check_output_folder(out)  # before the model is loaded or any image read
    with exit_on_user_error(console):
        chosen = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
        predictor = Predictor(
            weights,
            device=device,
            batch_size=batch_size,
            threshold=threshold,
            classes=chosen,
            precision=precision,
            max_pixels=max_pixels,
        )
        items = gather_inputs(inputs, recursive=recursive)
        if not items:
            raise ValueError(f"no PNG/JPEG/DICOM files found in {', '.join(map(str, inputs))}")
        settings = _settings(
            weights,
            inputs,
            predictor,
            recursive=recursive,
            threshold=threshold,
            classes=chosen,
            overlays=overlays,
        )
    with exit_on_user_error(console, code=2):  # --out holds another run: --overwrite or not
        folder = PredictionFolder(out, settings, overwrite=overwrite)
    with exit_on_user_error(console):
        done = folder.done
        todo = [item for item in items if item[0] not in done]
        n_skipped = len(items) - len(todo)
        if n_skipped:
            console.print(
                f"resuming: {n_skipped} image(s) already in {out / PREDICTIONS_JSONL} skipped "
                "(--overwrite starts clean)",
                soft_wrap=True,
                highlight=False,
            )
        stems = overlay_stems([image_id for image_id, _ in items])
        folder.discard_overlays(
            overlay_relative_path(stems[image_id], name)
            for image_id, _ in todo
            for name in predictor.class_names
        )
        start = time.perf_counter()
        failures, pending, n_new, n_overlays = [], [], 0, 0
        with Progress("predicting", len(todo), enabled=progress) as bar:
            results = predictor.iter_items(todo, skip_errors=True, keep_pixels=overlays)
            for k, result in enumerate(results, start=1):
                bar.advance()
                if isinstance(result, Failure):
                    failures.append({"path": result.path, "reason": result.reason})
                    console.print(
                        f"skipped {result.path}: {result.reason}",
                        soft_wrap=True,
                        markup=False,
                        highlight=False,
                    )
                else:
                    record = result.to_dict()
                    record["overlays"] = {}
                    for name in result.selected if overlays else []:
                        relative = overlay_relative_path(stems[result.image_id], name)
                        write_png(out / relative, result.overlay(name))
                        record["overlays"][name] = relative
                        n_overlays += 1
                    pending.append(record)
                if k % batch_size == 0 or k == len(todo):  # one flushed append per batch
                    folder.append(pending)
                    n_new += len(pending)
                    pending = []
        folder.finish([image_id for image_id, _ in items], failures)

    seconds = time.perf_counter() - start
    console.print(
        f"predicted {n_new} image(s) in {seconds:.1f} s, {n_overlays} overlay(s); "
        + (f"{n_skipped} already predicted, skipped; " if n_skipped else "")
        + f"{len(failures)} unreadable file(s) skipped"
        + (f" (listed in {out / FAILURES_CSV})" if failures else "")
        + f"; {len(folder.records)} result(s) in {out / PREDICTIONS_JSONL} and "
        f"{out / PREDICTIONS_CSV}",
        soft_wrap=True,
        highlight=False,
    )
    if not folder.records:
        raise typer.Exit(1)
