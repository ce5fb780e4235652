"""The preprocessing record: round trips, legacy weights metadata, clear errors."""

import json

import numpy as np
import pytest

from pylon.data.preprocessing import METADATA_KEY, Preprocessing, make_preprocessing
from pylon.data.transforms import apply_transform


def _voc() -> Preprocessing:
    return make_preprocessing(
        "voc", 64, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), ["cat", "dog"], "cubic"
    )


def test_metadata_round_trip_keeps_every_field_and_the_model():
    record = _voc().with_model({"name": "pylon", "encoder": "resnet18"})
    metadata = {k: json.loads(v) for k, v in record.to_metadata().items()}
    back = Preprocessing.from_metadata(metadata, "w.safetensors")
    assert back == record and back.model == {"name": "pylon", "encoder": "resnet18"}
    assert list(record.to_metadata()) == [METADATA_KEY]


def test_legacy_pylon_data_is_read_as_the_xray_transform():
    legacy = {"class_names": ["a"], "size": 256, "in_channels": 1, "mean": [0.5], "std": [0.25]}
    record = Preprocessing.from_metadata({"model": {"name": "cam"}, "pylon_data": legacy}, "old")
    assert (record.transform, record.interpolation, record.size) == ("xray", "cubic", 256)
    assert record.model == {"name": "cam"}


def test_missing_metadata_and_bad_fields_name_the_file():
    with pytest.raises(ValueError, match="old.safetensors: no 'pylon_preprocessing'"):
        Preprocessing.from_metadata({"model": None}, "old.safetensors")
    bad = _voc().to_dict() | {"mean": [0.5]}
    with pytest.raises(ValueError, match=r"w: 'pylon_preprocessing': mean \[0.5\]"):
        Preprocessing.from_metadata({METADATA_KEY: bad}, "w")
    with pytest.raises(ValueError, match="lacks size"):
        Preprocessing.from_dict({k: v for k, v in _voc().to_dict().items() if k != "size"})


def test_eval_transform_is_resize_then_normalise_per_channel():
    record = _voc()
    image = np.full((32, 48, 3), (255, 0, 128), dtype=np.uint8)
    tensor, _ = apply_transform(record.eval_transform(), image)
    assert tensor.shape == (3, 64, 64)
    pixels = (1.0, 0.0, 128 / 255)
    expected = [(v - m) / s for v, m, s in zip(pixels, record.mean, record.std, strict=True)]
    np.testing.assert_allclose(tensor.mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)


def test_run_file_round_trip(tmp_path):
    record = _voc()
    record.write(tmp_path)
    assert Preprocessing.read_run(tmp_path) == record
