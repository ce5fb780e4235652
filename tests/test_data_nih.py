"""NIH ChestX-ray14 in its official layout: labels, patient-wise splits, boxes, cache, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pylon.data import collate, create_dataset
from pylon.data.nih import NIH14_CLASSES

ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
# (image, labels, patient); patients 1..6, several images each.
ENTRIES = [
    ("00000001_000.png", "Cardiomegaly", 1),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1),
    ("00000002_000.png", "No Finding", 2),
    ("00000003_000.png", "Hernia", 3),
    ("00000003_001.png", "Infiltration|Effusion", 3),
    ("00000004_000.png", "Mass|Nodule|Pleural_Thickening", 4),
    ("00000005_000.png", "No Finding", 5),
    ("00000005_001.png", "Atelectasis", 5),
    ("00000006_000.png", "Pneumothorax", 6),
    ("00000007_000.png", "Infiltration", 7),
    ("00000008_000.png", "Atelectasis|Infiltration", 8),
]
TEST_IMAGES = ["00000007_000.png", "00000008_000.png"]
BOX_ROWS = [
    "00000007_000.png,Infiltrate,10.5,12.25,20,16,,,",
    "00000008_000.png,Atelectasis,0,4,30,20,,,",
    "00000008_000.png,Infiltrate,40,40,24,24,,,",
]
SIDE = 64


def make_nih(root, entries=ENTRIES, box_rows=BOX_ROWS, test=TEST_IMAGES):
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, (name, _, _) in enumerate(entries):
        pixels = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
        if k == 1:  # RGBA, gray replicated, as some official PNGs are
            Image.fromarray(np.dstack([pixels] * 3 + [np.full_like(pixels, 255)]), "RGBA").save(
                images / name
            )
        elif k == 2:  # 16-bit
            Image.fromarray(pixels.astype(np.uint16) * 257).save(images / name)
        else:
            Image.fromarray(pixels).save(images / name)
    lines = [ENTRY_HEADER] + [
        f"{n},{lab},0,{p},50,M,PA,2500,2048,0.143,0.143," for n, lab, p in entries
    ]
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    names = [n for n, _, _ in entries]
    (root / "train_val_list.txt").write_text("\n".join(n for n in names if n not in test) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    box_text = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + "\n".join(box_rows) + "\n"
    (root / "BBox_List_2017.csv").write_text(box_text)
    return root


def expected_labels(text):
    vec = np.zeros(len(NIH14_CLASSES), np.float32)
    if text != "No Finding":
        for name in text.split("|"):
            vec[NIH14_CLASSES.index(name)] = 1
    return vec


def nih(root, split, **kw):
    kw.setdefault("cache", False)
    kw.setdefault("size", 32)
    return create_dataset("nih14", root, split, **kw)


def test_labels_and_official_test_split(tmp_path):
    root = make_nih(tmp_path)
    ds = nih(root, "test")
    assert ds.class_names == list(NIH14_CLASSES) and ds.in_channels == 1
    assert [ds[i]["image_id"] for i in range(len(ds))] == TEST_IMAGES
    table = {n: lab for n, lab, _ in ENTRIES}
    for part in ("train", "val", "test"):
        ds = nih(root, part)
        for i in range(len(ds)):
            sample = ds[i]
            np.testing.assert_array_equal(
                sample["labels"].numpy(), expected_labels(table[sample["image_id"]])
            )
            assert sample["image"].shape == (1, 32, 32)


def test_val_split_is_patient_wise_and_reproducible(tmp_path):
    root = make_nih(tmp_path)
    train, val = nih(root, "train", val_fraction=0.34), nih(root, "val", val_fraction=0.34)
    patient = {n: p for n, _, p in ENTRIES}
    train_ids = {r.image_id for r in train.records}
    val_ids = {r.image_id for r in val.records}
    official = {n for n, _, _ in ENTRIES} - set(TEST_IMAGES)
    assert train_ids | val_ids == official and not train_ids & val_ids
    assert not {patient[n] for n in train_ids} & {patient[n] for n in val_ids}
    assert len({patient[n] for n in val_ids}) == 2  # 34 % of the 6 train_val patients
    again = nih(root, "val", val_fraction=0.34)
    assert {r.image_id for r in again.records} == val_ids


def test_bbox_split_maps_infiltrate_and_scales_boxes(tmp_path):
    root = make_nih(tmp_path)
    ds = nih(root, "bbox", size=32)
    assert [r.image_id for r in ds.records] == TEST_IMAGES
    s = 32 / SIDE
    infiltration, atelectasis = (
        NIH14_CLASSES.index("Infiltration"),
        NIH14_CLASSES.index("Atelectasis"),
    )
    np.testing.assert_allclose(
        ds[0]["boxes"], [(10.5 * s, 12.25 * s, 20 * s, 16 * s, infiltration)], rtol=1e-5
    )
    np.testing.assert_allclose(
        ds[1]["boxes"],
        [(0, 4 * s, 30 * s, 20 * s, atelectasis), (40 * s, 40 * s, 24 * s, 24 * s, infiltration)],
        rtol=1e-5,
    )
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate)))
    assert batch["image"].shape == (2, 1, 32, 32) and len(batch["boxes"][1]) == 2


def test_rgba_and_16bit_pngs_decode_to_the_same_gray(tmp_path):
    root = make_nih(tmp_path)
    ds = nih(root, "train", val_fraction=0.01, size=SIDE, augment=False)
    rng = np.random.default_rng(0)
    originals = [rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8) for _ in ENTRIES]
    index = {r.image_id: i for i, r in enumerate(ds.records)}
    for k in (1, 2):
        image = ds[index[ENTRIES[k][0]]]["image"][0].numpy()
        np.testing.assert_allclose(image * 0.2483 + 0.4984, originals[k] / 255.0, atol=1e-5)


def test_cache_matches_direct_decoding(tmp_path):
    root = make_nih(tmp_path / "nih")
    direct = nih(root, "train", val_fraction=0.2, augment=False)
    cached = nih(
        root,
        "train",
        val_fraction=0.2,
        augment=False,
        cache=True,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    for i in range(len(direct)):
        a, b = direct[i], cached[i]
        assert a["image_id"] == b["image_id"]
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=1e-6)
    boxes_direct, boxes_cached = (
        nih(root, "bbox"),
        nih(root, "bbox", cache=True, cache_dir=tmp_path / "c2"),
    )
    for i in range(len(boxes_direct)):
        np.testing.assert_allclose(boxes_direct[i]["boxes"], boxes_cached[i]["boxes"], rtol=1e-6)


def test_missing_image_is_named(tmp_path):
    root = make_nih(tmp_path)
    (root / "images" / "00000005_001.png").unlink()
    with pytest.raises(FileNotFoundError, match="00000005_001.png"):
        nih(root, "train", val_fraction=0.01)


def test_unreadable_image_is_named_when_caching(tmp_path):
    root = make_nih(tmp_path)
    (root / "images" / "00000007_000.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match="00000007_000.png"):
        nih(root, "test", cache=True, cache_dir=tmp_path / "cache", progress=False)


def test_missing_column_is_named(tmp_path):
    root = make_nih(tmp_path)
    path = root / "Data_Entry_2017.csv"
    path.write_text(path.read_text().replace("Patient ID", "Patient"))
    with pytest.raises(ValueError, match="Patient ID"):
        nih(root, "train")


def test_unknown_class_names_row(tmp_path):
    entries = [*ENTRIES[:-1], ("00000008_000.png", "Atelectasis|Flu", 8)]
    root = make_nih(tmp_path, entries=entries)
    with pytest.raises(ValueError, match=r"line 12.*'Flu'"):
        nih(root, "test")
    root2 = make_nih(tmp_path / "b", box_rows=["00000007_000.png,Tumour,1,1,5,5,,,"])
    with pytest.raises(ValueError, match=r"BBox_List_2017.csv, line 2.*'Tumour'"):
        nih(root2, "test")


def test_box_outside_image_is_named(tmp_path):
    root = make_nih(tmp_path, box_rows=BOX_ROWS + ["00000007_000.png,Mass,50,50,30,10,,,"])
    with pytest.raises(ValueError, match=r"line 5 \(00000007_000.png\).*outside the 64x64 image"):
        nih(root, "bbox")


def test_empty_split_is_an_error(tmp_path):
    root = make_nih(tmp_path, test=[])
    with pytest.raises(ValueError, match="split 'test' contains no images"):
        nih(root, "test")


# --- the reference implementation's split files (cmb-chula/pylon data/nih14/) -------------------

SPLIT_HEADER = "Image Index," + ",".join(NIH14_CLASSES)


def label_row(name, labels):
    return ",".join([name, *(str(int(v)) for v in labels)])


def write_split_files(folder, parts):
    """``parts``: split -> [(name, 14 labels)]; bbox_only.csv gets the unnamed index column."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train": "original_split_train.csv", "val": "original_split_val.csv"}
    files |= {"test": "original_split_test.csv"}
    for split, rows in parts.items():
        if split == "bbox":
            lines = ["," + SPLIT_HEADER] + [
                f"{10 * k + 3},{label_row(n, lab)}" for k, (n, lab) in enumerate(rows)
            ]
            (folder / "bbox_only.csv").write_text("\n".join(lines) + "\n")
        else:
            lines = [SPLIT_HEADER] + [label_row(n, lab) for n, lab in rows]
            (folder / files[split]).write_text("\n".join(lines) + "\n")
    return folder


