"""Reopening a cached split (issue 12.3): one stat per source file and no symlink resolution,
vectorised table lookups, the same cache key as before, and a changed source file still rebuilds."""

import gc
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_nih import ENTRIES, make_nih

from pylon.data import create_dataset
from pylon.data.base import child_paths
from pylon.data.cache import gc_paused, source_hash, stat_sources
from pylon.data.tables import check_ids


def _cached(root, cache_dir, split="train"):
    return create_dataset(
        "nih14", root, split, size=32, cache_dir=cache_dir, progress=False, val_fraction=0.3
    )


def test_reopen_stats_each_source_once_and_resolves_nothing(tmp_path, monkeypatch):
    root = make_nih(tmp_path / "nih")
    first = _cached(root, tmp_path / "cache")
    images = os.fspath(root / "images")
    stats = []
    real_stat = os.stat

    def counting_stat(path, *args, **kwargs):
        if os.fspath(path).startswith(images):
            stats.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    def no_resolve(*args, **kwargs):
        raise AssertionError("a source path was resolved")

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(os.path, "realpath", no_resolve)
    monkeypatch.setattr(Path, "resolve", no_resolve)
    again = _cached(root, tmp_path / "cache")
    assert again.cache.array_path == first.cache.array_path
    assert sorted(stats) == sorted(os.fspath(r.path) for r in again.records)  # once each


def test_changed_source_file_rebuilds_the_datasets_cache(tmp_path):
    root = make_nih(tmp_path / "nih")
    first = _cached(root, tmp_path / "cache", "test")
    path = first.records[0].path
    stamp = path.stat().st_mtime_ns
    Image.fromarray(np.full((64, 64), 9, np.uint8)).save(path)
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    changed = _cached(root, tmp_path / "cache", "test")
    assert changed.cache.array_path != first.cache.array_path
    np.testing.assert_array_equal(changed.load(0)[0], np.full((32, 32, 1), 9, np.uint8))


def test_cache_key_is_unchanged_from_the_per_file_abspath_formula(tmp_path):
    """Caches built before the faster stat pass keep their key (no rebuild after upgrading)."""
    folder = tmp_path / "img"
    folder.mkdir()
    for name in ("a.png", ".hidden.png", "b.png"):
        (folder / name).write_bytes(name.encode())
    inputs = [
        folder / "a.png",
        folder / ".hidden.png",
        os.fspath(folder) + "//b.png",
        os.fspath(folder / "sub" / ".." / "a.png"),
        os.path.relpath(folder / "b.png"),
    ]
    (folder / "sub").mkdir()
    lines = []
    for path in inputs:
        name = os.path.abspath(path)
        info = os.stat(name)
        lines.append(f"{name}\t{info.st_size}\t{info.st_mtime_ns}")
    legacy = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert source_hash(inputs) == legacy
    assert stat_sources(inputs) == (legacy, [])


def test_stat_sources_reports_missing_files_and_folders(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    digest, missing = stat_sources([tmp_path / "a.png", tmp_path / "gone.png", tmp_path / "folder"])
    assert missing == [1, 2]
    with pytest.raises(FileNotFoundError, match=r"2 image file\(s\) not found.*gone.png"):
        source_hash([tmp_path / "a.png", tmp_path / "gone.png", tmp_path / "folder"])


@pytest.mark.parametrize(
    "names",
    [
        ["a.png", "00000001_000.png", ".hidden"],
        ["sub/a.png", "b.png"],  # a separator: parsed as `/` parses it
        ["a.png", ".."],
        ["a.png", "."],
        [],
    ],
)
def test_child_paths_equal_joining(tmp_path, names):
    paths = child_paths(tmp_path, names)
    expected = [tmp_path / n for n in names]
    assert paths == expected
    assert [str(p) for p in paths] == [str(p) for p in expected]
    assert [p.parts for p in paths] == [p.parts for p in expected]
    assert [p.name for p in paths] == [p.name for p in expected]
    assert all(type(p) is type(tmp_path) for p in paths)


def test_gc_paused_restores_the_collector_state():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), gc_paused():
        raise KeyError("x")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_check_ids_fast_path_gives_the_same_ids_and_the_same_errors(tmp_path):
    ids = [f"{i:08d}_000.png" for i in range(1000)]
    assert check_ids(ids, tmp_path / "t.csv", "Image Index") == ids
    for bad, message in [
        (ids[:5] + [""], "line 7.*empty image name"),
        (ids[:5] + [float("nan")], "line 7.*empty image name"),
        (ids[:5] + [" x.png"], "line 7.*leading or trailing spaces"),
        (ids[:5] + [ids[2]], "line 7.*already listed on line 4"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_ids(bad, tmp_path / "t.csv", "Image Index")


def test_patient_ids_and_labels_follow_the_records(tmp_path):
    root = make_nih(tmp_path / "nih")
    table = {name: (labels, str(patient)) for name, labels, patient in ENTRIES}
    for split in ("train", "val", "test", "bbox"):
        data = create_dataset("nih14", root, split, size=32, cache=False, val_fraction=0.3)
        assert data.patient_ids == [table[r.image_id][1] for r in data.records]
        for record in data.records:
            text = table[record.image_id][0]
            names = [] if text == "No Finding" else text.split("|")
            assert [data.class_names[i] for i in np.flatnonzero(record.labels)] == sorted(
                names, key=data.class_names.index
            )
