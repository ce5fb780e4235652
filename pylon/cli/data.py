"""``pylon convert-dicom``: convert a folder of DICOMs to PNGs plus a resize-ratio CSV."""

from pathlib import Path

import typer
from rich.console import Console

from pylon.cli.app import app, exit_on_user_error


@app.command("convert-dicom")
def convert_dicom_command(
    src: Path = typer.Argument(..., help="Folder searched recursively for *.dicom / *.dcm files."),
    dst: Path = typer.Argument(..., help="Output folder for the PNGs and ratios.csv."),
    size: int = typer.Option(1024, help="Length of the longer side after resizing."),
    reference: bool = typer.Option(
        True,
        "--reference/--no-reference",
        help="The reference implementation's recipe (equalised, linear resize, truncated "
        "levels); --no-reference: stored contrast, INTER_AREA, rounded levels.",
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Reconvert existing outputs."),
) -> None:
    """Convert DICOMs to 8-bit PNGs (MONOCHROME1 inverted, min-max normalised, aspect kept)."""
    import dataclasses

    from pylon.data.dicom import PLAIN_CONVERSION, REFERENCE_CONVERSION, convert_folder

    console = Console()
    with exit_on_user_error(console, code=2):
        conversion = REFERENCE_CONVERSION if reference else PLAIN_CONVERSION
        if equalize is not None:
            conversion = dataclasses.replace(conversion, equalize=equalize)
        if interpolation is not None:
            conversion = dataclasses.replace(conversion, interpolation=interpolation)
        report = convert_folder(
            src, dst, size=size, conversion=conversion, workers=workers, overwrite=overwrite
        )
    if report.failed:
        console.print(f"[red]{len(report.failed)} file(s) not converted:[/red]")
        for name, reason in report.failed:
            console.print(f"  {name}: {reason}", soft_wrap=True, markup=False, highlight=False)
    console.print(
        f"converted {report.converted}, skipped {report.skipped} (already done), "
        f"failed {len(report.failed)}; ratios in {dst / 'ratios.csv'}",
        soft_wrap=True,
    )
    if report.failed:
        raise typer.Exit(1)
