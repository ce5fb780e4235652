"""Bring-your-own CSV dataset: label columns, split column or seeded split, NIH-format boxes."""

import numpy as np
import pytest
from PIL import Image

from pylon.data import create_dataset


def make_csv(root, rows=None, boxes=None, header="image,split,Nodule,Mass"):
    (root / "img").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((40, 40), 30 * i, np.uint8)).save(root / "img" / f"{i}.png")
    rows = rows or [
        "img/0.png,train,1,0",
        "img/1.png,train,0,1",
        "img/2.png,train,1,1",
        "img/3.png,val,0,0",
        "img/4.png,test,1,0",
        "img/5.png,test,0,1",
    ]
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    if boxes is not None:
        (root / "boxes.csv").write_text(
            "Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + "\n".join(boxes) + "\n"
        )
    return root


def csvds(root, split="train", **kw):
    kw.setdefault("cache", False)
    kw.setdefault("augment", False)
    return create_dataset("csv", root, split, size=20, **kw)


def test_split_column_labels_and_boxes(tmp_path):
    root = make_csv(tmp_path, boxes=["img/4.png,Nodule,4,8,10,6,,,", "5.png,Mass,0,0,40,40,,,"])
    train = csvds(root)
    assert train.class_names == ["Nodule", "Mass"]
    assert [s["image_id"] for s in (train[i] for i in range(3))] == [
        "img/0.png",
        "img/1.png",
        "img/2.png",
    ]
    np.testing.assert_array_equal(train[2]["labels"].numpy(), [1, 1])
    test = csvds(root, "test", boxes="boxes.csv")
    np.testing.assert_allclose(test[0]["boxes"], [(2, 4, 5, 3, 0)], rtol=1e-5)
    np.testing.assert_allclose(test[1]["boxes"], [(0, 0, 20, 20, 1)], rtol=1e-5)
    pixel = test[1]["image"][0, 0, 0].item() * 0.2483 + 0.4984
    assert abs(pixel - 150 / 255) < 1e-5
    assert len(csvds(root / "labels.csv", "all")) == 6


def test_seeded_split_without_split_column(tmp_path):
    rows = [f"img/{i}.png,{i % 2},{1 - i % 2}" for i in range(6)]
    root = make_csv(tmp_path, rows=rows, header="image,Nodule,Mass")
    parts = [
        {r.image_id for r in csvds(root, s, split_fractions="50/20/30").records}
        for s in ("train", "val", "test")
    ]
    assert [len(p) for p in parts] == [3, 1, 2]
    assert set().union(*parts) == {f"img/{i}.png" for i in range(6)}


def test_bad_inputs_are_named(tmp_path):
    root = make_csv(tmp_path / "a", rows=["img/0.png,train,1,0", "img/1.png,train,2,0"])
    with pytest.raises(
        ValueError, match=r"labels.csv, line 3, column 'Nodule': expected a 0/1 label"
    ):
        csvds(root)
    root = make_csv(tmp_path / "b", header="path,split,Nodule,Mass")
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['image'\]"):
        csvds(root)
    root = make_csv(tmp_path / "c", boxes=["img/0.png,Tumour,1,1,4,4"])
    with pytest.raises(ValueError, match=r"boxes.csv, line 2: unknown class 'Tumour'"):
        csvds(root, boxes="boxes.csv")
    root = make_csv(tmp_path / "d", rows=["img/0.png,train,1,0", "img/9.png,train,0,0"])
    with pytest.raises(FileNotFoundError, match="9.png"):
        csvds(root)
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        csvds(make_csv(tmp_path / "e"), "holdout")


def test_unknown_split_value_is_named(tmp_path):
    rows = ["img/0.png,train,1,0", "img/1.png,trian,0,1", "img/2.png,test,1,1"]
    with pytest.raises(
        ValueError, match=r"labels.csv, line 3, column 'split': unknown split 'trian'"
    ):
        csvds(make_csv(tmp_path, rows=rows), "test")


def test_duplicate_rows_are_named(tmp_path):
    rows = ["img/0.png,train,1,0", "img/1.png,train,0,1", "img/0.png,test,1,1"]
    with pytest.raises(
        ValueError, match=r"labels.csv, line 4.*'img/0.png' is already listed on line 2"
    ):
        csvds(make_csv(tmp_path, rows=rows), "test")


def test_boxes_of_unknown_images_are_named(tmp_path):
    root = make_csv(tmp_path, boxes=["img/4.png,Nodule,4,8,10,6,,,", "img/7.png,Mass,0,0,4,4,,,"])
    with pytest.raises(ValueError, match=r"boxes.csv, line 3: image 'img/7.png' is not listed"):
        csvds(root, "test", boxes="boxes.csv")
    # a box of an image of another split is not an error: it is simply not in this split
    root = make_csv(tmp_path / "b", boxes=["img/0.png,Nodule,4,8,10,6,,,"])
    assert all(csvds(root, "test", boxes="boxes.csv")[i]["boxes"] == [] for i in range(2))
