"""``pylon convert-dicom``: convert a folder of DICOMs to PNGs plus a resize-ratio CSV."""

from pathlib import Path

import typer
from rich.console import Console

from pylon.cli.app import app, exit_on_user_error


@app.command("convert-dicom")
def convert_dicom_command(
    src: Path = typer.Argument(
        ..., help="Folder searched recursively for *.dicom / *.dcm files, or one such file."
    ),
    dst: Path = typer.Argument(
        ..., help="Output folder for the PNGs, ratios.csv and conversion.json (the settings)."
    ),
    size: int = typer.Option(
        1024, help="Longest the longer side may be (larger images are shrunk, none enlarged)."
    ),
    reference: bool = typer.Option(
        True,
        "--reference/--no-reference",
        help="The reference implementation's recipe (its reading of the stored values, "
        "equalised, linear resize, truncated levels); --no-reference: the radiology reading of "
        "`pylon predict` (--voi window), not equalised, INTER_AREA, rounded levels.",
    ),
    voi: str | None = typer.Option(
        None,
        "--voi",
        help="How stored values become gray levels: window (modality LUT, then the file's VOI "
        "LUT or first window, min-max where it has neither), minmax (modality LUT, then "
        "min-max) or stored (the stored values min-max, the reference's reading). Default: "
        "stored with --reference, window without. MONOCHROME1 is inverted in each.",
    ),
    equalize: bool | None = typer.Option(
        None,
        "--equalize/--no-equalize",
        help="Histogram equalisation (default: on with --reference, off without).",
    ),
    interpolation: str | None = typer.Option(
        None,
        help="linear, area or cubic (default: linear with --reference, area without).",
    ),
    workers: int = typer.Option(1, help="Worker processes."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Reconvert existing outputs; needed to change the settings DST/conversion.json "
        "records.",
    ),
) -> None:
    """Convert DICOMs to 8-bit PNGs (read as --voi says, MONOCHROME1 inverted, aspect kept).

    Progress: a bar in a terminal, plain lines in a log ($PYLON_PROGRESS_INTERVAL).

    Warnings from pydicom or libpng are listed per file at the end, not interleaved."""
    import dataclasses

    from pylon.data.dicom import (
        PLAIN_CONVERSION,
        REFERENCE_CONVERSION,
        check_voi,
        convert_folder,
    )

    console = Console()
    with exit_on_user_error(console, code=2):
        conversion = REFERENCE_CONVERSION if reference else PLAIN_CONVERSION
        if equalize is not None:
            conversion = dataclasses.replace(conversion, equalize=equalize)
        if interpolation is not None:
            conversion = dataclasses.replace(conversion, interpolation=interpolation)
        if voi is not None:
            conversion = dataclasses.replace(conversion, voi=check_voi(voi, what="--voi"))
        report = convert_folder(
            src, dst, size=size, conversion=conversion, workers=workers, overwrite=overwrite
        )
    if report.warnings:
        by_message: dict[str, list[str]] = {}
        for name, message in report.warnings:
            by_message.setdefault(message, []).append(name)
        files = len({name for name, _ in report.warnings})
        console.print(f"[yellow]{files} file(s) gave warnings while converting:[/yellow]")
        for message, names in by_message.items():
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            console.print(
                f"  {names[0]}{more}: {message}", soft_wrap=True, markup=False, highlight=False
            )
    if report.failed:
        console.print(f"[red]{len(report.failed)} file(s) not converted:[/red]")
        for name, reason in report.failed:
            console.print(f"  {name}: {reason}", soft_wrap=True, markup=False, highlight=False)
    console.print(
        f"converted {report.converted}, skipped {report.skipped} (already done), "
        f"failed {len(report.failed)}; read as --voi {conversion.voi}: {report.reading}; "
        f"ratios in {dst / 'ratios.csv'}, settings in {dst / 'conversion.json'}",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    if report.failed:
        raise typer.Exit(1)


cache_app = typer.Typer(
    help="Show or remove the resized-image caches ($PYLON_CACHE, default ~/.cache/pylon).",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")
_CACHE_DIR_HELP = "Cache folder (default: $PYLON_CACHE or ~/.cache/pylon; data.cache_dir)."


@cache_app.command("list")
def cache_list_command(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
) -> None:
    """List the caches, largest first: dataset, split, size, images, bytes, created, file. Only
    pylon's own files are listed (other files in the folder are ignored)."""
    from pylon.data.cache import default_cache_dir, format_bytes, list_caches

    folder = cache_dir or default_cache_dir()
    console = Console()
    with exit_on_user_error(console, code=2):
        entries = list_caches(folder)
    if not entries:
        missing = "" if folder.is_dir() else " (the folder does not exist)"
        console.print(f"no caches in {folder}{missing}", soft_wrap=True, highlight=False)
        return
    for e in entries:
        what = f"{e.name} {e.split}".strip()
        if e.building:
            text = f"{what}: being built ({e.building}), {format_bytes(e.bytes)} so far"
        elif e.complete:
            text = (
                f"{what}: {e.size} px {e.layout} {e.channels}ch {e.interpolation}, "
                f"{e.images} images, "
                f"{format_bytes(e.bytes)}, created {e.created}"
            )
        else:
            text = (
                f"incomplete (an interrupted build, or an older version): {format_bytes(e.bytes)}"
            )
        files = ", ".join(str(p) for p in e.files)
        console.print(f"{text}\n  {files}", soft_wrap=True, markup=False, highlight=False)
    total = sum(e.bytes for e in entries)
    console.print(f"{len(entries)} cache(s), {format_bytes(total)} in {folder}", soft_wrap=True)


@cache_app.command("clear")
def cache_clear_command(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
    name: str | None = typer.Option(None, "--dataset", help="Only this dataset's caches."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete caches (all of them, or one dataset's); they are rebuilt when next needed. Only
    pylon's own files are removed (other files in the folder stay), and no running build's."""
    from pylon.data.cache import clear_caches, default_cache_dir, format_bytes, list_caches

    folder = cache_dir or default_cache_dir()
    console = Console()
    with exit_on_user_error(console, code=2):
        chosen = [e for e in list_caches(folder) if name is None or e.name == name]
    running = [e for e in chosen if e.building]
    for e in running:
        console.print(
            f"left alone: {e.name} {e.split} is being built ({e.building}): {e.files[0]}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    chosen = [e for e in chosen if not e.building]
    if not chosen:
        missing = "" if folder.is_dir() else " (the folder does not exist)"
        console.print(f"no caches to remove in {folder}{missing}", soft_wrap=True, highlight=False)
        return
    total = format_bytes(sum(e.bytes for e in chosen))
    if not yes and not typer.confirm(f"remove {len(chosen)} cache(s), {total}, in {folder}?"):
        raise typer.Exit(1)
    removed = clear_caches(folder, name)
    console.print(f"removed {len(removed)} cache(s), {total}, from {folder}", soft_wrap=True)
