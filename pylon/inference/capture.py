"""What decoders say about one file, kept with that file's result instead of on the terminal.

While one input is decoded, Python warnings (pydicom's "excess padding", PIL's) are recorded, and
what C libraries print on the process's stderr (libpng's ``libpng warning: iCCP: ...``, libjpeg's
``Corrupt JPEG data``) is caught by pointing file descriptor 2 at a temporary file. ``pylon
predict`` stores them in the ``warnings`` field of the file's record.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

# pydicom both warns and logs each problem; the warning is kept, the log line dropped meanwhile
QUIET_LOGGERS = ("pydicom",)


def _is_stderr_fd(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


class DecoderMessages:
    """Collect, per decoded file, the warnings its decoders emit (a context for a whole run).

    Decodes done through :meth:`file` are serialised (fd 2 and the warning filters are
    process-wide); Python code writing to ``sys.stderr`` meanwhile (a progress bar) still
    reaches the terminal, because ``sys.stderr`` is pointed at a copy of the real descriptor for
    the context's life. Anything else a C library prints during a decode is attributed to that
    file.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._saved_fd: int | None = None
        self._capture = None
        self._old_stderr = None

    def __enter__(self) -> DecoderMessages:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        try:
            self._saved_fd = os.dup(2)
            self._capture = tempfile.TemporaryFile()
        except OSError:  # no stderr to capture (closed): Python warnings only
            self._saved_fd, self._capture = None, None
            return self
        if _is_stderr_fd(sys.stderr):
            self._old_stderr = sys.stderr
            sys.stderr = open(  # noqa: SIM115  closed in __exit__
                os.dup(self._saved_fd),
                "w",
                buffering=1,
                encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                errors="backslashreplace",
            )
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:  # a decode still in flight in a worker thread finishes first
            self._restore()

    def _restore(self) -> None:
        if self._old_stderr is not None:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr, self._old_stderr = self._old_stderr, None
        if self._saved_fd is not None:
            os.close(self._saved_fd)
            self._saved_fd = None
        if self._capture is not None:
            self._capture.close()
            self._capture = None

    @contextlib.contextmanager
    def file(self) -> Iterator[list[str]]:
        """Decode one file inside this block; the list it yields gets the messages, each once,
        when the block ends (also when it raises)."""
        messages: list[str] = []
        with self._lock:
            quiet = [logging.getLogger(name) for name in QUIET_LOGGERS]
            propagate = [logger.propagate for logger in quiet]
            if self._capture is not None:
                os.dup2(self._capture.fileno(), 2)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    for logger in quiet:
                        logger.propagate = False
                    try:
                        yield messages
                    finally:
                        for logger, value in zip(quiet, propagate, strict=True):
                            logger.propagate = value
            finally:
                native = ""
                if self._capture is not None:
                    os.dup2(self._saved_fd, 2)
                    self._capture.seek(0)
                    native = self._capture.read().decode("utf-8", errors="replace")
                    self._capture.seek(0)
                    self._capture.truncate()
                found = [f"{w.category.__name__}: {w.message}" for w in caught]
                found += [line.strip() for line in native.splitlines() if line.strip()]
                messages += list(dict.fromkeys(found))
