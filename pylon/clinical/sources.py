"""The source image the DICOM writers derive from: checked, and completed on a copy.

:func:`prepare_source` checks that a DICOM has what every derived object needs (its UIDs and an
image) and returns a header copy (no pixel data; the caller's dataset is never modified) with the
type 2 attributes the writers read filled empty where the source lacks them. For a PNG/JPEG
input, :func:`new_study_source` makes a Secondary Capture with a new study, series and instance,
so the SR, SC and SEG can reference it (write and store it with them).
"""

from __future__ import annotations

import copy
import datetime

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid

import pylon

# what every derived object copies or references: a source lacking one is refused
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# type 2 attributes highdicom reads from the source (patient, study, general image modules):
# present but possibly empty in a valid object, often missing from exported or anonymised files
TYPE2_FILLED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_PIXEL_TAGS = {Tag("PixelData"), Tag("FloatPixelData"), Tag("DoubleFloatPixelData")}
# patient direction of a positive step along x, y, z of the patient coordinate system (LPS)
_DIRECTIONS = (("L", "R"), ("P", "A"), ("H", "F"))
# a radiograph without PatientOrientation: a chest radiograph as conventionally displayed
# (columns towards the patient's left, rows towards the feet)
DEFAULT_ORIENTATION = ("L", "F")
DEFAULT_BODY_PART = "CHEST"
# Body Part Examined terms (PS3.16 Annex L) of unpaired structures: a derived image of one needs
# no Laterality; for any other part without a known laterality, Laterality is sent empty
UNPAIRED_BODY_PARTS = frozenset(
    "CHEST THORAX ABDOMEN PELVIS ABDOMENPELVIS CHESTABDOMEN CHESTABDPELVIS HEAD NECK HEADNECK "
    "BRAIN SKULL SPINE CSPINE TSPINE LSPINE SSPINE COCCYX SACRUM STERNUM HEART MEDIASTINUM AORTA "
    "TRACHEA ESOPHAGUS LIVER STOMACH SPLEEN PANCREAS BLADDER UTERUS PROSTATE WHOLEBODY".split()
)


def describe(dataset: Dataset) -> str:
    """A name for messages: the file name, else the SOP Instance UID, else ``"DICOM source"``."""
    return str(
        getattr(dataset, "filename", None) or dataset.get("SOPInstanceUID") or "DICOM source"
    )


