"""``pylon export WEIGHTS OUT``: ONNX export of trained weights; ``pylon export-model RUN DIR``:
a shareable model folder (safetensors, config.json, model card)."""

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
    dynamic batch axis, class names / size / normalisation in the metadata. (For a shareable
    pylon model folder with a model card, see pylon export-model.)"""
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


@app.command("export-model")
def export_model_command(
    args: list[Path] = typer.Argument(
        ...,
        metavar="[RUN] DIR",
        help="A finished run folder and the model folder to write; with --weights only DIR.",
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        help="Released weights instead of a run, e.g. the reference's pylon,nih,256.pkl (read "
        "as plain tensors only, never unpickled); needs --preset.",
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="With --weights: the preset they were trained as (nih256-pylon)."
    ),
    benchmark: Path | None = typer.Option(
        None,
        "--benchmark",
        help="A pylon benchmark output folder that scored RUN: its table with 95 % CIs goes "
        "into the model card.",
    ),
    repo_id: str | None = typer.Option(
        None,
        "--repo-id",
        help="ORG/NAME the folder will be uploaded as on the Hugging Face Hub (for the card's "
        "usage lines).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace DIR if it holds an earlier model folder."
    ),
) -> None:
    """Write a shareable pylon model folder (for pylon.from_pretrained, Predictor, pylon
    predict; not ONNX, see pylon export): model.safetensors, config.json (architecture,
    classes, input size, normalisation, pylon version) and a README.md model card (data, recipe,
    evaluation and benchmark tables, intended use, citation) with a model-index block.
    """
    from pylon.inference.model_folder import check_destination, export_run, export_weights
    from pylon.models.folder import is_repo_id

    with exit_on_user_error(console, code=2):  # the command line's own values
        if weights is None:
            if len(args) != 2:
                raise ValueError("expected RUN DIR (or --weights FILE --preset NAME DIR)")
            if preset is not None:
                raise ValueError("--preset goes with --weights FILE, not with a RUN")
        else:
            if len(args) != 1:
                raise ValueError("with --weights, give only DIR (the folder to write)")
            if preset is None:
                raise ValueError("--weights needs --preset NAME (e.g. nih256-pylon)")
            if benchmark is not None:
                raise ValueError("--benchmark goes with a RUN (the benchmark scored a run)")
        if not is_repo_id(repo_id):
            raise ValueError(f"--repo-id {repo_id!r}: expected ORG/NAME (a Hugging Face repo)")
        check_destination(args[-1], overwrite=overwrite)
    with exit_on_user_error(console):
        if weights is None:
            out = export_run(
                args[0], args[1], benchmark=benchmark, repo_id=repo_id, overwrite=overwrite
            )
        else:
            out = export_weights(
                weights, args[0], preset=preset, repo_id=repo_id, overwrite=overwrite
            )
    console.print(f"wrote the model folder {out}", highlight=False)
