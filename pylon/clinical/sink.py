"""Where ``pylon predict --dicom-out`` puts each image's DICOM objects: a sink.

A sink takes one image's objects (:class:`pylon.clinical.objects.DicomObject`) and a *stem* that
depends only on the image's id, stores them, and returns one record per object for the image's
line of ``predictions.jsonl``. The same stem always gives the same places, so an image redone
after a killed run replaces its objects instead of adding to them, and :meth:`DicomSink.discard`
clears what an interrupted run may have left for a stem before the image is redone.

:class:`FolderSink` writes files into a folder, :class:`pylon.clinical.dicomweb.DicomwebSink`
stores over STOW-RS; :func:`open_sink` turns ``--dicom-out``'s text into one of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

# the names pylon.clinical.objects.write_objects gives an image's files: <kind>[_<class>].dcm
OBJECT_NAMES = ("sr.dcm", "seg.dcm", "pmap.dcm", "source.dcm", "sc_*.dcm")


class DicomSink(Protocol):
    """What ``pylon predict`` needs of a destination for DICOM objects."""

    @property
    def setting(self) -> str:
        """The destination as ``predict.json`` records it (a resumed run must name the same)."""
        ...

    @property
    def local_folders(self) -> list[Path]:
        """Folders on this machine that hold what the sink writes (left out of input scans)."""
        ...

    def write(self, objects: Sequence[Any], stem: str) -> list[dict[str, Any]]:
        """Store one image's objects; one record per object (``kind``, ``class``,
        ``sop_class_uid``, ``sop_instance_uid``, ``series_instance_uid`` and where it went)."""
        ...

    def discard(self, stem: str) -> None:
        """Remove what an interrupted run may have stored for ``stem`` without its record."""
        ...


class FolderSink:
    """Writes each image's objects as files into ``folder`` (created when first written to):
    ``folder/<stem>/sr.dcm``, ``sc_<class>.dcm``, ``seg.dcm`` and, for a new study,
    ``source.dcm`` (:func:`pylon.clinical.objects.write_objects`); a stem with sub-folders
    (the image id ``a/x.dcm``) keeps them (``folder/a/x.dcm/sr.dcm``).

    Args:
        folder: the output folder.

    Raises:
        ValueError: ``folder`` is a file, or cannot be created or written.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"--dicom-out {self.folder} is a file; expected a folder")
        existing = self.folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"--dicom-out {self.folder}: cannot write into {existing}")

    @property
    def setting(self) -> str:
        return str(self.folder.resolve())

    @property
    def local_folders(self) -> list[Path]:
        return [self.folder]

    def write(self, objects: Sequence[Any], stem: str) -> list[dict[str, Any]]:
        """Write the objects with :func:`pylon.clinical.objects.write_objects`.

        Returns:
            Its records, each ``path`` made absolute (a resumed run may start elsewhere).
        """
        from pylon.clinical.objects import write_objects

        records = write_objects(objects, self.folder, stem)
        for record in records:
            record["path"] = str(Path(record["path"]).resolve())
        return records

    def discard(self, stem: str) -> None:
        """Remove the object files of ``stem`` that a run killed between writing them and
        appending their record left (files of its folder named as pylon names its objects and
        made by pylon: Manufacturer ``pylon``), and the folders that leaves empty; other files
        stay."""
        from pylon.io import TEMP_PREFIX, TEMP_SUFFIX

        folder = self.folder / stem
        if not folder.is_dir():
            return
        for pattern in OBJECT_NAMES:
            for path in folder.glob(pattern):
                if path.is_file() and _is_pylon_object(path):
                    path.unlink()
            # what an interrupted atomic write left
            for path in folder.glob(f"{TEMP_PREFIX}{pattern}.*{TEMP_SUFFIX}"):
                path.unlink(missing_ok=True)
        remove_empty_parents(folder, self.folder)


def open_sink(target: str) -> DicomSink:
    """The sink ``--dicom-out`` names: a folder path, or a ``dicomweb[s]://`` service.

    Args:
        target: ``--dicom-out``'s text.

    Returns:
        A :class:`FolderSink`, or a :class:`pylon.clinical.dicomweb.DicomwebSink` (which checks
        the server and the credentials now).

    Raises:
        ValueError: an unusable folder or a malformed location.
        pylon.clinical.dicomweb.DicomwebError: the server is unreachable or refuses the
            credentials.
    """
    from pylon.clinical.dicomweb import DicomwebSink, is_dicomweb_url

    if is_dicomweb_url(target):
        return DicomwebSink(target)
    return FolderSink(target)


def remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents below ``root`` while they are empty."""
    root = root.resolve()
    folder = folder.resolve()
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): stop
            return
        folder = folder.parent


def _is_pylon_object(path: Path) -> bool:
    """A DICOM file made by pylon (``Manufacturer`` of its equipment module is ``pylon``)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Manufacturer"])
    except Exception:  # noqa: BLE001  anything unreadable is not ours to delete
        return False
    return str(header.get("Manufacturer", "")) == "pylon"
