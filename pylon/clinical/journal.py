"""The DICOM node's record of what happened: one log line and one JSON Lines record per outcome.

Every outcome of ``pylon listen`` (an image received, predicted, its results sent, a failure and
its reason, a refused association) is written twice: as a line on the log (stderr, for a person
or a service manager) and as a record appended to ``SPOOL/journal.jsonl`` (for a program). Each
record is one flushed and fsynced ``write`` of a whole line, so a crash leaves at most a cut last
line, which :func:`read_journal` skips.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOG = logging.getLogger("pylon.listen")

EVENTS = ("started", "received", "predicted", "sent", "failed", "refused", "stopped")


class Journal:
    """Appends outcome records to a JSON Lines file and logs each as one line.

    Args:
        path: the JSON Lines file (created with its folder if missing; appended to otherwise).

    Thread-safe: the storage handler, the prediction worker and the sender all write to it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(self.path, "ab")  # noqa: SIM115  (closed by close())
        self._drop_cut_line()

    def _drop_cut_line(self) -> None:
        """End a line cut by a crash, so the next record starts on a line of its own."""
        size = self.path.stat().st_size
        if size:
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    self._file.write(b"\n")
                    self._file.flush()

    def record(self, event: str, message: str, *, level: int = logging.INFO, **fields: Any) -> dict:
        """Log ``message`` and append ``{"time", "event", **fields, "message"}``.

        Args:
            event: one of :data:`EVENTS`.
            message: the log line (without time or level: the log format adds them).
            level: the logging level of the line (failures: ``logging.WARNING``).
            **fields: JSON-ready values (``sop_instance_uid``, ``reason``, ...).

        Returns:
            The record written.
        """
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}; expected one of {EVENTS}")
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **fields,
            "message": message,
        }
        line = (json.dumps(record, default=str) + "\n").encode()
        with self._lock:
            LOG.log(level, "%s", message)
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        return record

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_journal(path: str | os.PathLike) -> list[dict]:
    """The records of a journal file, in order; a line cut by a crash is skipped."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def configure_logging(level: int = logging.INFO) -> None:
    """One line per outcome on stderr: ``2026-01-01 12:00:00,000 INFO received ...``; pynetdicom's
    own messages only from warnings up (its INFO lines repeat every PDU)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.formatter.converter = time.gmtime
    LOG.addHandler(handler)
    LOG.setLevel(level)
    LOG.propagate = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
