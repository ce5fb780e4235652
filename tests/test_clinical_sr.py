"""The TID 1500 SR of pylon's findings, read back with highdicom: references, codes, the peak's
POINT, the region's closed POLYLINE against boxes computed by hand, probabilities, the device
observer; type 2 gaps filled on a copy; clear errors; atomic writing and its records.

The predictions are built by hand with a CAM at the source's resolution, so the heatmap is
``sigmoid(cam)`` exactly and every region is known by construction."""

import copy
import os
import stat

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from dicom_files import write_dx
from pydicom.data import get_testdata_file

import pylon
from pylon.clinical import codes
from pylon.clinical.objects import DicomObject, findings_objects, new_study_source, write_objects
from pylon.clinical.sr import finding_box
from pylon.inference.result import Prediction

HEIGHT, WIDTH = 60, 80
CLASSES = ("Nodule", "Pleural_Thickening", "Hernia")
# by construction: Nodule's region is rows 10..19, columns 20..34 (peak (25, 15)), with a second,
# disjoint blob at rows 40..49, columns 60..69 that is not its region; Pleural_Thickening's is
# rows 30..39, columns 5..9 (peak (6, 31)); Hernia never reaches 0.5
NODULE_BOX = (20, 10, 34, 19)
THICKENING_BOX = (5, 30, 9, 39)


def dx_source(tmp_path, modality="DX", **attributes) -> pydicom.Dataset:
    rows = np.arange(HEIGHT)[:, None].repeat(WIDTH, 1)
    pixels = np.where(np.arange(WIDTH)[None, :] < WIDTH // 2, 500, 3500) + rows
    path = write_dx(tmp_path / f"{modality}.dcm", pixels.astype(np.uint16), modality=modality)
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def bare_dx_source(tmp_path, *also: str) -> pydicom.Dataset:
    """:func:`dx_source` without the type 2 attributes (and PatientOrientation) an exported or
    anonymised file often lacks, nor the keywords ``also``."""
    source = dx_source(tmp_path)
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "PatientOrientation",
        *also,
    ):
        delattr(source, keyword)
    return source


def ct_source() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))


def known_prediction(height=HEIGHT, width=WIDTH) -> Prediction:
    cam = torch.full((3, height, width), -4.0)
    cam[0, 10:20, 20:35] = 2.0
    cam[0, 15, 25] = 5.0
    cam[0, 40:50, 60:70] = 2.0
    cam[1, 30:40, 5:10] = 1.0
    cam[1, 31, 6] = 3.0
    cam[2, 5, 5] = -1.0
    return Prediction(
        image_id="img",
        path=None,
        original_size=(height, width),
        probabilities={"Nodule": 0.97, "Pleural_Thickening": 0.81, "Hernia": 0.12},
        peaks={"Nodule": (25, 15), "Pleural_Thickening": (6, 31), "Hernia": (5, 5)},
        selected=["Nodule", "Pleural_Thickening"],
        cam=cam,
    )


def the_sr(objects) -> hd.sr.ComprehensiveSR:
    (sr,) = [o for o in objects if o.kind == "sr"]
    return sr.dataset


def written_sr(tmp_path, source, prediction, **options):
    objects = findings_objects(source, prediction, kinds=("sr",), **options)
    records = write_objects(objects, tmp_path / "out", "img")
    return hd.sr.srread(records[0]["path"])


def referenced_uid(roi) -> str:
    """The SOP Instance UID an SCOORD content item is selected from."""
    (image,) = roi.ContentSequence
    return image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID


def _box_by_hand(x0, y0, x1, y1):
    return [[x0, y0], [x1 + 1, y0], [x1 + 1, y1 + 1], [x0, y1 + 1], [x0, y0]]


