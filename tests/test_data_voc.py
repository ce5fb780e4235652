"""Pascal VOC 2012: XML boxes (read as the reference, or 1-based inclusive) to labels and COCO
boxes, 3 channels."""

import albumentations as A
import numpy as np
import pytest
from albumentations.pytorch import ToTensorV2
from PIL import Image

from pylon.data import create_dataset
from pylon.data.voc import VOC_CLASSES

XML = """<annotation>
  <folder>VOC2012</folder><filename>{name}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  <segmented>0</segmented>
  {objects}
</annotation>"""
OBJECT = """<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated>
  <difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>
</object>"""
IMAGES = {
    "2008_000001": [("dog", 1, 1, 40, 30), ("person", 10, 5, 60, 48)],
    "2008_000002": [("cat", 5, 5, 20, 20)],
    "2008_000003": [("dog", 2, 3, 64, 48), ("dog", 30, 10, 50, 40)],
}


def make_voc(root, images=IMAGES, train=("2008_000001", "2008_000002"), val=("2008_000003",)):
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True)
    for k, (name, objects) in enumerate(images.items()):
        Image.fromarray(np.full((48, 64, 3), 40 * k, np.uint8)).save(
            voc / "JPEGImages" / f"{name}.jpg"
        )
        body = "".join(OBJECT.format(cls=c, x0=a, y0=b, x1=x, y1=y) for c, a, b, x, y in objects)
        (voc / "Annotations" / f"{name}.xml").write_text(
            XML.format(name=name, w=64, h=48, objects=body)
        )
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(train) + "\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n".join(val) + "\n")
    return root


def test_labels_boxes_and_channels(tmp_path):
    root = make_voc(tmp_path)
    ds = create_dataset("voc", root, "train", size=32, augment=False, cache=False)
    assert ds.class_names == list(VOC_CLASSES) and len(VOC_CLASSES) == 20 and ds.in_channels == 3
    first = ds[0]
    assert first["image"].shape == (3, 32, 32)
    expected = np.zeros(20, np.float32)
    expected[[VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]] = 1
    np.testing.assert_array_equal(first["labels"].numpy(), expected)
    sx, sy = 32 / 64, 32 / 48
    # the reference's reading: x, y = xmin, ymin; w, h = xmax - xmin, ymax - ymin
    np.testing.assert_allclose(
        first["boxes"],
        [
            (1 * sx, 1 * sy, 39 * sx, 29 * sy, VOC_CLASSES.index("dog")),
            (10 * sx, 5 * sy, 50 * sx, 43 * sy, 14),
        ],
        rtol=1e-5,
    )
    inclusive = create_dataset(
        "voc", root, "train", size=32, augment=False, cache=False, inclusive_boxes=True
    )
    # 1-based inclusive corners as pixels: x, y = xmin - 1, ymin - 1; w, h one more
    np.testing.assert_allclose(
        inclusive[0]["boxes"],
        [
            (0, 0, 40 * sx, 30 * sy, VOC_CLASSES.index("dog")),
            (9 * sx, 4 * sy, 51 * sx, 44 * sy, 14),
        ],
        rtol=1e-5,
    )
    assert ds.mean == [0.485, 0.456, 0.406]


def test_background_class_as_the_reference(tmp_path):
    root = make_voc(tmp_path)
    ds = create_dataset(
        "voc", root, "train", size=32, augment=False, cache=False, background_class=True
    )
    assert ds.class_names == ["background", *VOC_CLASSES] and ds.num_classes == 21
    sample = ds[0]
    labels = sample["labels"].numpy()
    # the reference's ids: background 0, aeroplane 1, ..., dog 12, person 15
    assert labels.shape == (21,) and labels[0] == 0
    assert list(np.flatnonzero(labels)) == [12, 15]
    assert [int(box[4]) for box in sample["boxes"]] == [12, 15]
    assert [int(box[4]) for box in ds.records[0].boxes] == [12, 15]


def test_root_may_be_voc2012_and_val_split(tmp_path):
    make_voc(tmp_path)
    ds = create_dataset("voc", tmp_path / "VOCdevkit" / "VOC2012", "val", size=32, cache=False)
    assert [r.image_id for r in ds.records] == ["2008_000003"]
    assert ds.augment is False and len(ds[0]["boxes"]) == 2
    train = create_dataset(
        "voc", tmp_path, "train", size=32, cache_dir=tmp_path / "cache", progress=False
    )
    assert train.augment is True and train[1]["image"].shape == (3, 32, 32)