def test_reference_split_files_give_the_split_and_its_labels(tmp_path):
    root = make_nih(tmp_path / "nih")
    table = {n: expected_labels(lab) for n, lab, _ in ENTRIES}
    # val shares patient 1 with train, as the reference's val does; labels differ from the
    # Data_Entry file on purpose so the test shows which one is read.
    odd = np.zeros(14, np.float32)
    odd[NIH14_CLASSES.index("Hernia")] = 1
    parts = {
        "train": [("00000001_000.png", odd), ("00000002_000.png", table["00000002_000.png"])],
        "val": [("00000001_001.png", table["00000001_001.png"])],
        "test": [(n, table[n]) for n in TEST_IMAGES],
        "bbox": [(n, table[n]) for n in reversed(TEST_IMAGES)],
    }
    folder = write_split_files(tmp_path / "splits", parts)
    for split, rows in parts.items():
        ds = nih(root, split, split_files=folder)
        assert [r.image_id for r in ds.records] == [n for n, _ in rows]
        for i, (_, labels) in enumerate(rows):
            np.testing.assert_array_equal(ds[i]["labels"].numpy(), labels)
    bbox = nih(root, "bbox", split_files=folder)
    assert len(bbox[1]["boxes"]) == 1 and len(bbox[0]["boxes"]) == 2  # from BBox_List_2017.csv
    # a folder relative to root works too
    assert len(nih(root, "val", split_files="../splits")) == 1


