"""pylon's findings as a Comprehensive SR with a TID 1500 Measurement Report (highdicom).

Per reported class with a region, two Planar ROI groups (TID 1410 holds one Image Region per
group), both with the finding type (a code of :mod:`pylon.clinical.codes`) and the probability
(DCM Probability, unit "1"): one whose region is the box of the heatmap thresholded at
``threshold`` (:func:`finding_box`) as a closed POLYLINE, and one whose region is the heatmap's
peak as a POINT (tracking identifiers ``"<class> region"`` and ``"<class> peak"``). A reported
class without a region gets an image-level group (TID 1501) with its probability; an SR without
any reported class holds one image-level group saying "All algorithms succeeded; without
findings". Coordinates are the source image's pixels as SCOORD wants them: (column, row) with
(0, 0) the top-left corner of the first pixel, so pixel ``(x, y)``'s centre is
``(x + 0.5, y + 0.5)`` and a box of pixels ``x0..x1, y0..y1`` spans ``x0..x1 + 1, y0..y1 + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import pylon
from pylon.clinical import codes


@dataclass(frozen=True)
class Finding:
    """One reported class: its probability, its peak ``(x, y)`` (pixel indices of the source)
    and the box ``(x0, y0, x1, y1)`` of its region (inclusive pixel indices; ``None``: no
    region, reported at image level)."""

    class_name: str
    probability: float
    peak: tuple[int, int]
    box: tuple[int, int, int, int] | None


def finding_box(
    heatmap: np.ndarray, peak: tuple[int, int], threshold: float
) -> tuple[int, int, int, int] | None:
    """The region of a finding: the bounding box of the connected component (8-connected) of
    ``heatmap >= threshold`` that contains the peak.

    Args:
        heatmap: ``(H, W)`` values in [0, 1] at the source's size.
        peak: ``(x, y)`` pixel indices.
        threshold: the map threshold.

    Returns:
        ``(x0, y0, x1, y1)`` inclusive pixel indices, or ``None`` when the map is below the
        threshold at the peak (no region).
    """
    x, y = peak
    mask = np.asarray(heatmap) >= threshold
    if not mask[y, x]:
        return None
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    rows, cols = np.nonzero(labels == labels[y, x])
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def box_polyline(box: tuple[int, int, int, int]) -> np.ndarray:
    """The closed POLYLINE (5 points, first = last) around the pixels of ``box``, in SCOORD
    (column, row) coordinates: the outer edges of the box's pixels."""
    x0, y0, x1, y1 = box
    left, top, right, bottom = float(x0), float(y0), float(x1 + 1), float(y1 + 1)
    return np.array(
        [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]],
        dtype=np.float32,
    )


def peak_point(peak: tuple[int, int]) -> np.ndarray:
    """The SCOORD POINT of the peak pixel's centre, ``(x + 0.5, y + 0.5)``."""
    return np.array([[peak[0] + 0.5, peak[1] + 0.5]], dtype=np.float32)


def algorithm(model_name: str, threshold: float) -> hd.sr.AlgorithmIdentification:
    """TID 4019 algorithm identification: pylon, its version, the model and the threshold."""
    return hd.sr.AlgorithmIdentification(
        name="pylon",
        version=pylon.__version__,
        parameters=[f"model={model_name}", f"threshold={threshold:g}"],
    )


def observation_context(model_name: str) -> hd.sr.ObservationContext:
    """A device observer named pylon, of model ``model_name``, with a device UID that is the same
    for every report of that model (pylon's version is in each group's algorithm
    identification and the SR's Software Versions)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["pylon", model_name]),
        name="pylon",
        manufacturer_name="pylon",
        model_name=model_name[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DEVICE, observer_identifying_attributes=device
        )
    )


def _groups(finding: Finding, source: Dataset, algorithm_id: hd.sr.AlgorithmIdentification) -> list:
    """The SR groups of one finding: two Planar ROI groups (its region's POLYLINE, its peak's
    POINT; TID 1410 holds one region per group) or, without a region, one image-level group."""
    image = hd.sr.SourceImageForRegion.from_source_image(source)
    finding_type = codes.finding_code(finding.class_name)

    def probability() -> hd.sr.Measurement:
        return hd.sr.Measurement(
            name=codes.PROBABILITY,
            value=float(finding.probability),
            unit=codes.NO_UNITS,
            algorithm_id=algorithm_id,
        )

    def tracking(what: str) -> hd.sr.TrackingIdentifier:
        label = f"{finding.class_name} {what}"[:64]
        return hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=label)

    if finding.box is None:
        return [
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking("image"),
                finding_type=finding_type,
                algorithm_id=algorithm_id,
                measurements=[probability()],
            )
        ]
    regions = (
        ("region", hd.sr.GraphicTypeValues.POLYLINE, box_polyline(finding.box)),
        ("peak", hd.sr.GraphicTypeValues.POINT, peak_point(finding.peak)),
    )
    return [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking(what),
            referenced_region=hd.sr.ImageRegion(
                graphic_type=graphic_type, graphic_data=data, source_image=image
            ),
            finding_type=finding_type,
            algorithm_id=algorithm_id,
            measurements=[probability()],
        )
        for what, graphic_type, data in regions
    ]


def build_sr(
    source: Dataset,
    findings: list[Finding],
    *,
    model_name: str,
    threshold: float,
    series_number: int = 9901,
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR (TID 1500 Measurement Report) of ``findings`` on ``source``.

    Args:
        source: the prepared source header (:func:`pylon.clinical.sources.prepare_source`).
        findings: the reported classes, in report order.
        model_name: the model, recorded in the observer context and algorithm identification.
        threshold: the map threshold the regions were made with (recorded as a parameter).
        series_number: the SR's (new) series number.

    Returns:
        The SR dataset: same study as ``source``, a new series, one group per finding.
    """
    algorithm_id = algorithm(model_name, threshold)
    groups = [g for f in findings for g in _groups(f, source, algorithm_id)]
    if not groups:
        # nothing reported: the report says the algorithm ran and found nothing to report
        groups = [
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(), identifier="no finding reported"
                ),
                algorithm_id=algorithm_id,
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(codes.CAD_SUMMARY, codes.NO_FINDINGS)
                ],
            )
        ]
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(model_name),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    private = any(codes.is_private(codes.finding_code(f.class_name)) for f in findings)
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="pylon",
        coding_schemes=codes.coding_schemes() if private else None,
        series_description=f"pylon findings ({model_name})"[:64],
        manufacturer_model_name=model_name[:64],
        software_versions=pylon.__version__,
    )
    return sr