def test_sr_round_trip_references_codes_coordinates(tmp_path):
    source = dx_source(tmp_path)
    sr = written_sr(tmp_path, source, known_prediction())
    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.PatientID == source.PatientID
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    groups = sr.content.get_planar_roi_measurement_groups()
    by_name = {(g.finding_type.meaning, g.roi.graphic_type.value): g for g in groups}
    assert len(groups) == 4  # region + peak for each selected class
    nodule_region = by_name[("Nodule", "POLYLINE")]
    nodule_peak = by_name[("Nodule", "POINT")]
    assert (nodule_region.finding_type.value, nodule_region.finding_type.scheme_designator) == (
        "27925004",
        "SCT",
    )
    np.testing.assert_allclose(nodule_peak.roi.value, [[25.5, 15.5]])
    np.testing.assert_allclose(nodule_region.roi.value, _box_by_hand(*NODULE_BOX))
    thickening = by_name[("Pleural thickening", "POLYLINE")]
    assert thickening.finding_type.scheme_designator == codes.PRIVATE_SCHEME
    np.testing.assert_allclose(thickening.roi.value, _box_by_hand(*THICKENING_BOX))
    np.testing.assert_allclose(by_name[("Pleural thickening", "POINT")].roi.value, [[6.5, 31.5]])
    for group in groups:
        assert referenced_uid(group.roi) == source.SOPInstanceUID
        (measurement,) = group.get_measurements()
        assert measurement.name == codes.PROBABILITY
        assert measurement.unit == codes.NO_UNITS
        expected = 0.97 if group.finding_type.meaning == "Nodule" else 0.81
        assert measurement.value == pytest.approx(expected)
    assert not sr.content.get_image_measurement_groups()  # report="selected": no Hernia
    # the private codes' scheme is declared
    assert [i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence] == [
        codes.PRIVATE_SCHEME
    ]


def test_sr_names_the_algorithm_and_device(tmp_path):
    sr = written_sr(tmp_path, dx_source(tmp_path), known_prediction(), model_name="resnet18")
    context = {}

    def walk(items):
        for item in items:
            if "TextValue" in item:
                context.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(
                    item.TextValue
                )
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert context["Device Observer Name"] == ["pylon"]
    assert context["Device Observer Model Name"] == ["resnet18"]
    assert set(context["Algorithm Name"]) == {"pylon"}
    assert set(context["Algorithm Version"]) == {pylon.__version__}
    assert "model=resnet18" in context["Algorithm Parameters"]
    assert sr.SoftwareVersions == pylon.__version__


def test_report_all_puts_classes_without_region_at_image_level(tmp_path):
    sr = written_sr(tmp_path, dx_source(tmp_path), known_prediction(), report="all")
    (image_level,) = sr.content.get_image_measurement_groups()
    assert image_level.finding_type == codes.finding_code("Hernia")
    assert image_level.get_measurements()[0].value == pytest.approx(0.12)
    assert len(sr.content.get_planar_roi_measurement_groups()) == 4


def test_threshold_changes_the_region(tmp_path):
    # at 0.9 only the peak pixels (sigmoid 5, sigmoid 3 = 0.95) remain: 1 x 1 boxes
    sr = written_sr(tmp_path, dx_source(tmp_path), known_prediction(), threshold=0.9)
    regions = [
        g
        for g in sr.content.get_planar_roi_measurement_groups()
        if g.roi.graphic_type.value == "POLYLINE"
    ]
    boxes = sorted(np.asarray(g.roi.value).tolist() for g in regions)
    assert boxes == sorted([_box_by_hand(25, 15, 25, 15), _box_by_hand(6, 31, 6, 31)])


def test_finding_box_by_hand():
    heat = np.zeros((8, 10), np.float32)
    heat[2:4, 3:6] = 0.8
    heat[4, 6] = 0.7  # touches (5, 3) diagonally: 8-connected, part of the region
    heat[6:8, 0:2] = 0.9  # another component
    assert finding_box(heat, (4, 2), 0.5) == (3, 2, 6, 4)
    assert finding_box(heat, (0, 7), 0.5) == (0, 6, 1, 7)
    assert finding_box(heat, (9, 0), 0.5) is None  # below the threshold at the peak


def test_ct_source(tmp_path):
    source = ct_source()
    sr = written_sr(tmp_path, source, known_prediction(128, 128))
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    groups = sr.content.get_planar_roi_measurement_groups()
    assert {referenced_uid(g.roi) for g in groups} == {source.SOPInstanceUID}


