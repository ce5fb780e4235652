"""The output folder of ``pylon predict``: records appended as batches finish, resumable reruns.

``predictions.jsonl`` gets each batch's records appended (and flushed) as soon as they are done,
so a killed run loses at most the batch in flight; ``predictions.csv`` and ``failures.csv`` are
written from it at the end. ``predict.json`` records the settings: a rerun with the same settings
skips the images already predicted, a rerun with other settings is refused (``overwrite`` starts
clean), and outputs of an earlier run are never silently mixed with new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pylon.io import write_csv_atomic, write_text_atomic

PREDICTIONS_JSONL = "predictions.jsonl"
PREDICTIONS_CSV = "predictions.csv"
FAILURES_CSV = "failures.csv"
OVERLAYS = "overlays"
SETTINGS_JSON = "predict.json"
OUTPUTS = (PREDICTIONS_JSONL, PREDICTIONS_CSV, FAILURES_CSV, OVERLAYS, SETTINGS_JSON)


def check_output_folder(out: str | os.PathLike, *, create: bool = False) -> Path:
    """Refuse an output folder that is a file or cannot be written, before any work is done.

    Args:
        out: the output folder.
        create: also create it (with its parents); otherwise a missing folder is checked through
            its nearest existing parent, and nothing is created.

    Returns:
        The folder.

    Raises:
        ValueError: ``out`` (or a parent) is an existing file, or cannot be created or written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder (created if missing)")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write into {existing} (permission denied)")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create the output folder {out}: {err.strerror}") from None
    return out


def overlay_stems(image_ids: Sequence[str]) -> dict[str, str]:
    """The overlay file stem of each id: the id itself, or with a short hash of it appended where
    two ids differ only in case (``x.png``, ``x.PNG``), so no overlay overwrites another even on a
    case-insensitive file system. Depends only on the ids given (stable across reruns)."""
    folded: dict[str, int] = {}
    for image_id in image_ids:
        folded[image_id.lower()] = folded.get(image_id.lower(), 0) + 1
    stems = {}
    for image_id in image_ids:
        if folded[image_id.lower()] > 1:
            digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
            stems[image_id] = f"{image_id}-{digest}"
        else:
            stems[image_id] = image_id
    return stems


def overlay_relative_path(stem: str, class_name: str) -> str:
    """``overlays/<stem>_<class>.png`` (sub-folders of the id kept; a class's ``/`` replaced)."""
    safe = class_name.replace("/", "_").replace("\\", "_")
    return f"{OVERLAYS}/{stem}_{safe}.png"


def csv_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One ``predictions.csv`` row from a JSONL record: id, path, size, ``prob_<class>``,
    ``peak_x_<class>``, ``peak_y_<class>``, ``peak_x_mm_<class>``, ``peak_y_mm_<class>`` (empty
    where the pixel spacing is unknown) and ``selected`` (``|``-separated); with ``--dicom-out``
    also ``dicom_objects`` (how many objects were written)."""
    row = {k: record[k] for k in ("image_id", "path", "height", "width")}
    for name, probability in record["probabilities"].items():
        row[f"prob_{name}"] = probability
    for name, (x, y) in record["peaks"].items():
        row[f"peak_x_{name}"] = x
        row[f"peak_y_{name}"] = y
    peaks_mm = record.get("peaks_mm") or {}
    for name in record["peaks"]:
        x_mm, y_mm = peaks_mm.get(name) or (None, None)
        row[f"peak_x_mm_{name}"] = x_mm
        row[f"peak_y_mm_{name}"] = y_mm
    row["selected"] = "|".join(record["selected"])
    if "dicom_objects" in record:  # a run with --dicom-out
        row["dicom_objects"] = len(record["dicom_objects"])
    return row


def read_records(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of a ``predictions.jsonl``.

    Args:
        path: the file (missing: no records).

    Returns:
        ``(records, torn)``: ``torn`` is ``True`` when the last line was cut (a run killed while
        writing it); that line is left out.

    Raises:
        ValueError: any other line that is not a record, or an id twice, naming the line.
    """
    if not path.is_file():
        return [], False
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records, seen, torn = [], set(), False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ok = isinstance(record, dict) and isinstance(record.get("image_id"), str)
        except json.JSONDecodeError:
            ok = False
        if not ok and number == len(lines) and not text.endswith("\n"):
            torn = True  # the unfinished last line of a killed run: redone
            continue
        if not ok:
            raise ValueError(
                f"{path} line {number} is not a prediction record; use --overwrite to start "
                "clean, or another --out"
            )
        if record["image_id"] in seen:
            raise ValueError(
                f"{path} line {number}: {record['image_id']!r} predicted twice; use --overwrite "
                "to start clean, or another --out"
            )
        seen.add(record["image_id"])
        records.append(record)
    # a complete last record without its newline is rewritten too, so appends start a new line
    return records, torn or bool(text) and not text.endswith("\n")


