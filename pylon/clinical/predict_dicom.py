"""Predictions as DICOM objects, image by image: what ``pylon predict --dicom-out`` does, in Python.

:class:`FindingsWriter` reads each prediction's source file (the DICOM's dataset, or for a PNG or
JPEG with ``new_study`` a Secondary Capture of the image in a new study with generated UIDs),
builds the objects (:func:`pylon.clinical.objects.findings_objects`: the TID 1500 SR, heatmap
Secondary Captures, fractional Segmentations) and stores them through a sink
(:mod:`pylon.clinical.sink`), returning the records that ``predictions.jsonl`` keeps::

    writer = FindingsWriter("dicom/", threshold=predictor.threshold)
    for result in predictor.iter_predict(["scans/"], skip_errors=True):
        if isinstance(result, Prediction):
            records = writer.write(result)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# what --dicom-objects offers (pylon.clinical.objects.KINDS, without importing the writers)
KINDS = ("sr", "sc", "seg", "pmap")
DEFAULT_KINDS = ("sr", "sc")
# --report: the classes above the threshold (or chosen), or every class
REPORTS = ("selected", "all")


class NoDicomIdentity(ValueError):
    """An image that is not a DICOM, written without ``new_study``."""


def no_identity_message(path: str | os.PathLike) -> str:
    """The one line for an input without DICOM identity."""
    return (
        f"{path} has no DICOM identity (study/patient UIDs): use --new-study to write a new "
        "study with generated UIDs, or give the DICOM"
    )


def parse_kinds(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"sr,sc"`` (or a sequence) as a tuple of :data:`KINDS`, in the order given, repeats
    dropped.

    Raises:
        ValueError: an empty list or an unknown kind, naming ``--dicom-objects`` and the choices.
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    kinds = tuple(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        given = ", ".join(unknown) if unknown else "nothing"
        raise ValueError(f"--dicom-objects {given!s}: expected some of {', '.join(KINDS)}")
    return kinds


def check_report(report: str) -> str:
    """``report`` if it is one of :data:`REPORTS`, else a ``ValueError`` naming ``--report``."""
    if report not in REPORTS:
        raise ValueError(f"--report {report!r}: expected one of {', '.join(REPORTS)}")
    return report


def model_name(predictor) -> str:
    """The algorithm name the objects record for a :class:`pylon.inference.Predictor`'s model:
    its architecture and encoder (``"pylon-resnet18"``), or ``"pylon"`` where the weights do not
    say."""
    config = predictor.data.model or {}
    name = str(config.get("name") or "pylon")
    encoder = config.get("encoder")
    return f"{name}-{encoder}" if encoder and encoder != "none" else name


class FindingsWriter:
    """Writes the DICOM objects of predictions into a sink.

    Args:
        sink: a :class:`pylon.clinical.sink.DicomSink`, or a folder (``--dicom-out``'s text).
        kinds: which objects (:data:`KINDS`; ``"sr"``: the TID 1500 Comprehensive SR, ``"sc"``: a
            heatmap Secondary Capture per reported finding, ``"seg"``: the probability maps as a
            fractional Segmentation, ``"pmap"``: as a Parametric Map, for sources with a frame
            of reference only).
        threshold: findings at or above it get a region in the SR (the predictor's threshold).
        report: ``"selected"`` (the prediction's selected classes) or ``"all"`` (every class;
            those without a region as image-level measurement groups).
        new_study: an image that is not a DICOM gets a new study with generated UIDs: a
            Secondary Capture of the image is written first and the findings reference it;
            without it such an image raises :class:`NoDicomIdentity`.
        png16: how a 16-bit PNG is read for that Secondary Capture (as the predictor read it).
        model_name: the algorithm's name in the objects (:func:`model_name`, e.g.
            ``"pylon-resnet18"``).

    Raises:
        ImportError: the ``[clinical]`` extra is missing (one line naming it).
        ValueError: an unknown kind or report, or an unusable folder.
    """

    def __init__(
        self,
        sink: Any,
        *,
        kinds: str | Sequence[str] = DEFAULT_KINDS,
        threshold: float = 0.5,
        report: str = "selected",
        new_study: bool = False,
        png16: str = "bits",
        model_name: str = "pylon",
    ):
        from pylon.clinical import require
        from pylon.clinical.sink import open_sink

        require("highdicom")
        self.kinds = parse_kinds(kinds)
        self.report = check_report(report)
        self.threshold = float(threshold)
        self.new_study = bool(new_study)
        self.png16 = png16
        self.model_name = model_name
        self.sink = open_sink(os.fspath(sink)) if isinstance(sink, str | os.PathLike) else sink

    @property
    def settings(self) -> dict[str, Any]:
        """What the objects depend on beyond the prediction (for ``predict.json``)."""
        return {
            "dicom_out": self.sink.setting,
            "dicom_objects": list(self.kinds),
            "new_study": self.new_study,
            "report": self.report,
        }

    def write(
        self, prediction, *, stem: str | None = None, source: str | os.PathLike | None = None
    ) -> list[dict[str, Any]]:
        """Build and store the objects of one prediction.

        Args:
            prediction: a :class:`pylon.inference.Prediction` of a file.
            stem: where its objects go in the sink (default its ``image_id``); the same stem
                gives the same places, so writing again replaces them.
            source: the file it was predicted from (default ``prediction.path``).

        Returns:
            One record per object stored (``kind``, ``class``, ``path``, ``sop_class_uid``,
            ``sop_instance_uid``, ``series_instance_uid``).

        Raises:
            NoDicomIdentity: the file is not a DICOM and ``new_study`` is off.
            ValueError: naming the file, for a source the objects cannot be made from.
        """
        from pylon.inference.inputs import is_dicom

        path = source if source is not None else prediction.path
        if path is None:
            raise ValueError(
                f"{prediction.image_id}: no source file to take the DICOM identity from "
                "(predict a file, or pass source=)"
            )
        path = Path(path)
        if not is_dicom(path) and not self.new_study:
            raise NoDicomIdentity(no_identity_message(path))
        try:
            objects = self._objects(prediction, path)
        except Exception as err:  # noqa: BLE001  pydicom/highdicom raise many types on odd sources
            raise ValueError(
                f"cannot write DICOM objects for {path}: {type(err).__name__}: {err}"
            ) from err
        return self.sink.write(objects, stem if stem is not None else prediction.image_id)

    def _objects(self, prediction, path: Path) -> list[Any]:
        import pydicom

        from pylon.clinical.objects import findings_objects
        from pylon.inference.inputs import is_dicom

        extra = []
        if is_dicom(path):
            source = pydicom.dcmread(path)
        else:
            source, extra = self._new_study(prediction, path)
        objects = findings_objects(
            source,
            prediction,
            kinds=self.kinds,
            threshold=self.threshold,
            report=self.report,
            model_name=self.model_name,
        )
        return [*extra, *objects]

    def _new_study(self, prediction, path: Path):
        from pylon.clinical.objects import DicomObject, new_study_source
        from pylon.inference.inputs import load_input

        image = load_input(path, 3, prediction.image_id, max_pixels_limit=0, png16=self.png16)
        pixels = image.pixels
        if (pixels == pixels[:, :, :1]).all():  # a grey image, replicated by the reader
            pixels = pixels[:, :, 0]
        source = new_study_source(pixels, prediction.image_id)
        return source, [DicomObject("source", None, source)]
