"""``pylon predict``: probabilities, heatmap peaks and overlays of a trained model on images."""

from __future__ import annotations

import contextlib
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
    voi: str = typer.Option(
        "window",
        "--voi",
        help="How DICOMs are read: window (modality LUT, then the file's VOI LUT or first "
        "window, min-max where it has neither: the radiology reading) or minmax (modality LUT, "
        "then min-max over the image); MONOCHROME1 is inverted in both.",
    ),
    png16: str = typer.Option(
        "bits",
        "--png16",
        help="How 16-bit PNG/TIFF images are scaled: bits (by the bit depth they use: the PNG "
        "sBIT chunk, else their largest value's), minmax (each image's own range) or full "
        "(/65535).",
    ),
    precision: str = typer.Option(
        "auto", help="auto (bf16 on capable CPUs, fp16 on GPU), fp32, bf16 or fp16."
    ),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    progress: bool = typer.Option(
        True, help="Report progress (a bar in a terminal, plain lines in log files)."
    ),
) -> None:
    """Predict class probabilities and heatmap peaks (original pixels; DICOMs with a pixel
    spacing also in mm from the top-left pixel's centre) for images and DICOMs.

    Appends to predictions.jsonl after every batch, writes predictions.csv from it at the end and
    overlays/ as it goes; a rerun into the same --out skips images already predicted (--overwrite
    starts clean; a file changed since its record is redone). Unreadable files, and files of the
    folders that are not images, are reported, listed in failures.csv and skipped. One command at
    a time per --out (a lock, --out/.pylon.lock).
    """
    from pylon.data.dicom import check_voi
    from pylon.data.images import PNG16
    from pylon.evaluation.overlay import write_png
    from pylon.inference import Failure, Predictor
    from pylon.inference.capture import DecoderMessages
    from pylon.inference.inputs import PREDICT_VOI, SUPPORTED, file_source, scan_inputs
    from pylon.inference.outputs import (
        FAILURES_CSV,
        OUTPUTS,
        PREDICTIONS_CSV,
        PREDICTIONS_JSONL,
        PredictionFolder,
        check_output_folder,
        overlay_relative_path,
        overlay_stems,
    )
    from pylon.inference.predictor import check_class_choice, parse_device
    from pylon.locks import folder_lock
    from pylon.models.precision import normalize_precision, resolve_execution
    from pylon.progress import Progress

    chosen = None if classes is None else [c.strip() for c in classes.split(",") if c.strip()]
    with exit_on_user_error(console, code=2):  # the command line's own values
        check_voi(voi, PREDICT_VOI, what="--voi")
        if png16 not in PNG16:
            raise ValueError(f"--png16 {png16!r}: expected one of {', '.join(PNG16)}")
        check_output_folder(out)  # before the model is loaded or any image read
        normalize_precision(precision, field="--precision")
        resolve_execution(precision, parse_device(device))  # refuses fp16 on the CPU
    with exit_on_user_error(console):
        predictor = Predictor(
            weights,
            device=device,
            batch_size=batch_size,
            threshold=threshold,
            precision=precision,
            max_pixels=max_pixels,
            voi=voi,
            png16=png16,
        )
    with exit_on_user_error(console, code=2):  # --classes, against the model's class names
        predictor.classes = check_class_choice(chosen, predictor.class_names, what="--classes")
    with contextlib.ExitStack() as held:
        with exit_on_user_error(console):
            # the output folder and its files are not inputs, even inside a folder scanned
            scanned = scan_inputs(
                inputs, recursive=recursive, exclude=[out, *(out / name for name in OUTPUTS)]
            )
            items = scanned.items
            if not items:
                n_other = len(scanned.skipped)
                others = f" ({n_other} other file(s) skipped)" if n_other else ""
                raise ValueError(
                    f"no {SUPPORTED} files found in {', '.join(map(str, inputs))}{others}"
                )
            settings = _settings(
                weights,
                inputs,
                predictor,
                recursive=recursive,
                threshold=threshold,
                classes=predictor.classes,
                overlays=overlays,
                voi=voi,
                png16=png16,
            )
            # one command at a time in --out, for the command's whole life
            held.enter_context(folder_lock(out, "pylon predict"))
        with exit_on_user_error(console, code=2):  # --out holds another run: --overwrite or not
            folder = PredictionFolder(out, settings, overwrite=overwrite)
        with exit_on_user_error(console):
            sources = {image_id: file_source(path) for image_id, path in items}
            changed = folder.drop_outdated(sources)
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
            if changed:
                console.print(
                    f"{len(changed)} image(s) changed since they were predicted: redone",
                    soft_wrap=True,
                    highlight=False,
                )
            failures = [{"path": str(path), "reason": why} for path, why in scanned.skipped]
            for path, why in scanned.skipped:
                console.print(
                    f"skipped {path}: {why}", soft_wrap=True, markup=False, highlight=False
                )
            stems = overlay_stems([image_id for image_id, _ in items])
            folder.discard_overlays(
                overlay_relative_path(stems[image_id], name)
                for image_id, _ in todo
                for name in predictor.class_names
            )
            start = time.perf_counter()
            n_failed, pending, n_new, n_overlays, n_warned = 0, [], 0, 0, 0
            # decoders' warnings (libpng, pydicom) go into each file's record, not the terminal;
            # entered before the progress bar, which keeps writing to the real stderr
            with (
                DecoderMessages() as messages,
                Progress("predicting", len(todo), enabled=progress) as bar,
            ):
                results = predictor.iter_items(
                    todo, skip_errors=True, keep_pixels=overlays, messages=messages
                )
                for k, result in enumerate(results, start=1):
                    bar.advance()
                    n_warned += bool(result.warnings)
                    if isinstance(result, Failure):
                        reason = result.reason
                        if result.warnings:
                            reason += f" (decoder warnings: {'; '.join(result.warnings)})"
                        failures.append({"path": result.path, "reason": reason})
                        n_failed += 1
                        console.print(
                            f"skipped {result.path}: {reason}",
                            soft_wrap=True,
                            markup=False,
                            highlight=False,
                        )
                    else:
                        record = result.to_dict()
                        record.update(sources[result.image_id])
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
        n_other = len(scanned.skipped)
        console.print(
            f"predicted {n_new} image(s) in {seconds:.1f} s, {n_overlays} overlay(s); "
            + (f"{n_skipped} already predicted, skipped; " if n_skipped else "")
            + f"{n_failed} unreadable file(s) skipped"
            + (f"; {n_other} other file(s) skipped (not images)" if n_other else "")
            + (f" (listed in {out / FAILURES_CSV})" if failures else "")
            + (
                f"; {n_warned} file(s) with decoder warnings (in their records' 'warnings')"
                if n_warned
                else ""
            )
            + f"; {len(folder.records)} result(s) in {out / PREDICTIONS_JSONL} and "
            f"{out / PREDICTIONS_CSV}",
            soft_wrap=True,
            highlight=False,
        )
        if not folder.records:
            raise typer.Exit(1)