class PredictionFolder:
    """The outputs of one ``pylon predict`` into ``out``; see the module docstring.

    Args:
        out: the output folder (created; a file there is refused).
        settings: what the results depend on (weights, inputs, threshold, ...), JSON-able; a
            rerun must give the same to resume.
        overwrite: remove the outputs of an earlier run (only pylon's own files) and start clean.

    Raises:
        ValueError: ``out`` is unusable, or holds outputs of a run with other settings (or of one
            that cannot be resumed) and ``overwrite`` is off.
    """

    def __init__(self, out: str | os.PathLike, settings: Mapping[str, Any], *, overwrite: bool):
        self.out = check_output_folder(out, create=True)
        self.settings = json.loads(json.dumps(dict(settings)))
        self.jsonl = self.out / PREDICTIONS_JSONL
        self._handle = None
        if overwrite:
            self._remove_outputs()
        self.records = self._resume()
        write_text_atomic(self.out / SETTINGS_JSON, json.dumps(self.settings, indent=2) + "\n")

    @property
    def done(self) -> set[str]:
        """Ids already predicted (by an earlier, interrupted run into the same folder)."""
        return {record["image_id"] for record in self.records}

    def _remove_outputs(self) -> None:
        """Remove pylon's own outputs only: the record files, the overlays the records name and
        the DICOM object files they list (a file of the user's in ``out`` or ``out/overlays``
        stays)."""
        try:
            records, _ = read_records(self.jsonl)
        except ValueError:
            records = []
        remove_dicom_objects(records)
        for record in records:
            for relative in record.get("overlays", {}).values():
                path = self.out / relative
                if path.is_file() and self.out.resolve() in path.resolve().parents:
                    path.unlink()
        for name in (PREDICTIONS_JSONL, PREDICTIONS_CSV, FAILURES_CSV, SETTINGS_JSON):
            (self.out / name).unlink(missing_ok=True)
        _remove_empty_folders(self.out / OVERLAYS)

    def _resume(self) -> list[dict[str, Any]]:
        settings_file = self.out / SETTINGS_JSON
        # overlays alone do not count: those of the images about to be done are discarded first
        # (discard_overlays), and another file there may be the user's
        records_files = (PREDICTIONS_JSONL, PREDICTIONS_CSV, FAILURES_CSV, SETTINGS_JSON)
        present = [name for name in records_files if (self.out / name).exists()]
        if not present:
            return []
        if not settings_file.is_file():
            raise ValueError(
                f"{self.out} holds outputs of an earlier `pylon predict` ({', '.join(present)}) "
                f"without its {SETTINGS_JSON}, so they cannot be resumed; use --overwrite to "
                "replace them, or another --out"
            )
        try:
            previous = json.loads(settings_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = None
        if previous != self.settings:
            changed = _differences(previous, self.settings)
            raise ValueError(
                f"{self.out} holds predictions made with other settings ({changed}); use "
                "--overwrite to replace them, or another --out"
            )
        records, torn = read_records(self.jsonl)
        if torn:
            write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in records))
        # regenerated at the end; a stale copy must not disagree with the JSONL meanwhile
        for name in (PREDICTIONS_CSV, FAILURES_CSV):
            (self.out / name).unlink(missing_ok=True)
        return records

    def drop_outdated(self, sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Forget the records made from another version of their file, so they are redone.

        Args:
            sources: ``image_id -> {"path", "file_bytes", "file_mtime_ns"}`` of the files to
                predict now (:func:`pylon.inference.inputs.file_source`); a record of one of these
                ids whose fields differ (the file was replaced or edited since, or the record
                predates these fields) is removed from ``predictions.jsonl``.

        Returns:
            The ids dropped.
        """
        keys = ("path", "file_bytes", "file_mtime_ns")
        dropped = [
            r["image_id"]
            for r in self.records
            if r["image_id"] in sources
            and any(r.get(k) != sources[r["image_id"]].get(k) for k in keys)
        ]
        if dropped:
            gone = set(dropped)
            self.records = [r for r in self.records if r["image_id"] not in gone]
            write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records))
        return dropped

    def discard_overlays(self, relative_paths: Iterable[str]) -> None:
        """Remove overlays of images about to be (re)done that an interrupted run may have
        written before their record (so none is left if the image now fails)."""
        for relative in relative_paths:
            (self.out / relative).unlink(missing_ok=True)

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append a batch's records to ``predictions.jsonl`` and flush them to the OS."""
        if not records:
            return
        if self._handle is None:
            self._handle = open(self.jsonl, "a", encoding="utf-8")  # noqa: SIM115
        self._handle.write("".join(json.dumps(r) + "\n" for r in records))
        self._handle.flush()
        self.records += [dict(r) for r in records]

    def finish(self, order: Sequence[str], failures: Sequence[Mapping[str, Any]]) -> None:
        """Close the JSONL and write ``predictions.csv`` from it (in ``order`` of ids) and
        ``failures.csv`` (``path, reason``) when there are failures."""
        import pandas as pd

        if self._handle is not None:
            self._handle.close()
            self._handle = None
        rank = {image_id: k for k, image_id in enumerate(order)}
        records, _ = read_records(self.jsonl)
        records.sort(key=lambda r: rank.get(r["image_id"], len(rank)))
        write_csv_atomic(pd.DataFrame([csv_row(r) for r in records]), self.out / PREDICTIONS_CSV)
        if failures:
            write_csv_atomic(pd.DataFrame(list(failures)), self.out / FAILURES_CSV)


def remove_dicom_objects(records: Iterable[Mapping[str, Any]]) -> list[Path]:
    """Delete the DICOM object files that records list (``dicom_objects``, ``pylon predict
    --dicom-out``), each only while it is still the object recorded: a DICOM file whose SOP
    Instance UID is the record's (a file put there since, or edited into another object, stays).
    Entries without a local ``path`` (objects stored elsewhere) are left alone. The image's
    folder (``<dicom-out>/<image id>/``, as many levels as the id has parts) is removed when that
    leaves it empty; ``--dicom-out`` itself stays.

    Returns:
        The files removed.
    """
    import pydicom

    removed = []
    for record in records:
        for entry in record.get("dicom_objects") or []:
            path = Path(entry["path"]) if isinstance(entry.get("path"), str) else None
            if path is None or not path.is_file():
                continue
            try:
                header = pydicom.dcmread(
                    path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
                )
                uid = str(header.get("SOPInstanceUID", ""))
            except Exception:  # noqa: BLE001  not a DICOM any more: not ours to delete
                continue
            if uid and uid == entry.get("sop_instance_uid"):
                path.unlink()
                removed.append(path)
                folder = path.parent
                for _ in Path(record["image_id"]).parts:
                    try:
                        folder.rmdir()
                    except OSError:  # not empty
                        break
                    folder = folder.parent
    return removed


def _remove_empty_folders(folder: Path) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def _differences(previous: Any, current: Mapping[str, Any]) -> str:
    if not isinstance(previous, dict):
        return f"{SETTINGS_JSON} unreadable"
    keys = sorted(set(previous) | set(current))
    changed = [
        f"{key}: {previous.get(key)!r} then, {current.get(key)!r} now"
        for key in keys
        if previous.get(key) != current.get(key)
    ]
    return "; ".join(changed)
