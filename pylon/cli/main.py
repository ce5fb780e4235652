"""Entry point of the ``pylon`` console command: imports every command module, then runs the app."""

from pylon.cli import models as _models  # noqa: F401  (registers commands)
from pylon.cli.app import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