def check_source(dataset: Dataset) -> None:
    """Refuse a source the writers cannot derive from, naming what is missing.

    Raises:
        ValueError: a missing UID (:data:`REQUIRED_UIDS`), Rows/Columns, or pixel data.
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"expected a pydicom Dataset as the source, got {type(dataset).__name__}")
    missing = [k for k in REQUIRED_UIDS if not str(dataset.get(k) or "").strip()]
    missing += [k for k in ("Rows", "Columns") if not dataset.get(k)]
    if not any(tag in dataset for tag in _PIXEL_TAGS):
        missing.append("PixelData")
    if missing:
        raise ValueError(
            f"{describe(dataset)}: the source lacks {', '.join(missing)}; DICOM output needs an "
            "image with its study, series and SOP instance UIDs (for a PNG/JPEG, make a new "
            "study: new_study_source)"
        )
    if int(dataset.get("NumberOfFrames") or 1) != 1:
        raise ValueError(
            f"{describe(dataset)}: {dataset.NumberOfFrames} frames; DICOM output needs a "
            "single-frame image"
        )


def prepare_source(dataset: Dataset) -> Dataset:
    """A checked header copy of ``dataset`` that the writers can use.

    The copy has every element but the pixel data (deep-copied, so the caller's dataset is never
    modified), the file meta information, the type 2 attributes of :data:`TYPE2_FILLED` empty
    where missing, and ``PatientOrientation`` / ``BodyPartExamined`` as :func:`orientation` and
    :data:`DEFAULT_BODY_PART` give them where missing (Secondary Capture and Segmentation need
    them).

    Args:
        dataset: the source DICOM, read with its pixel data.

    Returns:
        The completed header copy.

    Raises:
        ValueError: see :func:`check_source`.
    """
    check_source(dataset)
    header = Dataset()
    for element in dataset:
        if element.tag not in _PIXEL_TAGS:
            header.add(copy.deepcopy(element))
    if hasattr(dataset, "file_meta"):
        header.file_meta = pydicom.dataset.FileMetaDataset(copy.deepcopy(dataset.file_meta))
    header.set_original_encoding(*dataset.original_encoding, dataset.original_character_set)
    if getattr(dataset, "filename", None):
        header.filename = dataset.filename
    for keyword in TYPE2_FILLED:
        if dataset.get(keyword) is None:
            setattr(header, keyword, "")
    if not str(dataset.get("PatientOrientation") or "").strip():
        header.PatientOrientation = list(orientation(dataset))
    if not str(dataset.get("BodyPartExamined") or "").strip():
        header.BodyPartExamined = DEFAULT_BODY_PART
    plane = ("ImageOrientationPatient", "ImagePositionPatient")
    if "FrameOfReferenceUID" in header and not all(header.get(k) for k in plane):
        # a frame of reference without an image plane locates nothing (e.g. an NM secondary
        # capture); derived objects would need a plane for it: treat the image as a projection
        del header.FrameOfReferenceUID
    return header


def series_laterality(source: Dataset) -> str | None:
    """The Laterality (General Series, type 2C) a derived image of ``source`` carries: the
    source's, else ``None`` (absent) for an unpaired body part (:data:`UNPAIRED_BODY_PARTS`),
    else ``""`` (unknown)."""
    value = str(source.get("Laterality") or "").strip()
    if value:
        return value
    part = str(source.get("BodyPartExamined") or DEFAULT_BODY_PART).strip().upper()
    return None if part in UNPAIRED_BODY_PARTS else ""


def orientation(dataset: Dataset) -> tuple[str, str]:
    """The patient directions of the image's rows and columns (Patient Orientation, C.7.6.1.1.1).

    Args:
        dataset: the source.

    Returns:
        Its ``PatientOrientation`` when present; else the dominant direction of each of its
        ``ImageOrientationPatient`` cosines (a CT/MR slice); else :data:`DEFAULT_ORIENTATION`.
    """
    value = dataset.get("PatientOrientation")
    if value and len(value) == 2 and all(str(v).strip() for v in value):
        return str(value[0]), str(value[1])
    cosines = dataset.get("ImageOrientationPatient")
    if cosines and len(cosines) == 6:
        letters = []
        for vector in (cosines[:3], cosines[3:]):
            axis = int(np.argmax(np.abs(np.asarray(vector, dtype=float))))
            positive, negative = _DIRECTIONS[axis]
            letters.append(positive if float(vector[axis]) > 0 else negative)
        return letters[0], letters[1]
    return DEFAULT_ORIENTATION


def new_study_source(
    pixels: np.ndarray,
    image_id: str,
    *,
    patient_id: str | None = None,
    patient_name: str = "",
    body_part: str = DEFAULT_BODY_PART,
) -> Dataset:
    """A Secondary Capture of a PNG/JPEG image in a new study, for inputs without DICOM identity.

    Study, series and SOP instance UIDs are generated (new each call); the SR, SC and SEG then
    reference this object: write and store it with them (``write_objects`` kind ``"source"``).

    Args:
        pixels: the image at its original size: uint8 ``(H, W)`` grey (written MONOCHROME2) or
            ``(H, W, 3)`` RGB (written RGB).
        image_id: the input's id; the Patient ID (unless ``patient_id``) and Series Description.
        patient_id: Patient ID (default: ``image_id``, at most 64 characters).
        patient_name: Patient's Name (default empty).
        body_part: Body Part Examined.

    Returns:
        The Secondary Capture dataset (with its pixel data and file meta information).

    Raises:
        ValueError: pixels that are not uint8 ``(H, W)`` or ``(H, W, 3)``.
    """
    from pylon.clinical import require

    SCImage = require("highdicom.sc").SCImage
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    ):
        raise ValueError(
            f"{image_id}: expected uint8 (H, W) grey or (H, W, 3) RGB pixels, got "
            f"{array.dtype} {array.shape}"
        )
    now = datetime.datetime.now()
    identifier = (patient_id if patient_id is not None else image_id).replace("\\", "/")[:64]
    photometric = "MONOCHROME2" if array.ndim == 2 else "RGB"
    sc = SCImage(
        pixel_array=array,
        photometric_interpretation=photometric,
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=1,
        instance_number=1,
        manufacturer="pylon",
        patient_id=identifier,
        patient_name=patient_name,
        patient_birth_date="",
        patient_sex="",
        accession_number="",
        study_id="",
        study_date=now.date(),
        study_time=now.time(),
        referring_physician_name="",
        patient_orientation=DEFAULT_ORIENTATION,
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    sc.BodyPartExamined = body_part
    sc.SeriesDescription = f"pylon input {image_id}"[:64]
    sc.SoftwareVersions = pylon.__version__
    sc.BurnedInAnnotation = "NO"
    return sc
