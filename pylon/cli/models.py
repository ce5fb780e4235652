"""``pylon models``: list the registered architectures and their options."""

from rich.console import Console
from rich.table import Table

from pylon.cli.app import app


@app.command("models")
def models_command() -> None:
    """List the model names that ``pylon.create_model`` accepts, with their options."""
    from pylon.models import list_models
    from pylon.models.registry import model_options

    table = Table("model", "options (defaults)")
    for name in list_models():
        options = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items())
        table.add_row(name, options or "-")
    Console().print(table)
