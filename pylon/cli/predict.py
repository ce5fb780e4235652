"""``pylon predict``: probabilities, heatmap peaks and overlays of a trained model on images."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import typer
from rich.console import Console

from pylon.cli.app import app, exit_on_user_error, fail

console = Console()


def _settings(weights: Path, inputs: list[str], predictor, **options) -> dict:
    """What the results depend on; a rerun into the same --out must match to resume."""
    from pylon.clinical.dicomweb import is_dicomweb_url
    from pylon.data.images import max_pixels

    stat = weights.stat()
    return {
        "weights": str(weights.resolve()),
        "weights_bytes": stat.st_size,
        "weights_mtime_ns": stat.st_mtime_ns,
        "inputs": [p if is_dicomweb_url(p) else str(Path(p).resolve()) for p in inputs],
        "precision": predictor.execution.precision,
        "max_pixels": max_pixels(predictor.max_pixels),
        **options,
    }


def _dicom_writer(console: Console, dicom_out: str | None, **options):
    """The :class:`pylon.clinical.predict_dicom.FindingsWriter` of ``--dicom-out`` (``None``
    without it): a wrong option exits 2, a missing ``[clinical]`` extra exits 1, before the model
    is loaded."""
    from pylon.clinical.predict_dicom import FindingsWriter, check_report, parse_kinds

    with exit_on_user_error(console, code=2):
        parse_kinds(options["kinds"])
        check_report(options["report"])
        if dicom_out is None:
            given = [
                name
                for name, value, default in (
                    ("--dicom-objects", options["kinds"], "sr,sc"),
                    ("--new-study", options["new_study"], False),
                    ("--report", options["report"], "selected"),
                )
                if value != default
            ]
            if given:
                raise ValueError(f"{', '.join(given)} only apply with --dicom-out DIR")
            return None
    try:
        from pylon.clinical import require

        require("highdicom")
    except ImportError as err:
        raise fail(console, err, 1) from None
    with exit_on_user_error(console, code=2):
        return FindingsWriter(dicom_out, **options)


def _refuse_without_identity(writer, items) -> None:
    """Exit 2 when no input can have DICOM objects: none is a DICOM and --new-study is off (a
    mix is predicted, the images that are not DICOMs listed in failures.csv)."""
    from pylon.clinical.predict_dicom import no_identity_message
    from pylon.inference.inputs import is_dicom

    if writer.new_study:
        return
    with exit_on_user_error(console, code=2):
        for _, path in items:
            try:
                if is_dicom(path):
                    return
            except OSError:
                return  # unreadable: its own failure, later
        if len(items) == 1:
            raise ValueError(no_identity_message(items[0][1]))
        raise ValueError(
            f"none of the {len(items)} inputs ({items[0][1]}, ...) is a DICOM: they have no "
            "DICOM identity (study/patient UIDs): use --new-study to write new studies with "
            "generated UIDs, or give the DICOMs"
        )


def _skip(console: Console, failures: list[dict], path: str | None, reason: str) -> None:
    """Record a file that gets no prediction (for failures.csv) and say so on the terminal."""
    failures.append({"path": path, "reason": reason})
    console.print(f"skipped {path}: {reason}", soft_wrap=True, markup=False, highlight=False)


@app.command("predict")
def predict_command(
    weights: Path = typer.Argument(..., help="Trained weights (.safetensors from pylon train)."),
    inputs: list[str] = typer.Argument(
        ...,
        help="PNG/JPEG/DICOM files and/or folders, and/or DICOMweb locations "
        "dicomweb[s]://HOST:PORT/PATH?study=UID[&series=UID] (retrieved into OUT/dicomweb; "
        "credentials from PYLON_DICOMWEB_USER/PASSWORD or netrc: docs/dicomweb.md).",
    ),
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
        "--out, and the DICOM object files its records list (default: resume it, skipping "
        "images already in predictions.jsonl).",
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
    dicom_out: str | None = typer.Option(
        None,
        "--dicom-out",
        help="Also write each image's findings as DICOM objects into this folder (the "
        "[clinical] extra): a TID 1500 SR referencing the source DICOM, heatmap Secondary "
        "Captures, fractional Segmentations (--dicom-objects); listed in each record's "
        "dicom_objects.",
    ),
    dicom_objects: str = typer.Option(
        "sr,sc",
        "--dicom-objects",
        help="With --dicom-out: comma-separated sr (Comprehensive SR, TID 1500), sc (a heatmap "
        "Secondary Capture per reported finding), seg (the probability maps as a fractional "
        "Segmentation), pmap (as a Parametric Map: CT/MR sources only; a radiograph fails).",
    ),
    new_study: bool = typer.Option(
        False,
        "--new-study",
        help="With --dicom-out: a PNG/JPEG input gets a new study with generated UIDs (a "
        "Secondary Capture of the image, referenced by the findings); without it such an "
        "input is a failure (it has no DICOM identity).",
    ),
    report: str = typer.Option(
        "selected",
        "--report",
        help="With --dicom-out: the SR reports the selected classes (at or above --threshold, "
        "or --classes) or all classes (those below as image-level findings).",
    ),
) -> None:
    """Predict class probabilities and heatmap peaks (original pixels; DICOMs with a pixel
    spacing also in mm from the top-left pixel's centre) for images and DICOMs.

    Appends to predictions.jsonl after every batch, writes predictions.csv from it at the end and
    overlays/ as it goes; a rerun into the same --out skips images already predicted (--overwrite
    starts clean; a file changed since its record is redone). Unreadable files, and files of the
    folders that are not images, are reported, listed in failures.csv and skipped. One command at
    a time per --out (a lock, --out/.pylon.lock).

    With --dicom-out, each image's DICOM objects are written before its record, whose
    dicom_objects lists them; an image redone after a kill replaces its objects, and --overwrite
    removes those its records list.
    """
    from pylon.clinical.dicomweb import (
        DICOMWEB_CACHE,
        fetch_inputs,
        input_location,
        is_dicomweb_url,
    )
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
        remote = [input_location(i) for i in inputs if is_dicomweb_url(i)]
    writer = _dicom_writer(
        console,
        dicom_out,
        kinds=dicom_objects,
        report=report,
        new_study=new_study,
        threshold=threshold,
        png16=png16,
    )
    with exit_on_user_error(console):  # dicomweb:// inputs: retrieved before the model loads
        paths = fetch_inputs(inputs, out / DICOMWEB_CACHE) if remote else list(map(Path, inputs))
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
    if writer:
        from pylon.clinical.predict_dicom import model_name

        writer.model_name = model_name(predictor)
    with contextlib.ExitStack() as held:
        with exit_on_user_error(console):
            # the output folder and its files are not inputs, even inside a folder scanned
            written = writer.sink.local_folders if writer else []
            scanned = scan_inputs(
                paths,
                recursive=recursive,
                exclude=[out, *(out / name for name in OUTPUTS), *written],
            )
            items = scanned.items
            if not items:
                n_other = len(scanned.skipped)
                others = f" ({n_other} other file(s) skipped)" if n_other else ""
                raise ValueError(
                    f"no {SUPPORTED} files found in {', '.join(map(str, inputs))}{others}"
                )
        if writer:
            _refuse_without_identity(writer, items)
        with exit_on_user_error(console):
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
                **(writer.settings if writer else {}),
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
            failures: list[dict] = []
            for path, why in scanned.skipped:
                _skip(console, failures, str(path), why)
            stems = overlay_stems([image_id for image_id, _ in items])
            folder.discard_overlays(
                overlay_relative_path(stems[image_id], name)
                for image_id, _ in todo
                for name in predictor.class_names
            )
            for image_id, _ in todo if writer else []:
                writer.sink.discard(stems[image_id])
            start = time.perf_counter()
            n_failed, pending, n_new, n_overlays, n_warned = 0, [], 0, 0, 0
            n_objects, n_dicom_failed = 0, 0
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
                        _skip(console, failures, result.path, reason)
                        n_failed += 1
                    else:
                        record = result.to_dict()
                        record.update(sources[result.image_id])
                        said: list[str] = []  # what pydicom/highdicom warn: in the record
                        try:  # the DICOM objects first: an image without them gets no record
                            if writer:
                                with messages.file() as said:
                                    record["dicom_objects"] = writer.write(
                                        result, stem=stems[result.image_id]
                                    )
                        except ValueError as err:
                            reason = str(err)
                            if said:
                                reason += f" (warnings: {'; '.join(said)})"
                            _skip(console, failures, result.path, reason)
                            n_dicom_failed += 1
                        else:
                            record["warnings"] += [f"DICOM output: {m}" for m in said]
                            n_objects += len(record.get("dicom_objects", []))
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
            + (f"{n_objects} DICOM object(s) in {dicom_out}; " if writer else "")
            + (f"{n_dicom_failed} image(s) without DICOM objects; " if n_dicom_failed else "")
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
