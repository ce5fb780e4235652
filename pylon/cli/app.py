"""The typer application object that every command module registers itself on, and the one way
commands turn bad input into a message and an exit code."""

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="pylon",
    help="PYLON: weakly supervised, high-resolution localization for medical images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# What our code raises for bad input or an unusable run; anything else is a bug and keeps its
# traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def fail(console: Console, err: Exception | str, code: int = 1) -> typer.Exit:
    """Print ``error: <message>`` (no markup interpretation) and return the exit to raise."""
    console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


@contextlib.contextmanager
def exit_on_user_error(console: Console, code: int = 1) -> Iterator[None]:
    """Run the block; a user error becomes a one-line message and exit ``code``."""
    try:
        yield
    except USER_ERRORS as err:
        raise fail(console, err, code) from None
    except RuntimeError as err:  # an interrupted run (SIGTERM) carries its own exit code
        exit_code = getattr(err, "exit_code", None)
        if exit_code is None:
            raise
        raise fail(console, err, exit_code) from None
