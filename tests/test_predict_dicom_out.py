"""``pylon predict --dicom-out``: each DICOM's findings written as DICOM objects (SR, SC, SEG)
next to its record, read back with highdicom and checked with dciodvfy; resumable; PNG inputs
need --new-study; option errors and a missing [clinical] extra."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from brightness_model import brightness_weights
from dicom_files import write_dx
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.inference import Predictor

SIZE = 128
# Nodule: the brightness model (its probability is high on a bright square); Mass: the same map
# shifted down by 10, so always below the threshold
CLASSES = ["Nodule", "Mass"]
NODULE = ("27925004", "SCT")  # SNOMED CT Nodule, as pydicom's code dictionary has it
SQUARE = (250, 40, 40)  # x0, y0, side in the 300 x 400 radiograph
TESTS = Path(__file__).parent  # brightness_model.py, for a fresh interpreter


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "brightness.safetensors"
    return brightness_weights(path, CLASSES, SIZE, bias=[0.0, -10.0])


def radiograph(bright=True):
    """12-bit pixels: a dark background and, when ``bright``, a bright square at SQUARE."""
    pixels = np.full((300, 400), 200, dtype=np.uint16)
    if bright:
        x0, y0, side = SQUARE
        pixels[y0 : y0 + side, x0 : x0 + side] = 4000
    return pixels


@pytest.fixture
def sources(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_dx(folder / "dx.dcm", radiograph())
    write_dx(folder / "cr.dcm", radiograph(), modality="CR")
    return folder


def predict(weights, inputs, out, dicom_out, *options):
    args = ["predict", str(weights), *map(str, inputs), "--out", str(out), "--precision", "fp32"]
    if dicom_out is not None:
        args += ["--dicom-out", str(dicom_out)]
    result = CliRunner().invoke(app, [*args, "--no-progress", *options])
    assert "Traceback" not in result.output, result.output
    return result


def records_of(out):
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return {r["image_id"]: r for r in map(json.loads, lines)}


def dicom_files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix == ".dcm")


def check_objects_match_files(records, dicom_out):
    """Every object a record lists is its file (same SOP class and instance), and the folder
    holds nothing else: exactly one set of objects per image."""
    listed = []
    for record in records.values():
        for entry in record["dicom_objects"]:
            ds = pydicom.dcmread(entry["path"], stop_before_pixels=True)
            assert ds.SOPInstanceUID == entry["sop_instance_uid"], entry
            assert ds.SOPClassUID == entry["sop_class_uid"], entry
            assert ds.SeriesInstanceUID == entry["series_instance_uid"], entry
            listed.append(entry["path"])
    assert sorted(listed) == [str(p.resolve()) for p in dicom_files(dicom_out)]
    return listed


def test_dx_and_cr_findings_are_written_read_back_and_valid(weights, sources, tmp_path):
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    result = predict(
        weights, [sources], out, dicom_out, "--report", "all", "--dicom-objects", "sr,sc,seg"
    )
    assert result.exit_code == 0, result.output
    assert "8 DICOM object(s)" in result.output, result.output
    records = records_of(out)
    assert set(records) == {"dx.dcm", "cr.dcm"}
    check_objects_match_files(records, dicom_out)
    for image_id, record in records.items():
        source = pydicom.dcmread(sources / image_id)
        objects = {(o["kind"], o["class"]): o for o in record["dicom_objects"]}
        # --report all: an SC for each class, one SEG with a segment each, one SR
        assert set(objects) == {("sr", None), ("sc", "Nodule"), ("sc", "Mass"), ("seg", None)}
        for entry in record["dicom_objects"]:
            ds = pydicom.dcmread(entry["path"], stop_before_pixels=True)
            assert ds.StudyInstanceUID == source.StudyInstanceUID  # the source's study
            assert ds.PatientID == source.PatientID
            assert ds.SeriesInstanceUID != source.SeriesInstanceUID  # in a new series
            if entry["kind"] == "sc":
                assert (ds.Rows, ds.Columns) == (source.Rows, source.Columns)
        sr = hd.sr.srread(objects["sr", None]["path"])
        evidence = [uids[2] for uids in sr.get_evidence()]
        assert evidence == [source.SOPInstanceUID]
        groups = sr.content.get_planar_roi_measurement_groups(
            referenced_sop_instance_uid=source.SOPInstanceUID
        )
        assert groups and all(
            (g.finding_type.value, g.finding_type.scheme_designator) == NODULE for g in groups
        )
        probability = record["probabilities"]["Nodule"]
        assert probability > 0.5 > record["probabilities"]["Mass"]
        for group in groups:
            [measurement] = group.get_measurements(name=hd.sr.CodedConcept("122157", "DCM", "x"))
            assert measurement.value == pytest.approx(probability, abs=1e-6)
        shapes = {g.roi.graphic_type.value: g.roi.value for g in groups}
        x, y = record["peaks"]["Nodule"]
        x0, y0, side = SQUARE
        assert x0 <= x < x0 + side and y0 <= y < y0 + side  # the model's peak, by construction
        np.testing.assert_allclose(shapes["POINT"], [[x + 0.5, y + 0.5]])
        box = shapes["POLYLINE"]
        assert (box[0] == box[-1]).all()  # closed
        assert box[:, 0].min() <= x + 0.5 <= box[:, 0].max()
        assert box[:, 1].min() <= y + 0.5 <= box[:, 1].max()
        # the class below the threshold, reported with --report all: image-level, its probability
        [image_level] = sr.content.get_image_measurement_groups()
        assert image_level.finding_type.meaning == "Mass"
        [measurement] = image_level.get_measurements()
        assert measurement.value == pytest.approx(record["probabilities"]["Mass"], abs=1e-6)
    table = pd.read_csv(out / "predictions.csv").set_index("image_id")
    assert table.loc["dx.dcm", "dicom_objects"] == 4
    # the independent validator accepts every object the command wrote
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.fail("dciodvfy (Debian dicom3tools) is missing: `make test` installs it")
    for path in dicom_files(dicom_out):
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        errors = [
            line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")
        ]
        assert not errors, f"{path}: {errors}"


def test_reruns_and_kills_leave_one_set_of_objects_per_image(weights, sources, tmp_path):
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    assert predict(weights, [sources], out, dicom_out).exit_code == 0
    first = records_of(out)
    files = check_objects_match_files(first, dicom_out)
    assert len(files) == 4  # SR and the Nodule SC of each image
    stamps = {p: p.stat().st_mtime_ns for p in dicom_files(dicom_out)}

    # a plain rerun skips both images and leaves their objects untouched
    again = predict(weights, [sources], out, dicom_out)
    assert again.exit_code == 0 and "resuming: 2 image(s)" in again.output, again.output
    assert records_of(out) == first
    assert {p: p.stat().st_mtime_ns for p in dicom_files(dicom_out)} == stamps

    # killed after writing cr.dcm's objects but before its record (and mid-line): redone, its
    # files replaced by new objects, none left over
    lines = (out / "predictions.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["image_id"] == "dx.dcm"]
    (out / "predictions.jsonl").write_text(kept[0] + "\n" + '{"image_id": "cr.d')
    redone = predict(weights, [sources], out, dicom_out)
    assert redone.exit_code == 0 and "resuming: 1 image(s)" in redone.output, redone.output
    records = records_of(out)
    assert records["dx.dcm"] == first["dx.dcm"]
    old = {o["sop_instance_uid"] for o in first["cr.dcm"]["dicom_objects"]}
    new = {o["sop_instance_uid"] for o in records["cr.dcm"]["dicom_objects"]}
    assert len(new) == 2 and not old & new
    assert len(check_objects_match_files(records, dicom_out)) == 4

    # cr.dcm replaced by a radiograph without the bright square: redone with nothing selected,
    # so only its SR; the Secondary Capture of the earlier run is gone too
    write_dx(sources / "cr.dcm", radiograph(bright=False), modality="CR")
    changed = predict(weights, [sources], out, dicom_out)
    assert changed.exit_code == 0 and "changed since" in changed.output, changed.output
    records = records_of(out)
    assert set(records) == {"dx.dcm", "cr.dcm"}, changed.output
    assert [o["kind"] for o in records["cr.dcm"]["dicom_objects"]] == ["sr"]
    assert len(check_objects_match_files(records, dicom_out)) == 3
    assert not (dicom_out / "cr.dcm" / "sc_Nodule.dcm").exists()


def test_other_dicom_options_are_refused_and_overwrite_removes_only_listed_objects(
    weights, sources, tmp_path
):
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    assert predict(weights, [sources], out, dicom_out).exit_code == 0
    first = records_of(out)
    # files of the user's in the same folders
    (dicom_out / "notes.txt").write_text("mine")
    write_dx(dicom_out / "dx.dcm" / "mine.dcm", radiograph())
    shutil.copy(first["cr.dcm"]["dicom_objects"][0]["path"], dicom_out / "copy_of_sr.dcm")

    refused = predict(weights, [sources], out, dicom_out, "--dicom-objects", "sr")
    assert refused.exit_code == 2, refused.output
    assert "dicom_objects" in refused.output and "--overwrite" in refused.output
    refused = predict(weights, [sources], out, None)  # without --dicom-out: other settings too
    assert refused.exit_code == 2 and "dicom_out" in refused.output, refused.output

    result = predict(weights, [sources], out, dicom_out, "--dicom-objects", "sr", "--overwrite")
    assert result.exit_code == 0, result.output
    records = records_of(out)
    assert all([o["kind"] for o in r["dicom_objects"]] == ["sr"] for r in records.values())
    assert not (dicom_out / "cr.dcm" / "sc_Nodule.dcm").exists()
    left = {p.relative_to(dicom_out).as_posix() for p in dicom_out.rglob("*") if p.is_file()}
    assert left == {
        "notes.txt",
        "dx.dcm/mine.dcm",
        "copy_of_sr.dcm",
        "dx.dcm/sr.dcm",
        "cr.dcm/sr.dcm",
    }
    # --overwrite without --dicom-out removes the objects its records list, and their folders
    assert predict(weights, [sources], out, None, "--overwrite").exit_code == 0
    left = {p.relative_to(dicom_out).as_posix() for p in dicom_out.rglob("*")}
    assert left == {"notes.txt", "dx.dcm", "dx.dcm/mine.dcm", "copy_of_sr.dcm"}
    assert "dicom_objects" not in pd.read_csv(out / "predictions.csv").columns


def test_images_without_dicom_identity_need_new_study(weights, sources, tmp_path):
    png = tmp_path / "png"
    png.mkdir()
    gray = (radiograph() // 16).astype(np.uint8)
    cv2.imwrite(str(png / "chest.png"), gray)
    # only images without identity: nothing could be written, a wrong command line
    alone = predict(weights, [png / "chest.png"], tmp_path / "o1", tmp_path / "d1")
    assert alone.exit_code == 2, alone.output
    assert "chest.png has no DICOM identity (study/patient UIDs): use --new-study" in " ".join(
        alone.output.split()
    )
    assert not (tmp_path / "o1").exists() or not (tmp_path / "o1" / "predictions.jsonl").exists()

    # a mix: the DICOMs are written, the PNG is a failure naming --new-study
    mixed = predict(weights, [sources, png], tmp_path / "o2", tmp_path / "d2")
    assert mixed.exit_code == 0, mixed.output
    assert set(records_of(tmp_path / "o2")) == {"dx.dcm", "cr.dcm"}
    failures = pd.read_csv(tmp_path / "o2" / "failures.csv")
    [reason] = failures.loc[failures.path.str.endswith("chest.png"), "reason"]
    assert "has no DICOM identity" in reason and "--new-study" in reason

    # --new-study: a Secondary Capture of the image in a new study, referenced by the SR
    new = predict(weights, [png], tmp_path / "o3", tmp_path / "d3", "--new-study")
    assert new.exit_code == 0, new.output
    record = records_of(tmp_path / "o3")["chest.png"]
    objects = {o["kind"]: o for o in record["dicom_objects"]}
    assert set(objects) == {"source", "sr", "sc"}
    source = pydicom.dcmread(objects["source"]["path"])
    assert (source.Rows, source.Columns) == gray.shape
    np.testing.assert_array_equal(source.pixel_array, gray)
    sr = hd.sr.srread(objects["sr"]["path"])
    assert [uids[2] for uids in sr.get_evidence()] == [source.SOPInstanceUID]
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert pydicom.dcmread(objects["sc"]["path"]).StudyInstanceUID == source.StudyInstanceUID


def test_findings_writer_python_api(weights, sources, tmp_path):
    from pylon.clinical import objects
    from pylon.clinical.predict_dicom import KINDS, FindingsWriter

    assert KINDS == objects.KINDS  # --dicom-objects offers what the writers make

    predictor = Predictor(weights, precision="fp32")
    writer = FindingsWriter(tmp_path / "dicom", kinds="sr", threshold=predictor.threshold)
    prediction = predictor.predict(sources / "dx.dcm")
    [entry] = writer.write(prediction)
    assert entry["kind"] == "sr"
    sr = hd.sr.srread(entry["path"])
    source = pydicom.dcmread(sources / "dx.dcm", stop_before_pixels=True)
    assert [uids[2] for uids in sr.get_evidence()] == [source.SOPInstanceUID]
    assert [o["kind"] for o in writer.write(prediction)] == ["sr"]  # again: the same file
    assert dicom_files(tmp_path / "dicom") == [tmp_path / "dicom" / "dx.dcm" / "sr.dcm"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dicom-out", "D", "--report", "some"], "--report 'some': expected one of"),
        (["--dicom-out", "D", "--dicom-objects", "sr,pdf"], "--dicom-objects pdf: expected"),
        (["--new-study"], "--new-study only apply with --dicom-out"),
        (["--dicom-out", "FILE"], "is a file; expected a folder"),
    ],
)
def test_wrong_dicom_options_exit_2(weights, sources, tmp_path, options, message):
    (tmp_path / "FILE").write_text("")
    options = [str(tmp_path / o) if o in ("D", "FILE") else o for o in options]
    result = predict(weights, [sources], tmp_path / "out", None, *options)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_without_the_clinical_extra_dicom_out_is_one_line(weights, sources, tmp_path):
    # a fresh interpreter where the [clinical] extra's packages cannot be imported, with the
    # test model registered
    missing = "; ".join(
        f"sys.modules[{name!r}] = None" for name in ("highdicom", "pynetdicom", "dicomweb_client")
    )
    code = (
        f"import sys; {missing}; sys.path.insert(0, {str(TESTS)!r}); import brightness_model; "
        "from pylon.cli.main import app; app(prog_name='pylon')"
    )
    args = [sys.executable, "-c", code, "predict", str(weights), str(sources), "--no-progress"]
    run = subprocess.run(
        [*args, "--out", str(tmp_path / "out"), "--dicom-out", str(tmp_path / "dicom")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert lines == [
        "error: DICOM output needs highdicom: pip install 'pylon-localization[clinical]'"
    ]
    assert not (tmp_path / "dicom").exists() and not (tmp_path / "out").exists()
    # without --dicom-out, predict needs none of them
    run = subprocess.run(
        [*args, "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 2
