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
    assert clone._fd is None
    np.testing.assert_array_equal(clone[1], cache[1])


def test_free_space_refusal_names_sizes_and_how_to_move(tmp_path, monkeypatch):
    import collections
    import shutil

    import pytest

    from pylon.data.cache import CacheSpaceError

    paths = _write(tmp_path / "img", 3)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**12, 10**12 - 10**6, 10**6))
    cache_dir = tmp_path / "cache"
    with pytest.raises(CacheSpaceError) as err:
        _open(paths, cache_dir, size=512)  # needs 3 x 512 x 512 bytes + reserve > 1 MB
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert "test" in message and str(cache_dir) in message
    # pixels + 4096 header bytes + index (ids as JSON, 16 chars per size, 1 KiB of fields)
    index = len('["img0", "img1", "img2"]') + 3 * 16 + 1024
    assert f"{(3 * 512 * 512 + 4096 + index) / 1024:.1f} KiB" in message  # 773.1 KiB
    assert "free" in message and "976.6 KiB" in message  # 10**6 bytes
    assert "plus 512.0 MiB pylon leaves free" in message  # the reserve is said
    assert "PYLON_CACHE" in message and "data.cache_dir" in message
    assert list(cache_dir.iterdir()) == []  # nothing written
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**12, 0, 10**12))
    assert len(_open(paths, cache_dir, size=512)) == 3


def _run(code, env=None, **kw):
    import subprocess
    import sys

    if "stdout" not in kw:
        kw["capture_output"] = True
    return subprocess.run(
        [sys.executable, "-c", code],
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        **kw,
    )


def test_build_reports_progress_lines_in_a_log_file(tmp_path):
    import textwrap

    paths = _write(tmp_path / "img", 600, shape=(8, 8))
    log = tmp_path / "build.log"
    code = textwrap.dedent(
        f"""
        import cv2
        from pathlib import Path
        from pylon.data.cache import ImageCache
        paths = sorted(Path({str(tmp_path / "img")!r}).glob("*.png"))
        ImageCache.open_or_build("demo", [p.stem for p in paths], paths, size=32, channels=1,
            interpolation=cv2.INTER_AREA, cache_dir={str(tmp_path / "c")!r}, workers=0,
            split="train")
        """
    )
    with open(log, "w") as fh:  # output to a file, as under sbatch or nohup
        out = _run(code, env={"PYLON_PROGRESS": "auto"}, stdout=fh, stderr=fh)
    assert out.returncode == 0, log.read_text()
    lines = log.read_text().splitlines()
    assert lines[0].startswith("caching demo train: 600 images at 32 px -> ")
    ids = ", ".join(f'"{p.stem}"' for p in sorted(paths))
    expected = 600 * 32 * 32 + 4096 + len(f"[{ids}]") + 600 * 16 + 1024  # pixels, header, index
    assert str(tmp_path / "c") in lines[0] and f"{expected / 1024:.1f} KiB" in lines[0]
    assert "free there" in lines[0]
    counts = [line for line in lines if line.startswith("caching demo train: ") and "/600" in line]
    assert any("ETA" in line and "img/s" in line for line in counts), lines
    assert counts[-1].startswith("caching demo train: 600/600 (100%)")
    assert len(paths) == 600


