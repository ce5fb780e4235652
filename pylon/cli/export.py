"""``pylon export WEIGHTS OUT``: ONNX export of trained weights."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from pylon.cli.app import app, exit_on_user_error

console = Console()


@app.command("export")
def export_command(
    weights: Path = typer.Argument(..., help="Trained weights (.safetensors)."),
    out: Path = typer.Argument(..., help="Output .onnx file."),
    opset: int | None = typer.Option(None, help="ONNX opset, 18 to 23 (default: the exporter's)."),
) -> None:
    """Export to ONNX: input 'image' (N, C, size, size), outputs 'logits' and 'cam' (raw scores),
    dynamic batch axis, class names / size / normalisation in the metadata."""
    from pylon.inference.export import check_opset, export_onnx

    with exit_on_user_error(console, code=2):  # before the weights are read
        check_opset(opset)
    with exit_on_user_error(console):
        try:
            path = export_onnx(weights, out, opset=opset)
        except ImportError as err:
            message = f"{err}; install the extras: pip install 'pylon-localization[onnx]'"
            raise ValueError(message) from None
        except FileNotFoundError:
            raise
        except OSError as err:  # an unwritable or missing output folder
            raise ValueError(f"cannot write {out}: {err.strerror or err}") from None
    console.print(f"exported {weights} to {path}", highlight=False)
