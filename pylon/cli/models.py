"""``pylon models``: list the registered architectures."""

from rich.console import Console

from pylon.cli.app import app


@app.command("models")
def models_command() -> None:
    """List the model names that ``pylon.create_model`` accepts."""
    from pylon.models import list_models

    console = Console()
    for name in list_models():
        console.print(name)