def test_building_and_reading_keep_memory_bounded(tmp_path):
    import textwrap

    _write(tmp_path / "img", 3000, shape=(16, 16))
    # 3000 images cached at 256 px: a 197 MB array. The build must stream it and reads must not
    # map it, so the process's peak RSS grows by far less than the cache.
    code = textwrap.dedent(
        f"""
        import resource, cv2
        from pathlib import Path
        from pylon.data.cache import ImageCache
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        paths = sorted(Path({str(tmp_path / "img")!r}).glob("*.png"))
        before = peak()
        cache = ImageCache.open_or_build("big", [p.stem for p in paths], paths, size=256,
            channels=1, interpolation=cv2.INTER_LINEAR, cache_dir={str(tmp_path / "c")!r},
            workers=0, progress=False)
        built = peak()
        total = sum(int(cache[i][0, 0, 0]) for i in range(len(cache)))
        print(cache.image_bytes * len(cache), built - before, peak() - before)
        """
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    cache_bytes, build_growth, read_growth = (int(v) for v in out.stdout.split())
    assert cache_bytes == 3000 * 256 * 256
    assert build_growth < 0.4 * cache_bytes, (build_growth, cache_bytes)
    assert read_growth < 0.4 * cache_bytes, (read_growth, cache_bytes)


def test_truncated_cache_is_rebuilt(tmp_path):
    paths = _write(tmp_path / "img", 3)
    cache_dir = tmp_path / "cache"
    first = _open(paths, cache_dir)
    with open(first.array_path, "r+b") as fh:
        fh.truncate(first.offset + first.image_bytes)  # as a full disk would leave it
    again = _open(paths, cache_dir)
    reference = cv2.resize(np.asarray(Image.open(paths[2])), (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(again[2][:, :, 0], reference)


def test_too_large_source_image_is_named(tmp_path):
    import pytest
    from test_data_images import write_huge_png

    from pylon.data.images import ImageTooLargeError

    paths = _write(tmp_path / "img", 2)
    paths.append(write_huge_png(tmp_path / "img" / "huge.png", side=11000))
    with pytest.raises(ImageTooLargeError, match="huge.png"):
        _open(paths, tmp_path / "cache", workers=0)


def test_cache_list_and_clear_commands(tmp_path):
    from typer.testing import CliRunner

    from pylon.cli.main import app

    cache_dir = tmp_path / "cache"
    paths = _write(tmp_path / "img", 4)
    ImageCache.open_or_build(
        "alpha",
        ["a"] * 4,
        paths,
        size=16,
        channels=1,
        interpolation=cv2.INTER_AREA,
        cache_dir=cache_dir,
        progress=False,
        split="train",
    )
    ImageCache.open_or_build(
        "beta",
        ["b"] * 4,
        paths,
        size=8,
        channels=1,
        interpolation=cv2.INTER_AREA,
        cache_dir=cache_dir,
        progress=False,
        split="val",
    )
    # an interrupted build of a version that wrote the index last: recognised by its name
    stale = cache_dir / ".gamma-train-16px-1ch-area-0123456789abcdef.npy.ab_12xyz.tmp"
    stale.write_bytes(b"\0" * 100)
    runner = CliRunner()
    listed = runner.invoke(app, ["cache", "list", "--cache-dir", str(cache_dir)])
    assert listed.exit_code == 0, listed.output
    assert "alpha" in listed.output and "beta" in listed.output and "train" in listed.output
    assert "incomplete" in listed.output and "3 cache(s)" in listed.output
    removed = runner.invoke(
        app, ["cache", "clear", "--cache-dir", str(cache_dir), "--dataset", "alpha", "--yes"]
    )
    assert removed.exit_code == 0, removed.output
    left = sorted(p.name for p in cache_dir.iterdir())
    assert not any(name.startswith("alpha") for name in left)
    assert any(name.startswith("beta") for name in left)
    refused = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir)], input="n\n")
    assert refused.exit_code == 1 and len(list(cache_dir.iterdir())) == len(left)
    runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir), "-y"])
    assert list(cache_dir.iterdir()) == []
    empty = runner.invoke(app, ["cache", "list", "--cache-dir", str(cache_dir)])
    assert "no caches" in empty.output


