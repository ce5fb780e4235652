"""Entry point of the ``pylon`` console command: imports every command module, then runs the app."""

from pylon.cli import data as _data  # noqa: F401
from pylon.cli import demo as _demo  # noqa: F401
from pylon.cli import evaluate as _evaluate  # noqa: F401
from pylon.cli import evaluate_cam as _evaluate_cam  # noqa: F401
from pylon.cli import export as _export  # noqa: F401
from pylon.cli import models as _models  # noqa: F401  (registers commands)
from pylon.cli import predict as _predict  # noqa: F401
from pylon.cli import train as _train  # noqa: F401
from pylon.cli.app import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
