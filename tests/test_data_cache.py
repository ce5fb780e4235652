"""Resized-image cache: same pixels as decode + resize, reused when unchanged, rebuilt on change."""

import os
import pickle

import cv2
import numpy as np
from PIL import Image

from pylon.data.cache import ImageCache


def _write(folder, n, seed=0, shape=(50, 70)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _open(paths, cache_dir, **kw):
    return ImageCache.open_or_build(
        "test",
        [p.stem for p in paths],
        paths,
        size=kw.pop("size", 32),
        channels=1,
        interpolation=cv2.INTER_AREA,
        cache_dir=cache_dir,
        progress=False,
        **kw,
    )


def test_cache_pixels_equal_decode_then_resize(tmp_path):
    paths = _write(tmp_path / "img", 5)
    cache = _open(paths, tmp_path / "cache")
    assert len(cache) == 5
    for i, path in enumerate(paths):
        reference = cv2.resize(np.asarray(Image.open(path)), (32, 32), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(cache[i][:, :, 0], reference)
        assert tuple(cache.original_sizes[i]) == (50, 70)


def test_cache_built_with_workers_is_identical(tmp_path):
    paths = _write(tmp_path / "img", 70)  # more than one chunk
    serial = _open(paths, tmp_path / "a", workers=0)
    parallel = _open(paths, tmp_path / "b", workers=2)
    for i in (0, 63, 64, 69):
        np.testing.assert_array_equal(serial[i], parallel[i])


def test_cache_reused_then_rebuilt_when_sources_change(tmp_path):
    paths = _write(tmp_path / "img", 4)
    cache_dir = tmp_path / "cache"
    first = _open(paths, cache_dir)
    (array,) = cache_dir.glob("*.npy")
    stamp = array.stat().st_mtime_ns
    again = _open(paths, cache_dir)
    assert again.array_path == first.array_path and array.stat().st_mtime_ns == stamp

    more = paths + _write(tmp_path / "extra", 1, seed=1)
    assert _open(more, cache_dir).array_path != first.array_path

    Image.fromarray(np.full((50, 70), 7, np.uint8)).save(paths[0])
    os.utime(paths[0], ns=(stamp + 10**9, stamp + 10**9))
    changed = _open(paths, cache_dir)
    assert changed.array_path != first.array_path
    np.testing.assert_array_equal(changed[0], np.full((32, 32, 1), 7, np.uint8))
    assert len(list(cache_dir.glob("*.tmp"))) == 0


def test_cache_pickles_without_its_memmap(tmp_path):
    paths = _write(tmp_path / "img", 2)
    cache = _open(paths, tmp_path / "cache")
    _ = cache[0]
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._array is None
    np.testing.assert_array_equal(clone[1], cache[1])