def test_missing_type2_attributes_are_filled_on_a_copy(tmp_path):
    source = bare_dx_source(tmp_path, "BodyPartExamined")
    before = copy.deepcopy(source)
    objects = findings_objects(source, known_prediction(), kinds=("sr", "sc", "seg"))
    assert source == before and "PatientName" not in source
    records = write_objects(objects, tmp_path / "out", "img")
    sr = hd.sr.srread(records[0]["path"])
    assert sr.PatientName == "" and sr.StudyDate == "" and sr.PatientID == source.PatientID
    assert {r["kind"] for r in records} == {"sr", "sc", "seg"}


@pytest.mark.parametrize("missing", ["StudyInstanceUID", "SOPInstanceUID", "PixelData"])
def test_source_lacking_identity_or_pixels_is_refused(tmp_path, missing):
    source = dx_source(tmp_path)
    delattr(source, missing)
    with pytest.raises(ValueError, match=missing):
        findings_objects(source, known_prediction())


def test_prediction_of_another_size_is_refused(tmp_path):
    prediction = known_prediction()
    prediction.original_size = (30, 40)
    with pytest.raises(ValueError, match="60 x 80"):
        findings_objects(dx_source(tmp_path), prediction)


def test_bad_options_are_refused(tmp_path):
    source, prediction = dx_source(tmp_path), known_prediction()
    with pytest.raises(ValueError, match="pmapx"):
        findings_objects(source, prediction, kinds=("sr", "pmapx"))
    with pytest.raises(ValueError, match="threshold"):
        findings_objects(source, prediction, threshold=1.5)
    with pytest.raises(ValueError, match="report"):
        findings_objects(source, prediction, report="some")


def test_write_objects_records_and_files(tmp_path):
    source = dx_source(tmp_path)
    prediction = known_prediction()
    prediction.selected = ["Nodule", "Pleural_Thickening"]
    objects = findings_objects(source, prediction, kinds=("sr", "sc", "seg"))
    records = write_objects(objects, tmp_path / "out", "case 1")
    folder = tmp_path / "out" / "case 1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "sc_Nodule.dcm",
        "sc_Pleural_Thickening.dcm",
        "seg.dcm",
        "sr.dcm",
    ]
    umask = os.umask(0)
    os.umask(umask)
    for record, obj in zip(records, objects, strict=True):
        written = pydicom.dcmread(record["path"])
        assert record["sop_instance_uid"] == written.SOPInstanceUID == obj.sop_instance_uid
        assert record["sop_class_uid"] == written.SOPClassUID
        assert record["series_instance_uid"] == written.SeriesInstanceUID
        assert record["class"] == obj.class_name
        assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID
        assert stat.S_IMODE(os.stat(record["path"]).st_mode) == 0o666 & ~umask
    scs = [r for r in records if r["kind"] == "sc"]
    assert len({r["series_instance_uid"] for r in scs}) == 1  # one overlay series
    # rewriting replaces the files in place, nothing else left behind
    write_objects(objects, tmp_path / "out", "case 1")
    assert len(list(folder.iterdir())) == 4
    with pytest.raises(ValueError, match="sr.dcm"):
        write_objects([objects[0], objects[0]], tmp_path / "out", "twice")


def test_new_study_source_for_a_png(tmp_path):
    pixels = np.tile(np.arange(WIDTH, dtype=np.uint8)[None], (HEIGHT, 1))
    source = new_study_source(pixels, "scans/chest 1.png")
    again = new_study_source(pixels, "scans/chest 1.png")
    assert source.StudyInstanceUID != again.StudyInstanceUID
    assert (source.Rows, source.Columns) == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(source.pixel_array, pixels)
    objects = [DicomObject("source", None, source)]
    objects += findings_objects(source, known_prediction(), kinds=("sr", "sc"))
    records = write_objects(objects, tmp_path / "out", "chest 1")
    assert records[0]["path"].endswith("source.dcm")
    sr = hd.sr.srread(records[1]["path"])
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    groups = sr.content.get_planar_roi_measurement_groups()
    assert {referenced_uid(g.roi) for g in groups} == {source.SOPInstanceUID}
    with pytest.raises(ValueError, match="uint8"):
        new_study_source(pixels.astype(np.float32), "x")