def test_reference_split_file_naming_a_missing_image(tmp_path):
    root = make_nih(tmp_path / "nih")
    zeros = np.zeros(14)
    folder = write_split_files(
        tmp_path / "s", {"train": [("00000001_000.png", zeros), ("99999999_000.png", zeros)]}
    )
    with pytest.raises(ValueError, match=r"original_split_train.csv, line 3.*'99999999_000.png'"):
        nih(root, "train", split_files=folder)
    (root / "images" / "00000001_000.png").unlink()
    folder = write_split_files(tmp_path / "t", {"train": [("00000001_000.png", zeros)]})
    with pytest.raises(FileNotFoundError, match=r"original_split_train.csv, line 2.*00000001_000"):
        nih(root, "train", split_files=folder)
    with pytest.raises(FileNotFoundError, match="original_split_val.csv"):
        nih(root, "val", split_files=folder)
    with pytest.raises(FileNotFoundError, match=r"original_split_test.csv.*keeps it in data/"):
        nih(root, "test", split_files=folder)
    with pytest.raises(FileNotFoundError, match="split_files folder nowhere not found"):
        nih(root, "val", split_files="nowhere")


# --- bad list and box files (issue 11.13) -------------------------------------------------------


def test_byte_order_mark_in_list_files_is_stripped(tmp_path):
    root = make_nih(tmp_path)
    for name in ("test_list.txt", "train_val_list.txt"):
        path = root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert [r.image_id for r in nih(root, "test").records] == TEST_IMAGES
    assert len(nih(root, "train")) + len(nih(root, "val")) == len(ENTRIES) - len(TEST_IMAGES)


def test_image_in_train_val_and_test_lists_is_leakage(tmp_path):
    root = make_nih(tmp_path)
    path = root / "train_val_list.txt"
    path.write_text(path.read_text() + "00000008_000.png\n")
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=r"'00000008_000.png' is listed in both"):
            nih(root, split)


def test_image_index_with_stray_spaces_blames_the_csv_row(tmp_path):
    entries = [*ENTRIES[:3], (" 00000003_000.png", "Hernia", 3), *ENTRIES[4:]]
    root = tmp_path
    make_nih(root, entries=entries)
    (root / "images" / " 00000003_000.png").rename(root / "images" / "00000003_000.png")
    with pytest.raises(ValueError, match=r"Data_Entry_2017.csv, line 5, column 'Image Index'"):
        nih(root, "test")


def test_duplicate_box_rows_are_kept_once_with_a_warning(tmp_path):
    root = make_nih(tmp_path, box_rows=[*BOX_ROWS, BOX_ROWS[1]])
    with pytest.warns(UserWarning, match=r"line 5: duplicate of the box on line 3"):
        ds = nih(root, "bbox")
    assert [len(r.boxes) for r in ds.records] == [1, 2]


def test_read_picked_accepts_the_reference_files(tmp_path):
    from pylon.data import read_picked

    write_split_files(tmp_path, {"bbox": [("b.png", np.zeros(14)), ("a.png", np.ones(14))]})
    (tmp_path / "bbox_only.csv").rename(tmp_path / "picked.csv")  # the same format
    assert read_picked(tmp_path / "picked.csv") == ["b.png", "a.png"]
    vin = tmp_path / "v1_picked.csv"
    vin.write_text("image_id,Aortic enlargement,No finding\nabc,1,0\ndef,0,1\n")
    assert read_picked(vin) == ["abc", "def"]
    vin.write_text("name,Aortic enlargement\nabc,1\n")
    with pytest.raises(ValueError, match="'Image Index' or 'image_id'"):
        read_picked(vin)
