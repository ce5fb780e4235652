"""Entry point of the ``pylon`` console command: imports every command module, then runs the app."""

import os
import sys

# Before anything imports OpenCV: its decoder warnings ("[ WARN:0@0.01] global grfmt_png.cpp ...")
# would only repeat, less clearly, what our own messages say about the file.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
if "cv2" in sys.modules:  # already imported (an embedding program): same effect
    logging = sys.modules["cv2"].utils.logging
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)

from pylon.cli import benchmark as _benchmark  # noqa: E402, F401  (each import registers commands)
from pylon.cli import data as _data  # noqa: E402, F401
from pylon.cli import demo as _demo  # noqa: E402, F401
from pylon.cli import evaluate as _evaluate  # noqa: E402, F401
from pylon.cli import evaluate_cam as _evaluate_cam  # noqa: E402, F401
from pylon.cli import export as _export  # noqa: E402, F401
from pylon.cli import listen as _listen  # noqa: E402, F401
from pylon.cli import models as _models  # noqa: E402, F401
from pylon.cli import pacs as _pacs  # noqa: E402, F401
from pylon.cli import predict as _predict  # noqa: E402, F401
from pylon.cli import train as _train  # noqa: E402, F401
from pylon.cli import view as _view  # noqa: E402, F401
from pylon.cli.app import app  # noqa: E402

__all__ = ["app"]

if __name__ == "__main__":
    app()
