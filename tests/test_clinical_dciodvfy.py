"""Independent validation: dicom3tools' ``dciodvfy`` reports no Error on any object pylon writes
(SR, SC, SEG; and a CT's Parametric Map) from DX, CR and CT sources, from a source lacking its
type 2 attributes, and from a new study made for a PNG (with that generated source itself).
Never skipped: ``make test`` installs dicom3tools."""

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from test_clinical_sr import HEIGHT, WIDTH, bare_dx_source, ct_source, dx_source, known_prediction

from pylon.clinical.objects import DicomObject, findings_objects, new_study_source, write_objects

DCIODVFY = "/usr/bin/dciodvfy"
ALL_KINDS = ("sr", "sc", "seg")


def dciodvfy_errors(path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path`` (it prints to stderr, exits 1 on error)."""
    if not shutil.which(DCIODVFY):
        pytest.fail(f"{DCIODVFY} is missing: run `make test` (it installs dicom3tools)")
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def _check_all(records) -> None:
    problems = {r["path"]: dciodvfy_errors(r["path"]) for r in records}
    assert {p: e for p, e in problems.items() if e} == {}


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_objects_from_radiographs_validate(tmp_path, modality):
    source = dx_source(tmp_path, modality)
    assert dciodvfy_errors(source.filename) == []  # the fixture itself is complete
    objects = findings_objects(source, known_prediction(), kinds=ALL_KINDS, report="all")
    records = write_objects(objects, tmp_path / "out", modality)
    assert sorted(r["kind"] for r in records) == ["sc", "sc", "sc", "seg", "sr"]
    _check_all(records)


def test_objects_from_a_ct_validate(tmp_path):
    kinds = (*ALL_KINDS, "pmap")  # a CT has a frame of reference: the Parametric Map too
    objects = findings_objects(ct_source(), known_prediction(128, 128), kinds=kinds)
    records = write_objects(objects, tmp_path / "out", "ct")
    assert sorted(r["kind"] for r in records) == ["pmap", "sc", "sc", "seg", "sr"]
    _check_all(records)


@pytest.mark.parametrize(
    "name",
    [
        "JPEG2000.dcm",  # NM, JPEG 2000, a frame of reference without an image plane, WHOLE BODY
        "MR_small_bigendian.dcm",  # explicit VR big endian
        "MR_small_RLE.dcm",  # RLE lossless
    ],
)
def test_objects_from_pydicoms_files_validate(tmp_path, name):
    source = pydicom.dcmread(get_testdata_file(name, download=False))
    prediction = known_prediction(int(source.Rows), int(source.Columns))
    objects = findings_objects(source, prediction, kinds=ALL_KINDS)
    _check_all(write_objects(objects, tmp_path / "out", name))


def test_objects_from_a_source_without_type2_attributes_validate(tmp_path):
    source = bare_dx_source(tmp_path)
    objects = findings_objects(source, known_prediction(), kinds=ALL_KINDS)
    _check_all(write_objects(objects, tmp_path / "out", "bare"))


def test_new_study_objects_validate(tmp_path):
    pixels = np.tile(np.arange(WIDTH, dtype=np.uint8)[None], (HEIGHT, 1))
    source = new_study_source(pixels, "chest.png")
    objects = [DicomObject("source", None, source)]
    objects += findings_objects(source, known_prediction(), kinds=ALL_KINDS)
    records = write_objects(objects, tmp_path / "out", "png")
    assert records[0]["kind"] == "source"
    _check_all(records)


def test_no_finding_sr_validates(tmp_path):
    prediction = known_prediction()
    prediction.selected = []
    objects = findings_objects(dx_source(tmp_path), prediction, kinds=ALL_KINDS)
    _check_all(write_objects(objects, tmp_path / "out", "none"))


def test_dciodvfy_flags_a_broken_object(tmp_path):
    """The check can fail: an SR whose required Study Instance UID is removed is flagged."""
    (sr,) = findings_objects(dx_source(tmp_path), known_prediction(), kinds=("sr",))
    del sr.dataset.StudyInstanceUID
    (record,) = write_objects([sr], tmp_path / "out", "broken")
    assert dciodvfy_errors(record["path"])
