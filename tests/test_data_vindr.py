"""VinDr-CXR: multi-radiologist train.csv, No finding rows, ratio-scaled boxes, seeded splits."""

import numpy as np
import pytest
from dicom_files import write_dicom

from pylon.data import create_dataset
from pylon.data.dicom import convert_folder
from pylon.data.vindr import VINDR_CLASSES

HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
ROWS = [
    "img0,Nodule/Mass,8,R8,10,20,30,35",
    "img0,Nodule/Mass,8,R9,12,22,31,36",
    "img0,Aortic enlargement,0,R10,40,5,60,25",
    "img1,No finding,14,R1,,,,",
    "img1,No finding,14,R2,,,,",
    "img1,No finding,14,R3,,,,",
    "img2,Pleural effusion,10,R8,0,0,80,100",
] + [f"img{i},No finding,14,R{i},,,," for i in range(3, 10)]


def make_vindr(root, rows=ROWS, convert=True):
    dicoms = root / "train"
    dicoms.mkdir(parents=True)
    for i in range(10):
        pixels = np.random.default_rng(i).integers(0, 4096, (100, 80), dtype=np.uint16)
        write_dicom(dicoms / f"img{i}.dicom", pixels, "MONOCHROME1")  # H 100, W 80 -> PNG 50 x 40
    (root / "train.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    if convert:
        convert_folder(dicoms, root / "train_png", size=50, progress=False)
    return root


def vindr(root, split="all", **kw):
    kw.setdefault("cache", False)
    kw.setdefault("size", 25)
    kw.setdefault("augment", False)
    return create_dataset("vindr", root, split, **kw)


@pytest.mark.parametrize("truncate", [True, False])
def test_labels_union_and_no_finding_class(tmp_path, truncate):
    ds = vindr(make_vindr(tmp_path), truncate_boxes=truncate)
    assert ds.class_names == list(VINDR_CLASSES) and len(ds.class_names) == 15
    by_id = {ds[i]["image_id"]: ds[i] for i in range(len(ds))}
    assert len(by_id) == 10
    expected0 = np.zeros(15, np.float32)
    expected0[[0, 8]] = 1
    np.testing.assert_array_equal(by_id["img0"]["labels"].numpy(), expected0)
    expected1 = np.zeros(15, np.float32)
    expected1[14] = 1
    np.testing.assert_array_equal(by_id["img1"]["labels"].numpy(), expected1)
    assert by_id["img1"]["boxes"] == []
    # PNG is 50 x 40 (ratio 0.5); the eval transform resizes to 25 x 25. The reference truncates
    # x, y, w, h after the ratio (h 7.5 -> 7, w 9.5 -> 9); without truncation they stay exact.
    sx, sy = 25 / 40, 25 / 50
    if truncate:
        scaled = [(5, 10, 10, 7), (6, 11, 9, 7), (20, 2, 10, 10)]
    else:
        scaled = [(5, 10, 10, 7.5), (6, 11, 9.5, 7), (20, 2.5, 10, 10)]
    classes = [8, 8, 0]
    pairs = zip(scaled, classes, strict=True)
    expected = [(x * sx, y * sy, w * sx, h * sy, c) for (x, y, w, h), c in pairs]
    np.testing.assert_allclose(by_id["img0"]["boxes"], expected, rtol=1e-5)
    np.testing.assert_allclose(by_id["img2"]["boxes"], [(0, 0, 25, 25, 10)], rtol=1e-5)


def test_fourteen_classes_without_no_finding(tmp_path):
    ds = vindr(make_vindr(tmp_path), include_no_finding=False)
    assert len(ds.class_names) == 14 and ds[0]["labels"].shape == (14,)


@pytest.mark.parametrize(
    "fractions,sizes", [("70/10/20", (7, 1, 2)), ("50/20/30", (5, 2, 3)), ("10/20/70", (1, 2, 7))]
)
def test_seeded_image_level_splits(tmp_path, fractions, sizes):
    root = make_vindr(tmp_path)
    parts = [
        {r.image_id for r in vindr(root, s, split_fractions=fractions).records}
        for s in ("train", "val", "test")
    ]
    assert tuple(len(p) for p in parts) == sizes
    assert set().union(*parts) == {f"img{i}" for i in range(10)}
    assert sum(len(p) for p in parts) == 10
    assert {r.image_id for r in vindr(root, "test", split_fractions=fractions).records} == parts[2]
    other_seed = [
        {r.image_id for r in vindr(root, s, split_fractions=fractions, seed=1).records}
        for s in ("train", "test")
    ]
    assert other_seed != [parts[0], parts[2]]


def test_unknown_class_and_missing_ratio_are_named(tmp_path):
    root = make_vindr(tmp_path / "a", rows=[*ROWS, "img3,Tumour,15,R1,1,1,5,5"])
    with pytest.raises(ValueError, match=r"train.csv, line 16, column 'class_name'.*'Tumour'"):
        vindr(root)
    root = make_vindr(tmp_path / "b", rows=[*ROWS, "img42,No finding,14,R1,,,,"])
    with pytest.raises(ValueError, match=r"line 16.*'img42'.*ratio CSV"):
        vindr(root)
    root = make_vindr(tmp_path / "c", convert=False)
    with pytest.raises(FileNotFoundError, match="convert-dicom"):
        vindr(root)


def test_box_outside_image_and_missing_column(tmp_path):
    root = make_vindr(tmp_path / "a", rows=[*ROWS, "img3,Nodule/Mass,8,R1,70,90,85,95"])
    with pytest.raises(ValueError, match=r"line 16.*outside the 80x100 image"):
        vindr(root)
    root = make_vindr(tmp_path / "b")
    text = (root / "train.csv").read_text().replace("rad_id,", "").replace(",R", ",")
    (root / "train.csv").write_text(text)
    with pytest.raises(ValueError, match="rad_id"):
        vindr(root)


# --- the reference implementation's files (cmb-chula/pylon data/vin/) ---------------------------

SPLIT_HEADER = "image_id," + ",".join(VINDR_CLASSES)  # 14 findings, then "No finding"


def write_vin_split(folder, version, split, rows):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [SPLIT_HEADER] + [",".join([i, *(str(v) for v in lab)]) for i, lab in rows]
    (folder / f"vin_cls_{version}_{split}.csv").write_text("\n".join(lines) + "\n")


def onehot(*classes):
    vec = [0] * 15
    for c in classes:
        vec[c] = 1
    return vec


def test_reference_split_files_and_versions(tmp_path):
    root = make_vindr(tmp_path / "vin")
    folder = tmp_path / "splits"
    v3 = {
        "train": [("img3", onehot(14)), ("img0", onehot(0, 8)), ("img2", onehot(10))],
        "val": [("img1", onehot(14))],
        "test": [("img4", onehot(5))],  # a label train.csv does not have: the file's is used
    }
    for split, rows in v3.items():
        write_vin_split(folder, "v3", split, rows)
    write_vin_split(folder, "v1", "train", [("img9", onehot(14))])
    for split, rows in v3.items():
        ds = vindr(root, split, split_files=folder)
        assert [r.image_id for r in ds.records] == [i for i, _ in rows]
        for k, (_, labels) in enumerate(rows):
            np.testing.assert_array_equal(ds[k]["labels"].numpy(), labels)
    assert len(vindr(root, "train", split_files=folder)[1]["boxes"]) == 3  # img0's, from train.csv
    assert [
        r.image_id for r in vindr(root, "train", split_files=folder, split_version="v1").records
    ] == ["img9"]
    fourteen = vindr(root, "test", split_files=folder, include_no_finding=False)
    np.testing.assert_array_equal(fourteen[0]["labels"].numpy(), onehot(5)[:14])
    with pytest.raises(FileNotFoundError, match="vin_cls_v2_train.csv"):
        vindr(root, "train", split_files=folder, split_version="v2")
    with pytest.raises(ValueError, match="unknown split_version 'v4'"):
        vindr(root, "train", split_files=folder, split_version="v4")
    with pytest.raises(ValueError, match="split_version"):
        vindr(root, "train", split_version="v1")


def test_reference_split_file_naming_a_missing_image(tmp_path):
    root = make_vindr(tmp_path / "vin")
    write_vin_split(tmp_path / "s", "v3", "train", [("img0", onehot(0)), ("nope", onehot(14))])
    with pytest.raises(ValueError, match=r"vin_cls_v3_train.csv, line 3: image 'nope'"):
        vindr(root, "train", split_files=tmp_path / "s")
    (root / "train_png" / "img0.png").unlink()
    write_vin_split(tmp_path / "t", "v3", "train", [("img0", onehot(0))])
    with pytest.raises(FileNotFoundError, match=r"vin_cls_v3_train.csv, line 2: image 'img0'"):
        vindr(root, "train", split_files=tmp_path / "t")


def test_reference_ratio_file_gives_the_same_boxes(tmp_path):
    ours = vindr(make_vindr(tmp_path / "a"))
    root = make_vindr(tmp_path / "b", convert=False)
    convert_folder(root / "train", root / "images", size=50, progress=False)
    (root / "images" / "ratios.csv").unlink()
    # as the reference's scripts/convert_dcm_to_png.py writes it: <png folder>_ratio.csv
    rows = "\n".join(f"img{i},0.5" for i in range(10))
    (root / "images_ratio.csv").write_text(f"image_id,resize_ratio\n{rows}\n")
    theirs = vindr(root, images_dir="images")
    assert [r.image_id for r in theirs.records] == [r.image_id for r in ours.records]
    for a, b in zip(ours.records, theirs.records, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-9)
    assert sum(len(r.boxes) for r in theirs.records) == 4
    (root / "images_ratio.csv").write_text("image_id,scale\nimg0,0.5\n")
    with pytest.raises(ValueError, match="resize_ratio"):
        vindr(root, images_dir="images")
    with pytest.raises(FileNotFoundError, match="ratio_file"):
        vindr(root, images_dir="images", ratio_file="elsewhere.csv")