def test_fit_layout_keeps_each_shape_and_never_up_samples(tmp_path):
    paths = _write(tmp_path / "img", 3)  # 50 x 70
    small = _open(paths, tmp_path / "small", layout="fit")
    large = _open(paths, tmp_path / "large", layout="fit", size=128)
    assert small.array_path != _open(paths, tmp_path / "small").array_path  # layouts apart
    for i, path in enumerate(paths):
        original = np.asarray(Image.open(path))
        # longer side 70 -> 32: 50 * 32 / 70 = 22.9 -> 23 rows
        want = cv2.resize(original, (32, 23), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(small[i][:, :, 0], want)
        np.testing.assert_array_equal(large[i][:, :, 0], original)  # smaller than 128: as is
    reopened = _open(paths, tmp_path / "large", layout="fit", size=128)
    np.testing.assert_array_equal(reopened[2][:, :, 0], np.asarray(Image.open(paths[2])))


def _boxed_csv(root, shape=(40, 64)):
    """A CSV dataset of non-square images with a box each (the NIH box format)."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows, boxes = ["image,Nodule"], ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,1")
        boxes.append(f"{i}.png,Nodule,{8 + 4 * i},10,12,9,,,")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "boxes.csv").write_text("\n".join(boxes) + "\n")
    return root


def test_training_augmentation_sees_the_original_shape(tmp_path):
    """The reference rotates and crops the original image; a cache that keeps the image's shape
    (here at full size) gives exactly the same augmented samples, seed for seed."""
    from pylon.data import create_dataset

    root = _boxed_csv(tmp_path / "data")
    options = dict(split="all", size=32, augment=True, boxes="boxes.csv", progress=False)
    direct = create_dataset("csv", root, cache=False, **options)
    cached = create_dataset(
        "csv", root, cache=True, cache_dir=tmp_path / "c", cache_size=64, **options
    )
    for seed in range(6):
        for i in range(len(direct)):
            direct.transform.set_random_seed(seed)
            cached.transform.set_random_seed(seed)
            a, b = direct[i], cached[i]
            np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
            np.testing.assert_allclose(a["boxes"], b["boxes"], rtol=1e-6)


def test_evaluation_pixels_equal_decoding_whatever_the_cache_size(tmp_path):
    """Evaluation images are resized once, from the original, as the reference does; a larger
    ``cache_size`` (sharper training crops) must not add a second resize."""
    from pylon.data import create_dataset

    root = _boxed_csv(tmp_path / "data", shape=(100, 90))
    options = dict(split="all", size=32, augment=False, boxes="boxes.csv", progress=False)
    direct = create_dataset("csv", root, cache=False, **options)
    cached = create_dataset(
        "csv", root, cache=True, cache_dir=tmp_path / "c", cache_size=64, **options
    )
    for i in range(len(direct)):
        np.testing.assert_array_equal(direct[i]["image"].numpy(), cached[i]["image"].numpy())
        np.testing.assert_allclose(direct[i]["boxes"], cached[i]["boxes"], rtol=1e-6)


def _user_files(folder):
    """Files a user keeps in a shared cache folder, two of them named like a cache."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "my_features.npy", np.arange(10))
    (folder / "my_features.json").write_text('{"name": "mine", "version": 2}')
    np.save(folder / "feat-32px-1ch-area-0123456789abcdef.npy", np.zeros(3))
    (folder / "feat-32px-1ch-area-0123456789abcdef.json").write_text('{"source_hash": "ff"}')
    (folder / ".notes.npy.abcd1234.tmp").write_text("mine")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_list_and_clear_touch_only_pylons_files(tmp_path):
    from typer.testing import CliRunner

    from pylon.cli.main import app

    cache_dir = tmp_path / "shared"
    mine = _user_files(cache_dir)
    cache = _open(_write(tmp_path / "img", 3), cache_dir)
    runner = CliRunner()
    listed = runner.invoke(app, ["cache", "list", "--cache-dir", str(cache_dir)])
    assert listed.exit_code == 0, listed.output
    assert "1 cache(s)" in listed.output and "incomplete" not in listed.output
    assert "my_features" not in listed.output and "feat-" not in listed.output
    cleared = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir), "-y"])
    assert cleared.exit_code == 0 and "removed 1 cache(s)" in cleared.output
    assert not cache.array_path.exists()
    assert {p.name: p.read_bytes() for p in cache_dir.iterdir()} == mine


