"""The public entry points of DICOM output: a prediction's findings as DICOM objects, and saving
them.

:func:`findings_objects` turns one source DICOM and its :class:`pylon.inference.Prediction` into
a Comprehensive SR (:mod:`pylon.clinical.sr`), Secondary Capture overlays and a fractional
Segmentation (:mod:`pylon.clinical.overlays`); :func:`write_objects` saves them atomically and
returns one record per file. For PNG/JPEG inputs, :func:`pylon.clinical.sources.new_study_source`
makes the source (re-exported here).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom

from pylon.clinical.sources import new_study_source, prepare_source
from pylon.io import atomic_path

if TYPE_CHECKING:
    from pylon.inference import Prediction

# what findings_objects can write: SR (TID 1500), SC overlays, fractional SEG, and a Parametric
# Map for sources with a frame of reference (CT, MR; refused for DX/CR)
KINDS = ("sr", "sc", "seg", "pmap")
REPORTS = ("selected", "all")

__all__ = [
    "KINDS",
    "REPORTS",
    "DicomObject",
    "findings_objects",
    "new_study_source",
    "object_file_name",
    "write_objects",
]


@dataclass(frozen=True)
class DicomObject:
    """One DICOM object written for an image.

    Attributes:
        kind: ``"sr"``, ``"sc"``, ``"seg"``, ``"pmap"`` or ``"source"`` (the generated source
            of a new study, :func:`new_study_source`).
        class_name: the finding a ``"sc"`` overlay shows; ``None`` for the others.
        dataset: the object.
    """

    kind: str
    class_name: str | None
    dataset: pydicom.Dataset

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)


def _reported(prediction: Prediction, report: str) -> list[str]:
    if report == "selected":
        return list(prediction.selected)
    return list(prediction.class_names)


def _check(kinds: Sequence[str], threshold: float, report: str) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown DICOM kind(s) {', '.join(unknown)}; expected {', '.join(KINDS)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    if report not in REPORTS:
        raise ValueError(f"report={report!r}; expected one of {', '.join(REPORTS)}")
    return tuple(dict.fromkeys(kinds))


def findings_objects(
    source: pydicom.Dataset,
    prediction: Prediction,
    *,
    kinds: Sequence[str] = ("sr", "sc"),
    threshold: float = 0.5,
    report: str = "selected",
    model_name: str = "pylon",
) -> list[DicomObject]:
    """The DICOM objects of one image's findings.

    Args:
        source: the input DICOM, read with its pixel data; it is not modified (the writers use a
            copy whose missing type 2 attributes are filled empty).
        prediction: its prediction (``original_size`` must be the source's Rows x Columns).
        kinds: what to write (:data:`KINDS`): ``"sr"`` one Comprehensive SR, ``"sc"`` one
            Secondary Capture per reported class, ``"seg"`` one fractional Segmentation with a
            segment per reported class, ``"pmap"`` one Parametric Map of the probability maps
            (only for sources with a frame of reference: CT, MR). An empty report writes an SR
            saying so and no SC/SEG/PMAP.
        threshold: the heatmap threshold of the SR's regions (the connected component of
            ``heatmap >= threshold`` containing the peak); a class whose map is below it at its
            peak is an image-level finding in the SR.
        report: ``"selected"`` (the prediction's selected classes) or ``"all"`` (every class).
        model_name: the model, recorded as the algorithm's model in every object.

    Returns:
        The objects: the SR first, then the SCs in report order, then the SEG, then the PMAP.

    Raises:
        ValueError: a source without UIDs or pixel data (naming what is missing), a prediction of
            another size, ``"pmap"`` for a source without a frame of reference, or bad options.
    """
    from pylon.clinical import require

    require("highdicom")  # the [clinical] extra, named in one line where it is missing
    from pylon.clinical import overlays, sr
    from pylon.data.dicom import read_dicom_image

    kinds = _check(kinds, threshold, report)
    header = prepare_source(source)
    if "pmap" in kinds:
        overlays.check_pmap_source(header)
    size = (int(header.Rows), int(header.Columns))
    if tuple(prediction.original_size) != size:
        raise ValueError(
            f"{prediction.image_id}: prediction of size {tuple(prediction.original_size)} "
            f"(height, width) but the source is {size[0]} x {size[1]}"
        )
    classes = _reported(prediction, report)
    heatmaps = {c: prediction.heatmap(c) for c in classes}
    objects: list[DicomObject] = []
    if "sr" in kinds:
        findings = [
            sr.Finding(
                class_name=c,
                probability=float(prediction.probabilities[c]),
                peak=tuple(prediction.peaks[c]),
                box=sr.finding_box(heatmaps[c], prediction.peaks[c], threshold),
            )
            for c in classes
        ]
        report_sr = sr.build_sr(header, findings, model_name=model_name, threshold=threshold)
        objects.append(DicomObject("sr", None, report_sr))
    if "sc" in kinds and classes:
        image = read_dicom_image(source).to_uint8()
        series = pydicom.uid.generate_uid()
        for number, c in enumerate(classes, start=1):
            rgb = overlays.overlay_pixels(image, heatmaps[c], prediction.peaks[c])
            sc = overlays.build_sc(
                header,
                rgb,
                c,
                model_name=model_name,
                series_instance_uid=series,
                instance_number=number,
            )
            objects.append(DicomObject("sc", c, sc))
    if "seg" in kinds and classes:
        seg = overlays.build_seg(header, heatmaps, model_name=model_name)
        objects.append(DicomObject("seg", None, seg))
    if "pmap" in kinds and classes:
        pmap = overlays.build_pmap(header, heatmaps, model_name=model_name)
        objects.append(DicomObject("pmap", None, pmap))
    return objects


def object_file_name(obj: DicomObject) -> str:
    """``<kind>.dcm``, or ``sc_<class>.dcm`` with the class name's characters other than letters,
    digits, ``-`` and ``.`` replaced by ``_`` (``Nodule/Mass`` -> ``sc_Nodule_Mass.dcm``)."""
    if obj.class_name is None:
        return f"{obj.kind}.dcm"
    return f"{obj.kind}_{re.sub(r'[^A-Za-z0-9.-]+', '_', obj.class_name)}.dcm"


def write_objects(
    objects: Sequence[DicomObject], folder: str | os.PathLike, stem: str
) -> list[dict]:
    """Save ``objects`` as ``folder/<stem>/<kind>[_<class>].dcm``, each atomically (a temporary
    file renamed over the target; normal permissions), in the DICOM file format.

    Args:
        objects: from :func:`findings_objects` (and a ``"source"`` object for a new study).
        folder: the output folder.
        stem: the image's sub-folder (e.g. its image id).

    Returns:
        One record per file: ``{"kind", "class", "path", "sop_class_uid", "sop_instance_uid",
        "series_instance_uid"}`` (``path`` as a string).

    Raises:
        ValueError: two objects that would write the same file.
    """
    target = Path(folder) / stem
    names = [object_file_name(o) for o in objects]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"{target}: several objects would be written as {', '.join(clashes)}")
    records = []
    for obj, name in zip(objects, names, strict=True):
        path = target / name
        with atomic_path(path) as tmp:
            obj.dataset.save_as(tmp, enforce_file_format=True)
        records.append(
            {
                "kind": obj.kind,
                "class": obj.class_name,
                "path": str(path),
                "sop_class_uid": obj.sop_class_uid,
                "sop_instance_uid": obj.sop_instance_uid,
                "series_instance_uid": obj.series_instance_uid,
            }
        )
    return records
