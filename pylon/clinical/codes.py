"""The coded concept of each finding pylon reports in DICOM (SR finding types, SEG segments).

Every class name of the NIH ChestX-ray14, VinDr-CXR and synthetic datasets maps to a code:
SNOMED CT (``SCT``) or DICOM (``DCM``) where pydicom's code dictionary
(:data:`pydicom.sr.codedict.codes`) ships one that means the finding, else a code of pylon's
private coding scheme :data:`PRIVATE_SCHEME` (declared in each object's Coding Scheme
Identification Sequence by :func:`coding_schemes`). Only codes found in pydicom's dictionary are
used as SCT/DCM codes (tests/test_clinical_codes.py checks each against it); findings it lacks
(e.g. atelectasis in general, consolidation, pneumonia, emphysema, hernia, pleural thickening)
get private codes rather than unchecked SNOMED CT numbers. Class names outside these datasets
(a custom CSV dataset) get a private code made from the name (:func:`finding_code`).

Names are matched case-insensitively with ``_`` and ``/`` read as spaces, so NIH's
``Pleural_Thickening`` and VinDr's ``Pleural thickening`` share one code.
"""

from __future__ import annotations

import hashlib

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

# pylon's private coding scheme (PS3.3 8.1: a designator beginning with "99" is private)
PRIVATE_SCHEME = "99PYLON"
PRIVATE_SCHEME_NAME = "pylon findings"

# normalised class name -> (scheme, code value, code meaning); SCT/DCM entries are checked
# against pydicom's dictionary by the tests, PRIVATE_SCHEME entries are pylon's own
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    # NIH ChestX-ray14
    "atelectasis": (PRIVATE_SCHEME, "ATELECTASIS", "Atelectasis"),
    "cardiomegaly": ("SCT", "287272002", "Cardiomegaly"),
    "effusion": ("SCT", "60046008", "Pleural effusion"),  # NIH's "Effusion" is pleural
    "infiltration": ("DCM", "112121", "Infiltrate"),
    "mass": ("SCT", "4147007", "Mass"),
    "nodule": ("SCT", "27925004", "Nodule"),
    "pneumonia": (PRIVATE_SCHEME, "PNEUMONIA", "Pneumonia"),
    "pneumothorax": ("SCT", "36118008", "Pneumothorax"),
    "consolidation": (PRIVATE_SCHEME, "CONSOLIDATION", "Consolidation"),
    "edema": ("SCT", "19242006", "Pulmonary edema"),  # a chest radiograph's edema
    "emphysema": (PRIVATE_SCHEME, "EMPHYSEMA", "Emphysema"),
    "fibrosis": ("SCT", "112674009", "Fibrosis"),
    "pleural thickening": (PRIVATE_SCHEME, "PLEURALTHICKEN", "Pleural thickening"),
    "hernia": (PRIVATE_SCHEME, "HERNIA", "Hernia"),
    # VinDr-CXR (those not above)
    "aortic enlargement": (PRIVATE_SCHEME, "AORTICENLARGE", "Aortic enlargement"),
    "calcification": ("DCM", "112063", "Abnormal calcifications"),
    "ild": ("DCM", "112004", "Abnormal interstitial pattern"),  # interstitial lung disease
    "lung opacity": ("DCM", "112001", "Opacity"),
    "nodule mass": (PRIVATE_SCHEME, "NODULEMASS", "Nodule or mass"),
    "other lesion": ("SCT", "52988006", "Lesion"),
    "pleural effusion": ("SCT", "60046008", "Pleural effusion"),
    "pulmonary fibrosis": ("SCT", "112674009", "Fibrosis"),
    "no finding": ("DCM", "111286", "No abnormality"),
    # synthetic (nodule, mass, consolidation above)
    "cavity": (PRIVATE_SCHEME, "CAVITY", "Cavity"),
}


def normalise(class_name: str) -> str:
    """``class_name`` lower-cased, ``_`` and ``/`` read as spaces, spaces collapsed."""
    return " ".join(class_name.replace("_", " ").replace("/", " ").lower().split())


def finding_code(class_name: str) -> CodedConcept:
    """The coded concept of a finding class.

    Args:
        class_name: a class name as the model reports it (e.g. ``"Pleural_Thickening"``).

    Returns:
        The :data:`FINDING_CODES` entry; for a name not in it, a :data:`PRIVATE_SCHEME` code
        ``X`` + 12 hex digits of the name's SHA-1 (stable across runs) meaning the name itself.
    """
    key = normalise(class_name)
    if key in FINDING_CODES:
        scheme, value, meaning = FINDING_CODES[key]
    else:
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12].upper()
        scheme, value, meaning = PRIVATE_SCHEME, f"X{digest}", class_name.strip()[:64]
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def is_private(code: CodedConcept) -> bool:
    """Whether ``code`` belongs to pylon's private coding scheme."""
    return code.scheme_designator == PRIVATE_SCHEME


def coding_schemes() -> list[CodingSchemeIdentificationItem]:
    """The Coding Scheme Identification items that declare :data:`PRIVATE_SCHEME`."""
    return [
        CodingSchemeIdentificationItem(
            designator=PRIVATE_SCHEME,
            name=PRIVATE_SCHEME_NAME,
            responsible_organization="pylon",
        )
    ]


# Concepts the writers use besides the findings (all from pydicom's dictionary).
PROBABILITY = codes.DCM.Probability
NO_UNITS = codes.UCUM.NoUnits
IMAGING_PROCEDURE = codes.SCT.ImagingProcedure
ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure
DEVICE = codes.DCM.Device
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence
CAD_SUMMARY = codes.DCM.CADProcessingAndFindingsSummary
NO_FINDINGS = codes.DCM.AllAlgorithmsSucceededWithoutFindings