def test_killed_build_is_listed_and_cleared_but_a_running_one_is_left_alone(tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    from typer.testing import CliRunner

    from pylon.cli.main import app

    _write(tmp_path / "img", 4, shape=(8, 8))
    cache_dir, flag = tmp_path / "cache", tmp_path / "started"
    mine = _user_files(cache_dir)
    code = textwrap.dedent(
        f"""
        import time, cv2
        from pathlib import Path
        import pylon.data.cache as cache
        cache.BUFFER_BYTES = 8 * 8  # one image per chunk
        resize = cache._resize_many
        def slow(args):
            if args[0][0].stem == "img2":  # two images written, then stuck
                Path({str(flag)!r}).write_text("x")
                time.sleep(120)
            return resize(args)
        cache._resize_many = slow
        paths = sorted(Path({str(tmp_path / "img")!r}).glob("*.png"))
        cache.ImageCache.open_or_build("gamma", [p.stem for p in paths], paths, size=8,
            channels=1, interpolation=cv2.INTER_AREA, cache_dir={str(cache_dir)!r}, workers=0,
            progress=False, split="train")
        """
    )
    build = subprocess.Popen([sys.executable, "-c", code])
    try:
        for _ in range(600):
            if flag.exists() or build.poll() is not None:
                break
            time.sleep(0.1)
        assert flag.exists()
        runner = CliRunner()
        listed = runner.invoke(app, ["cache", "list", "--cache-dir", str(cache_dir)])
        assert f"gamma train: being built (pid {build.pid})" in listed.output, listed.output
        cleared = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir), "-y"])
        assert "left alone: gamma train is being built" in cleared.output, cleared.output
        assert len(list(cache_dir.iterdir())) == len(mine) + 2  # its index and temp array
    finally:
        build.send_signal(signal.SIGKILL)  # as the OOM killer or a cluster's time limit does
        build.wait()
    leftovers = sorted(p.name for p in cache_dir.iterdir() if p.name not in mine)
    assert len(leftovers) == 2 and leftovers[0].startswith(".gamma-train-8px-1ch-area-")
    assert leftovers[0].endswith(".tmp") and leftovers[1].endswith(".json")
    listed = runner.invoke(app, ["cache", "list", "--cache-dir", str(cache_dir)])
    assert "incomplete" in listed.output and "1 cache(s)" in listed.output, listed.output
    # the next build is not fooled by the killed build's index
    paths = sorted((tmp_path / "img").glob("*.png"))
    cache = ImageCache.open_or_build(
        "gamma",
        [p.stem for p in paths],
        paths,
        size=8,
        channels=1,
        interpolation=cv2.INTER_AREA,
        cache_dir=cache_dir,
        progress=False,
        split="train",
    )
    np.testing.assert_array_equal(cache[3][:, :, 0], np.asarray(Image.open(paths[3])))
    cleared = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir), "-y"])
    # one cache (same key): the killed build's temp file goes with it
    assert "removed 1 cache(s)" in cleared.output, cleared.output
    assert {p.name: p.read_bytes() for p in cache_dir.iterdir()} == mine


def test_cache_commands_name_a_folder_that_is_not_one(tmp_path):
    from typer.testing import CliRunner

    from pylon.cli.main import app

    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0")
    runner = CliRunner()
    for command in ("list", "clear"):
        result = runner.invoke(
            app, ["cache", command, "--cache-dir", str(a_file), "-y"][: 4 + (command == "clear")]
        )
        assert result.exit_code == 2, result.output
        assert f"{a_file}: not a folder" in result.output and "Traceback" not in result.output
        missing = runner.invoke(app, ["cache", command, "--cache-dir", str(tmp_path / "nope")])
        assert missing.exit_code == 0 and "does not exist" in missing.output, missing.output
    assert a_file.read_text() == "root:x:0:0"


def test_a_failed_write_names_the_cache_file_and_leaves_nothing(tmp_path):
    import resource
    import signal

    import pytest

    paths = _write(tmp_path / "img", 3)
    cache_dir = tmp_path / "cache"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))  # as a full disk: no file named
    try:
        with pytest.raises(OSError) as err:
            _open(paths, cache_dir, workers=0)  # 3 x 32 x 32 pixels: over 2000 bytes
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert err.value.filename.startswith(str(cache_dir / "test-32px-1ch-area-"))
    assert err.value.filename.endswith(".npy") and "File too large" in str(err.value)
    assert list(cache_dir.iterdir()) == []
