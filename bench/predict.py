"""Benchmark ``Predictor`` on a folder of 1024 px PNGs with PYLON-resnet50 at 256 px on the CPU.

Prints images/s when predicting one image at a time (decode, then forward, per file) and batched
(``iter_predict``: batches of ``--batch`` with the next batch decoded in threads meanwhile), and
their ratio, and the process's peak RSS. Weights are random (speed does not depend on them); the
default CPU path (the precision policy's ``auto``) is used.
Run: ``.venv/bin/python bench/predict.py [--images 32 --batch 8 --size 256]``.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from pylon import create_model, save_weights
from pylon.data.preprocessing import make_preprocessing
from pylon.inference import Predictor


def make_folder(folder: Path, count: int, side: int) -> list[Path]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((side, side), dtype=np.float32), (0, 0), side / 16)
    paths = []
    for k in range(count):
        noise = rng.normal(0, 0.05, (side, side)).astype(np.float32)
        image = np.clip((base - base.min()) / np.ptp(base) + noise, 0, 1)
        path = folder / f"img{k:03d}.png"
        cv2.imwrite(str(path), np.rint(image * 255).astype(np.uint8))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--side", type=int, default=1024, help="PNG side length in pixels")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_folder(folder, args.images, args.side)
        weights = folder / "pylon_r50.safetensors"
        model = create_model("pylon", encoder="resnet50", num_classes=14)
        record = make_preprocessing(
            "xray", args.size, 1, [0.4984], [0.2483], [f"class{k}" for k in range(14)]
        )
        save_weights(model, weights, metadata=record.to_metadata())

        single = Predictor(weights, batch_size=1)
        batched = Predictor(weights, batch_size=args.batch)
        run = batched.execution
        execution = run.precision + (" + channels_last" if run.channels_last else "")
        print(
            f"PYLON-resnet50, {args.size} px input, {args.images} PNGs of {args.side} px, "
            f"{torch.get_num_threads()} threads, {execution}"
        )
        single.predict(paths[0])  # warm-up (oneDNN primitive creation) for both batch shapes
        batched.predict_inputs([batched.to_input(p) for p in paths[: args.batch]])

        start = time.perf_counter()
        for path in paths:
            single.predict(path)
        one_by_one = args.images / (time.perf_counter() - start)

        start = time.perf_counter()
        results = list(batched.iter_predict([folder]))
        in_batches = len(results) / (time.perf_counter() - start)

    print(f"one by one          : {one_by_one:6.2f} images/s")
    print(f"batched (batch {args.batch:>2d})  : {in_batches:6.2f} images/s")
    print(f"ratio batched / one : {in_batches / one_by_one:6.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS            : {peak:6.0f} MB")


if __name__ == "__main__":
    main()
