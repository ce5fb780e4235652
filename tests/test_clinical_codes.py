"""Every finding class of the NIH, VinDr and synthetic datasets has a code, and every SNOMED CT /
DICOM code pylon uses is one that pydicom's code dictionary ships with that meaning."""

import pytest
from pydicom.sr._concepts_dict import concepts

from pylon.clinical import codes
from pylon.data.nih import NIH14_CLASSES
from pylon.data.synthetic import DEFAULT_FINDINGS
from pylon.data.vindr import VINDR_CLASSES

ALL_CLASSES = [*NIH14_CLASSES, *VINDR_CLASSES, *(f.name for f in DEFAULT_FINDINGS)]


def _dictionary(scheme: str) -> dict[str, set[str]]:
    """pydicom's codes of ``scheme``: value -> the meanings it ships for it (lower case)."""
    out: dict[str, set[str]] = {}
    for entries in concepts[scheme].values():
        for value, (meaning, _cids) in entries.items():
            out.setdefault(value, set()).add(meaning.lower())
    return out


@pytest.mark.parametrize("class_name", ALL_CLASSES)
def test_every_dataset_class_has_a_listed_code(class_name):
    assert codes.normalise(class_name) in codes.FINDING_CODES, class_name
    code = codes.finding_code(class_name)
    assert code.scheme_designator in ("SCT", "DCM", codes.PRIVATE_SCHEME)
    assert 0 < len(code.value) <= 16 and 0 < len(code.meaning) <= 64


def test_standard_codes_match_pydicoms_dictionary():
    used = {"SCT": 0, "DCM": 0}
    for key, (scheme, value, meaning) in codes.FINDING_CODES.items():
        if scheme == codes.PRIVATE_SCHEME:
            continue
        shipped = _dictionary(scheme)
        assert value in shipped, f"{key}: {scheme} {value} is not in pydicom's dictionary"
        assert meaning.lower() in shipped[value], f"{key}: {meaning!r} not in {shipped[value]}"
        used[scheme] += 1
    assert used["SCT"] >= 8 and used["DCM"] >= 3  # the standard codes are the rule


def test_known_mappings():
    assert (
        codes.finding_code("Effusion").scheme_designator,
        codes.finding_code("Effusion").value,
    ) == ("SCT", "60046008")
    assert codes.finding_code("Pleural_Thickening") == codes.finding_code("Pleural thickening")
    assert codes.finding_code("nodule") == codes.finding_code("Nodule")
    assert codes.finding_code("Nodule/Mass").scheme_designator == codes.PRIVATE_SCHEME


def test_private_codes_are_distinct():
    private = [v for s, v, _ in codes.FINDING_CODES.values() if s == codes.PRIVATE_SCHEME]
    assert len(private) == len(set(private))


def test_unknown_class_gets_a_stable_private_code():
    first, again = codes.finding_code("Fractured rib"), codes.finding_code("fractured_rib")
    assert codes.is_private(first) and first.meaning == "Fractured rib"
    assert first.value == again.value and len(first.value) <= 16
    assert first.value != codes.finding_code("Something else").value
    assert first.value not in {v for _, v, _ in codes.FINDING_CODES.values()}


def test_private_scheme_declaration():
    (item,) = codes.coding_schemes()
    assert item.CodingSchemeDesignator == codes.PRIVATE_SCHEME
    assert codes.PRIVATE_SCHEME.startswith("99")
