"""DataLoader workers start after multi-threaded OpenCV work in the main process (issue 12.6):
forking while OpenCV's pool threads waited made ``init_worker``'s ``cv2.setNumThreads(1)`` hang."""

import os
import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import cv2, numpy as np, torch
    from torch.utils.data import DataLoader
    from pylon.data import collate, create_dataset
    from pylon.training.datamodule import init_worker

    cv2.setNumThreads(2)
    image = np.random.default_rng(0).integers(0, 256, (1024, 1024), np.uint8)
    matrix = cv2.getRotationMatrix2D((512, 512), 30, 1)
    data = create_dataset("synthetic", None, "train", size=64, num_images=8)
    for attempt in range(3):
        for _ in range(3):  # the main process's pool threads run, then wait
            cv2.warpAffine(image, matrix, (1024, 1024), flags=cv2.INTER_CUBIC)
        loader = DataLoader(data, batch_size=4, num_workers=1, collate_fn=collate,
                            worker_init_fn=init_worker)
        assert sum(len(b["image_id"]) for b in loader) == 8
    assert cv2.getNumThreads() == 2  # the main process keeps its threads
    print("ok")
    """
)


def test_one_worker_starts_after_multithreaded_opencv_in_the_main_process():
    # Its own session, so that a hung worker goes with it (killpg) when the test fails.
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the DataLoader worker hung at start-up") from None
    assert proc.returncode == 0, err[-2000:]
    assert out.strip().endswith("ok")


def test_building_a_cache_in_process_keeps_the_callers_opencv_threads(tmp_path):
    """A one-chunk (or ``workers=0``) build decodes in the caller's process; it used to leave the
    caller with one OpenCV thread for good (its 0-worker loaders then ran single-threaded)."""
    import cv2
    import numpy as np

    from pylon.data.cache import ImageCache

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), np.full((40, 40), 10 * i, np.uint8))
    saved = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        for workers in (0, 2):
            ImageCache.open_or_build(
                "t",
                ["a", "b", "c"],
                paths,
                size=16,
                channels=1,
                interpolation=cv2.INTER_AREA,
                cache_dir=tmp_path / f"cache{workers}",
                workers=workers,
                progress=False,
            )
            assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(saved)
