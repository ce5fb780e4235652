"""Secondary Capture overlays and the fractional Segmentation, read back with pydicom/highdicom:
size, colour model, study and series, where the hot colour is, and the segments' values."""

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from test_clinical_sr import HEIGHT, WIDTH, ct_source, dx_source, known_prediction

from pylon.clinical import codes
from pylon.clinical.objects import findings_objects
from pylon.inference.result import Prediction


def hot_spot_prediction(height=HEIGHT, width=WIDTH, peak=(50, 20)) -> Prediction:
    """One class, hot (sigmoid 6 ~ 1) in a 5 x 5 block around ``peak``, cold (sigmoid -6)
    elsewhere."""
    x, y = peak
    cam = torch.full((1, height, width), -6.0)
    cam[0, y - 2 : y + 3, x - 2 : x + 3] = 6.0
    return Prediction(
        image_id="img",
        path=None,
        original_size=(height, width),
        probabilities={"Nodule": 0.99},
        peaks={"Nodule": peak},
        selected=["Nodule"],
        cam=cam,
    )


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_sc_overlay_is_the_source_size_rgb_with_the_hot_colour_at_the_peak(tmp_path, modality):
    source = dx_source(tmp_path, modality)
    (sc,) = [o for o in findings_objects(source, hot_spot_prediction(), kinds=("sc",))]
    ds = sc.dataset
    assert sc.kind == "sc" and sc.class_name == "Nodule"
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (HEIGHT, WIDTH, 3)
    assert ds.PhotometricInterpretation == "RGB" and ds.BitsAllocated == 8
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert list(ds.PatientOrientation) == list(source.PatientOrientation)
    assert ds.BodyPartExamined == "CHEST"
    rgb = ds.pixel_array.astype(int)
    red = rgb[..., 0] - rgb[..., 2]  # JET: red is hot, blue is cold
    rows, cols = np.nonzero(red > 60)
    assert 48 <= cols.min() and cols.max() <= 52 and 18 <= rows.min() and rows.max() <= 22
    assert red[20, 50] == red.max() > 60  # the peak pixel is hot
    assert (rgb[20, 53] > 200).all()  # the white ring around the peak (radius 3)
    assert (red[:10] < 0).all()  # far from the finding: cold blue
    # the source shows through at full resolution: its right half is brighter than its left
    grey = rgb[30:, :, 1]
    assert grey[:, WIDTH // 2 + 2 :].mean() > grey[:, : WIDTH // 2 - 2].mean() + 20


def test_sc_of_every_reported_class_in_one_series(tmp_path):
    source = dx_source(tmp_path)
    objects = findings_objects(source, known_prediction(), kinds=("sc",), report="all")
    assert [o.class_name for o in objects] == ["Nodule", "Pleural_Thickening", "Hernia"]
    assert len({o.series_instance_uid for o in objects}) == 1
    assert [int(o.dataset.InstanceNumber) for o in objects] == [1, 2, 3]


def test_sc_of_a_ct_slice_gets_its_orientation_from_the_cosines():
    source = ct_source()
    (sc,) = findings_objects(source, hot_spot_prediction(128, 128, (60, 60)), kinds=("sc",))
    assert (sc.dataset.Rows, sc.dataset.Columns) == (128, 128)
    assert list(sc.dataset.PatientOrientation) == ["L", "P"]  # axial: rows go left, columns back


def test_seg_is_fractional_with_one_segment_per_reported_class(tmp_path):
    source = dx_source(tmp_path)
    prediction = known_prediction()
    (obj,) = findings_objects(source, prediction, kinds=("seg",), report="all")
    path = tmp_path / "seg.dcm"
    obj.dataset.save_as(path, enforce_file_format=True)
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.number_of_segments == 3
    labels = [seg.get_segment_description(n).SegmentLabel for n in (1, 2, 3)]
    assert labels == ["Nodule", "Pleural_Thickening", "Hernia"]
    types = [seg.get_segment_description(n).segmented_property_type for n in (1, 2, 3)]
    assert types == [codes.finding_code(c) for c in labels]
    pixels = seg.get_pixels_by_source_instance(
        [source.SOPInstanceUID], segment_numbers=[1, 2, 3], rescale_fractional=True
    )
    assert pixels.shape == (1, HEIGHT, WIDTH, 3)
    expected = torch.sigmoid(prediction.cam).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(pixels[0], expected, atol=0.5 / 255 + 1e-6)


def test_no_reported_class_writes_an_sr_only(tmp_path):
    prediction = known_prediction()
    prediction.selected = []
    objects = findings_objects(dx_source(tmp_path), prediction, kinds=("sr", "sc", "seg"))
    assert [o.kind for o in objects] == ["sr"]
    sr = hd.sr.srread(_saved(objects[0].dataset, tmp_path / "sr.dcm"))
    (group,) = sr.content.get_image_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.value == codes.NO_FINDINGS


def _saved(dataset, path):
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_pmap_of_a_ct_holds_the_probability_maps(tmp_path):
    source = ct_source()
    prediction = known_prediction(128, 128)
    (obj,) = findings_objects(source, prediction, kinds=("pmap",), report="all")
    ds = pydicom.dcmread(_saved(obj.dataset, tmp_path / "pmap.dcm"))
    assert ds.SOPClassUID == pydicom.uid.ParametricMapStorage
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert int(ds.NumberOfFrames) == 3
    frames = ds.pixel_array
    expected = torch.sigmoid(prediction.cam).numpy()
    np.testing.assert_allclose(frames, expected, atol=1e-6)
    explanations = [
        f.RealWorldValueMappingSequence[0].LUTExplanation
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    assert explanations == [f"probability of {c}" for c in prediction.class_names]


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_pmap_of_a_radiograph_is_refused_clearly(tmp_path, modality):
    with pytest.raises(ValueError, match="frame of reference.*'seg'"):
        findings_objects(dx_source(tmp_path, modality), known_prediction(), kinds=("sr", "pmap"))


def test_sc_shows_a_monochrome1_source_as_a_viewer_does(tmp_path):
    """The SC draws the source as read for display: MONOCHROME1 inverted (larger is darker)."""
    source = dx_source(tmp_path, PhotometricInterpretation="MONOCHROME1")
    (sc,) = findings_objects(source, hot_spot_prediction(), kinds=("sc",))
    grey = sc.dataset.pixel_array.astype(int)[30:, :, 1]
    assert grey[:, : WIDTH // 2 - 2].mean() > grey[:, WIDTH // 2 + 2 :].mean() + 20
