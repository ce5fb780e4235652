"""The typer application object that every command module registers itself on."""

import typer

app = typer.Typer(
    name="pylon",
    help="PYLON: weakly supervised, high-resolution localization for medical images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
