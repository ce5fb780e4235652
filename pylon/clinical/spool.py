"""The DICOM node's spool folder: where every received image and every result waits, so that a
crash, a SIGKILL or a SIGTERM loses nothing and sends nothing twice.

Each image's state is where its file is; every step from one state to the next is one
``os.replace`` (atomic on a POSIX file system)::

    SPOOL/incoming/<SOPInstanceUID>.dcm      received, not yet predicted
    SPOOL/outbox/.<SOPInstanceUID>.partial/  results being written (never sent)
    SPOOL/outbox/<SOPInstanceUID>/           predicted: the results to send (01-sr.dcm, ...) and
                                             the image itself (source.dcm)
    SPOOL/failed/<SOPInstanceUID>.dcm        could not be predicted (the reason is in the journal)
    SPOOL/failed/<SOPInstanceUID>-results/   results the destination refused (a failure status)

An image is received when its file is renamed into ``incoming/`` (written to a temp file first:
:func:`pylon.io.atomic_path`); it is predicted when its ``.partial`` folder, holding its results
and then the image moved in from ``incoming/``, is renamed to ``outbox/<uid>/``; each result is
deleted once the destination acknowledged it, and the folder once all are: the image is sent.
On restart (:meth:`Spool.recover`) a ``.partial`` folder is undone (its image goes back to
``incoming/``, to be predicted again), ``incoming/`` is predicted and ``outbox/`` is sent. A
result is sent again only when the process died between the destination's acknowledgement and
the deletion of the file; it then carries the same SOP Instance UID, which a PACS stores once.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from pylon.io import atomic_path

INCOMING, OUTBOX, FAILED = "incoming", "outbox", "failed"
JOURNAL = "journal.jsonl"
SOURCE = "source.dcm"
PARTIAL = ".partial"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def check_uid(uid: str) -> str:
    """``uid`` if it is a DICOM UID (digits and dots, at most 64 characters), so it can name a
    file; ``ValueError`` otherwise."""
    uid = str(uid).strip()
    if len(uid) > 64 or not _UID.match(uid):
        raise ValueError(f"SOP Instance UID {uid!r} is not a DICOM UID (digits and dots, <= 64)")
    return uid


class Spool:
    """The spool folder of one node (see the module's docstring for its layout).

    Args:
        folder: the spool folder (created with its sub-folders if missing).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.incoming = self.folder / INCOMING
        self.outbox = self.folder / OUTBOX
        self.failed = self.folder / FAILED
        for path in (self.incoming, self.outbox, self.failed):
            path.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.folder / JOURNAL

    # received
    def receive(self, uid: str, write: Callable[[Path], None]) -> Path:
        """Store an image atomically as received.

        Args:
            uid: its SOP Instance UID (checked by :func:`check_uid`).
            write: writes the DICOM file to the path it is given (a temp file next to the
                destination, renamed into ``incoming/`` once written and fsynced).

        Returns:
            The image's path in ``incoming/``.
        """
        path = self.incoming / f"{check_uid(uid)}.dcm"
        with atomic_path(path) as tmp:
            write(tmp)
        return path

    def pending_images(self) -> list[Path]:
        """The received images not yet predicted, oldest first."""
        return _oldest_first(p for p in self.incoming.glob("*.dcm") if _UID.match(p.stem))

    # predicted
    def is_pending_results(self, uid: str) -> bool:
        """Whether ``uid`` already has results waiting in the outbox."""
        return (self.outbox / uid).is_dir()

    def predicted(self, image: Path, results: Iterable[tuple[str, Callable[[Path], None]]]) -> Path:
        """Move ``image`` from ``incoming/`` to the outbox with its results, in one rename.

        Args:
            image: the image's path in ``incoming/``.
            results: ``(file name, write)`` pairs; ``write`` writes that result to the path it is
                given.

        Returns:
            The image's outbox folder.
        """
        uid = image.stem
        partial = self.outbox / f".{uid}{PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for name, write in results:
            write(partial / name)
            _fsync(partial / name)
        os.replace(image, partial / SOURCE)
        _fsync_folder(partial)
        final = self.outbox / uid
        os.replace(partial, final)
        _fsync_folder(self.outbox)
        _fsync_folder(self.incoming)
        return final

    def pending_results(self) -> list[Path]:
        """The outbox folders of predicted images whose results are not all sent, oldest first."""
        return _oldest_first(
            p for p in self.outbox.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    @staticmethod
    def result_files(folder: Path) -> list[Path]:
        """The results still to send in an outbox folder, in name order."""
        return sorted(p for p in folder.glob("*.dcm") if p.name != SOURCE)

    # sent
    @staticmethod
    def sent(result: Path) -> None:
        """Forget one result the destination acknowledged."""
        result.unlink()

    @staticmethod
    def all_sent(folder: Path) -> None:
        """Remove an outbox folder whose results are all sent (and the image in it)."""
        shutil.rmtree(folder)

    # failed
    def fail(self, image: Path) -> Path:
        """Move an image that cannot be predicted out of ``incoming/`` into ``failed/``."""
        target = self.failed / image.name
        os.replace(image, target)
        return target

    def refused(self, folder: Path) -> Path:
        """Move an outbox folder whose results the destination refused into ``failed/`` (kept
        for a person to look at; not retried: it would be refused again)."""
        target = self.failed / f"{folder.name}-results"
        shutil.rmtree(target, ignore_errors=True)
        os.replace(folder, target)
        return target

    def recover(self) -> list[str]:
        """Undo what a killed process left half done: each ``.partial`` outbox folder's image
        goes back to ``incoming/`` (it is predicted again; nothing of it was sent) and the folder
        is removed; temp files of interrupted receipts are removed.

        Returns:
            The SOP Instance UIDs put back to be predicted.
        """
        undone = []
        for partial in self.outbox.glob(f".*{PARTIAL}"):
            uid = partial.name[1 : -len(PARTIAL)]
            source = partial / SOURCE
            if source.exists():
                os.replace(source, self.incoming / f"{uid}.dcm")
                undone.append(uid)
            shutil.rmtree(partial)
        for tmp in self.incoming.glob(".*.tmp"):
            tmp.unlink()
        return undone


def _oldest_first(paths: Iterable[Path]) -> list[Path]:
    stamped = []
    for path in paths:
        try:
            stamped.append((path.stat().st_mtime_ns, path.name, path))
        except FileNotFoundError:  # sent or moved meanwhile
            continue
    return [path for _, _, path in sorted(stamped)]


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
