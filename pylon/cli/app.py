"""The typer application object that every command module registers itself on, and the one way
commands turn bad input into a message and an exit code."""

import contextlib
import sys
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from pylon.messages import message_of

app = typer.Typer(
    name="pylon",
    help="PYLON: weakly supervised, high-resolution localization for medical images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# What our code raises for bad input or an unusable run (OSError: a file that cannot be read or
# written); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError)
# Libraries' errors that are the user's configuration, matched without importing the library
# (module, class): Lightning's for e.g. ``accelerator=gpu`` on a machine without a GPU.
LIBRARY_USER_ERRORS = (
    ("lightning_fabric.utilities.exceptions", "MisconfigurationException"),
    ("lightning.fabric.utilities.exceptions", "MisconfigurationException"),
)


def fail(console: Console, err: Exception | str, code: int = 1) -> typer.Exit:
    """Print ``error: <message>`` on one line (no markup interpretation) and return the exit to
    raise: ``code`` 1 for failed work, 2 for a wrong command line (as click does)."""
    console.print(f"[red]error:[/red] {escape(message_of(err))}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def is_user_error(err: BaseException) -> bool:
    """True for :data:`USER_ERRORS` and the libraries' configuration errors."""
    if isinstance(err, USER_ERRORS):
        return True
    for module, name in LIBRARY_USER_ERRORS:
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(err, kind):
            return True
    return False


@contextlib.contextmanager
def exit_on_user_error(console: Console, code: int = 1) -> Iterator[None]:
    """Run the block; a user error becomes ``error: <one line>`` and exit ``code`` (1: failed
    work; pass 2 only for a block that checks the command line itself). Every command uses it.

    An error carrying an ``exit_code`` attribute exits with that code: an interrupted training
    run (143 after SIGTERM), a wrong config value (``ConfigError``: 2, a wrong command line).
    """
    try:
        yield
    except Exception as err:
        exit_code = getattr(err, "exit_code", None)
        if exit_code is not None and (isinstance(err, RuntimeError) or is_user_error(err)):
            raise fail(console, err, exit_code) from None
        if not is_user_error(err):
            raise
        raise fail(console, err, code) from None