def test_unknown_class_and_missing_files(tmp_path):
    root = make_voc(tmp_path / "a", images={**IMAGES, "2008_000002": [("unicorn", 1, 1, 5, 5)]})
    with pytest.raises(ValueError, match=r"2008_000002.xml, object 0: unknown class 'unicorn'"):
        create_dataset("voc", root, "train", cache=False)
    root = make_voc(tmp_path / "b", images={**IMAGES, "2008_000002": [("cat", 1, 1, 90, 5)]})
    with pytest.raises(ValueError, match=r"2008_000002.xml, object 0.*outside the 64x48 image"):
        create_dataset("voc", root, "train", cache=False)
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        create_dataset("voc", tmp_path / "nowhere", "train")


def test_a_box_cropped_away_loses_its_label(tmp_path):
    # cat in the top-left corner, dog on the right: cropping the right half keeps only the dog
    images = {"2008_000001": [("cat", 1, 1, 20, 20), ("dog", 40, 10, 60, 40)]}
    root = make_voc(tmp_path, images=images, train=("2008_000001",), val=())
    ds = create_dataset("voc", root, "train", size=32, cache=False)
    cat, dog = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")
    assert ds.records[0].labels[[cat, dog]].tolist() == [1, 1]
    ds.transform = A.Compose(
        [A.Crop(x_min=32, y_min=0, x_max=64, y_max=48), A.Normalize(), ToTensorV2()],
        bbox_params=A.BboxParams(format="coco", label_fields=["class_indices"], clip=True),
    )
    sample = ds[0]
    expected = np.zeros(20, np.float32)
    expected[dog] = 1
    np.testing.assert_array_equal(sample["labels"].numpy(), expected)
    assert [b[4] for b in sample["boxes"]] == [dog]
    # the real training pipeline: labels are always the classes of the boxes that survive
    ds = create_dataset("voc", root, "train", size=32, cache=False)
    for _ in range(20):
        sample = ds[0]
        survivors = {b[4] for b in sample["boxes"]}
        assert set(np.flatnonzero(sample["labels"].numpy())) == survivors
    # at eval every object is kept
    val = create_dataset("voc", root, "train", size=32, augment=False, cache=False)
    assert set(np.flatnonzero(val[0]["labels"].numpy())) == {cat, dog}


def test_voc_preset_trains_and_evaluates_with_the_background_output(tmp_path):
    """The VOC presets use the reference's 21 outputs; the never-positive background is left out
    of AUROC (as the reference's AUROCCb) and has no boxes to localize."""
    import torch

    from pylon.data.preprocessing import Preprocessing
    from pylon.evaluation.evaluate import evaluate_run
    from pylon.models.weights import read_weights_metadata
    from pylon.training.config import apply_overrides
    from pylon.training.fit import train
    from pylon.training.presets import get_preset

    torch.set_num_threads(2)
    images = {
        "2008_000001": [("dog", 1, 1, 40, 30), ("person", 10, 5, 60, 48)],
        "2008_000002": [("cat", 5, 5, 20, 20)],
        "2008_000003": [("dog", 2, 3, 64, 48)],
        "2008_000004": [("cat", 30, 10, 50, 40)],
        "2008_000005": [("dog", 2, 3, 30, 30), ("cat", 30, 10, 60, 44)],
    }
    root = make_voc(tmp_path / "voc", images, train=list(images)[:2], val=list(images)[2:])
    config = apply_overrides(
        get_preset("voc-cam"),
        {
            "data.root": str(root),
            "data.size": 64,
            "data.batch_size": 2,
            "data.num_workers": 0,
            "data.cache_dir": str(tmp_path / "cache"),
            "model.encoder": "resnet18",
            "model.encoder_weights": None,
            "max_epochs": 1,
            "precision": "fp32",
            "progress": False,
        },
    )
    run_dir = train(config, runs_dir=tmp_path / "runs")
    meta = read_weights_metadata(run_dir / "checkpoints" / "best.safetensors")
    record = Preprocessing.from_metadata(meta, "best")
    assert list(record.class_names) == ["background", *VOC_CLASSES]
    with pytest.warns(UserWarning, match="background"):
        results = evaluate_run(run_dir, progress=False)
    assert {"auroc_dog", "auroc_cat"} <= set(results["auc"]) and "auroc_background" not in results[
        "auc"
    ]
    assert np.isfinite(results["auc"]["auroc_macro"])
    assert not any("background" in key for key in results["loc"])
