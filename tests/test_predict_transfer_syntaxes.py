"""Every transfer syntax among pydicom's shipped test files goes through ``pylon predict
--dicom-out``: its DICOM objects are written, or the file gets one clear failure in failures.csv.

One file per transfer syntax (a single-frame 8- or 16-bit image, grayscale where the syntax
has one, then the smallest; not an RT dose or a segmentation), all predicted in one run. What
each must give is decided from the file itself with pydicom: a file pydicom cannot decode, a
colour one (pylon reads grayscale radiographs), or one without its study/series/instance UIDs
fails naming why; any other is written and its SR references it.
"""

import json
import shutil
import warnings
from collections import defaultdict
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from brightness_model import brightness_weights
from pydicom.data import get_testdata_files
from pydicom.uid import UID
from typer.testing import CliRunner

from pylon.cli.main import app

UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# objects with pixels that are not images to report findings on (doses, segmentations)
NOT_IMAGES = ("RTDOSE", "SEG")


def one_file_per_syntax() -> dict[str, Path]:
    """Transfer syntax keyword -> a shipped test file (none is downloaded)."""
    found = defaultdict(list)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few shipped files are deliberately malformed
        for name in get_testdata_files():
            try:
                header = pydicom.dcmread(name, stop_before_pixels=True)
                syntax = UID(header.file_meta.TransferSyntaxUID)
                rows, columns = int(header.Rows), int(header.Columns)
                frames = int(header.get("NumberOfFrames") or 1)
            except Exception:  # noqa: BLE001, S112  not an image, or a malformed test file
                continue
            if "PixelData" not in header and "Rows" not in header:
                continue
            samples = int(header.get("SamplesPerPixel", 1))
            not_image = header.get("Modality") in NOT_IMAGES
            bits = header.get("BitsAllocated") not in (8, 16)
            rank = (frames != 1, not_image, bits, samples != 1, rows * columns, Path(name).name)
            found[syntax.keyword or str(syntax)].append((rank, Path(name)))
    return {syntax: min(files)[1] for syntax, files in sorted(found.items())}


FILES = one_file_per_syntax()


def expected_failure(path: Path) -> str | None:
    """What the file must fail with, from pydicom's own reading of it (None: written)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path)
        try:
            pixels = dataset.pixel_array
        except Exception:  # noqa: BLE001  no decoder for it here
            return "cannot read"
    if pixels.ndim != 2:
        return "expected a single-frame grayscale image"
    if any(not dataset.get(keyword) for keyword in UIDS):
        return "DICOM output needs an image with its study, series and SOP instance UIDs"
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One ``pylon predict --dicom-out`` over a copy of each chosen file, named by its syntax."""
    tmp = tmp_path_factory.mktemp("syntaxes")
    weights = tmp / "w.safetensors"
    brightness_weights(weights, ["Nodule"], 64, bias=[4.0])  # every image has a finding
    inputs = tmp / "in"
    inputs.mkdir()
    for syntax, path in FILES.items():
        shutil.copy(path, inputs / f"{syntax}.dcm")
    out, dicom_out = tmp / "out", tmp / "dicom"
    args = ["predict", str(weights), str(inputs), "--out", str(out), "--dicom-out", str(dicom_out)]
    result = CliRunner().invoke(app, [*args, "--precision", "fp32", "--no-progress"])
    records = {}
    if (out / "predictions.jsonl").exists():
        lines = (out / "predictions.jsonl").read_text().splitlines()
        records = {r["image_id"]: r for r in map(json.loads, lines)}
    failures = pd.read_csv(out / "failures.csv") if (out / "failures.csv").exists() else None
    return result, inputs, records, failures


def test_every_shipped_transfer_syntax_is_covered():
    # what pydicom 3.0 ships: the three uncompressed, deflate, RLE, JPEG, JPEG-LS, JPEG 2000
    assert {
        "ImplicitVRLittleEndian",
        "ExplicitVRLittleEndian",
        "ExplicitVRBigEndian",
        "DeflatedExplicitVRLittleEndian",
        "RLELossless",
        "JPEGBaseline8Bit",
        "JPEGLosslessSV1",
        "JPEGLSLossless",
        "JPEG2000Lossless",
        "JPEG2000",
    } <= set(FILES)


@pytest.mark.parametrize("syntax", sorted(FILES))
def test_transfer_syntax_writes_objects_or_fails_clearly(run, syntax):
    result, inputs, records, failures = run
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    image_id = f"{syntax}.dcm"
    expected = expected_failure(inputs / image_id)
    failed = (
        [] if failures is None else list(failures.loc[failures.path.str.endswith(image_id)].reason)
    )
    if expected is not None:
        assert image_id not in records
        [reason] = failed
        assert expected in reason and image_id in reason, reason
        return
    assert not failed, failed
    record = records[image_id]
    source = pydicom.dcmread(inputs / image_id, stop_before_pixels=True)
    objects = {o["kind"]: o for o in record["dicom_objects"]}
    assert set(objects) == {"sr", "sc"}
    for entry in record["dicom_objects"]:
        written = pydicom.dcmread(entry["path"])
        assert written.SOPInstanceUID == entry["sop_instance_uid"]
        assert written.StudyInstanceUID == source.StudyInstanceUID
    sc = pydicom.dcmread(objects["sc"]["path"])
    assert sc.pixel_array.shape == (source.Rows, source.Columns, 3)
    assert sc.pixel_array.dtype == np.uint8
    sr = hd.sr.srread(objects["sr"]["path"])
    assert [uids[2] for uids in sr.get_evidence()] == [source.SOPInstanceUID]
    assert sr.content.get_planar_roi_measurement_groups(
        referenced_sop_instance_uid=source.SOPInstanceUID
    )
