"""Tiny run folders for the viewer's tests (and bench/viewer.py): a CSV dataset of small PNGs with
boxes, an untrained resnet18 CAM's weights with their preprocessing record, DONE, and per-pair
records (``eval_pairs.csv``) written either by ``pylon evaluate`` itself or, for many cases at
once, by hand.

Every run uses models registered by pylon itself (``cam``), so a ``pylon view`` subprocess can
load them too; :func:`write_cam_weights` writes such weights alone, for the tests of other
commands (``pylon predict``, ``pylon listen``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pylon import create_model, save_weights
from pylon.data import create_dataset
from pylon.training.config import DataConfig, ModelConfig, TrainConfig
from pylon.training.runs import RunPaths

CLASSES = ("Nodule", "Mass")
HEIGHT, WIDTH = 96, 128  # originals larger than the 64 px network input, not square


def write_cam_weights(path: Path, class_names=("a", "b")) -> Path:
    """An untrained CAM resnet18 (seed 0, 64 px, one channel) with its preprocessing record, saved
    at ``path``: weights a ``pylon`` subprocess rebuilds from the file alone. Returns ``path``."""
    from pylon.data.preprocessing import make_preprocessing

    torch.manual_seed(0)
    model = create_model("cam", encoder="resnet18", num_classes=len(class_names))
    record = make_preprocessing("xray", 64, 1, [0.5], [0.25], list(class_names))
    save_weights(model, path, metadata=record.to_metadata())
    return path


def write_csv_data(folder: Path, n_images: int = 4, *, seed: int = 3) -> Path:
    """``n_images`` grey 96 x 128 PNGs (``img/<i>.png``, split ``test``) with a bright square in
    each box; every image has a Nodule box, odd ones also a Mass box. Returns the data folder
    (``labels.csv``, ``boxes.csv``)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    import cv2

    rows = ["image,split," + ",".join(CLASSES)]
    boxes = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    for i in range(n_images):
        image = rng.integers(0, 80, (HEIGHT, WIDTH), dtype=np.uint8)
        nodule = (10 + (20 * i) % 80, 5 + (10 * i) % 60, 30, 24)
        image[nodule[1] : nodule[1] + nodule[3], nodule[0] : nodule[0] + nodule[2]] = 220
        cv2.imwrite(str(folder / f"img/{i}.png"), image)
        rows.append(f"img/{i}.png,test,1,{i % 2}")
        boxes.append(f"{i}.png,Nodule,{nodule[0]},{nodule[1]},{nodule[2]},{nodule[3]},,,")
        if i % 2:
            boxes.append(f"{i}.png,Mass,0,40,60,50,,,")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    (folder / "boxes.csv").write_text("\n".join(boxes) + "\n")
    return folder


def csv_run(
    root: Path,
    name: str = "csv",
    seed: int = 0,
    *,
    n_images: int = 4,
    data: Path | None = None,
    evaluate: bool = True,
    size: int = 64,
) -> RunPaths:
    """A finished run ``root/name/seed`` on the CSV data (written to ``root/data`` unless
    ``data`` is given); with ``evaluate`` its ``eval_pairs.csv`` comes from ``evaluate_run``.
    Runs of different names get different random weights."""
    if data is None:
        data = write_csv_data(root / "data", n_images)
    paths = RunPaths.of(root, name, seed)
    options = {"boxes": "boxes.csv", "cache": False, "progress": False}
    config = TrainConfig(
        experiment=name,
        seed=seed,
        precision="fp32",
        progress=False,
        model=ModelConfig(name="cam", encoder="resnet18"),
        data=DataConfig(
            name="csv", root=str(data), size=size, batch_size=4, num_workers=0, options=options
        ),
    )
    config.to_yaml(paths.config)
    dataset = create_dataset("csv", data, "test", size=size, **options)
    torch.manual_seed(seed + sum(map(ord, name)))
    model = create_model("cam", encoder="resnet18", num_classes=len(dataset.class_names))
    record = dataset.preprocessing.with_model(model.pylon_config)
    save_weights(model, paths.best, metadata=record.to_metadata())
    paths.mark_done("test")
    if evaluate:
        from pylon.evaluation.evaluate import evaluate_run

        evaluate_run(paths.root, progress=False)
    return paths


def copied_run(root: Path, run: RunPaths, source_data: Path, name: str) -> RunPaths:
    """A run ``root/name/0`` with weights of its own, on a copy of ``source_data`` (at
    ``root/data``), whose ``eval_pairs.csv`` is a copy of ``run``'s: the same cases, on data the
    test may move or delete."""
    data = root / "data"
    shutil.copytree(source_data, data)
    copy = csv_run(root, name, data=data, evaluate=False)
    shutil.copy(run.root / "eval_pairs.csv", copy.root / "eval_pairs.csv")
    return copy


def many_cases_run(root: Path, n_images: int = 500, *, seed: int = 0) -> RunPaths:
    """A run of ``n_images`` images (``2 * n_images * 3 // 4``-ish cases) whose
    ``eval_pairs.csv`` is written by hand from a seeded generator (no model runs): for
    start-up and paging benchmarks of the viewer. The weights are real, so overlays render."""
    paths = csv_run(root, "many", seed, n_images=n_images, evaluate=False)
    rng = np.random.default_rng(seed)
    dataset = create_dataset("csv", root / "data", "test", size=64, boxes="boxes.csv",
                             cache=False, progress=False)  # fmt: skip
    rows = []
    for record in dataset.records:
        for c in sorted({int(b[4]) for b in record.boxes}):
            share = float(rng.uniform(0.001, 0.3))
            bucket = "small" if share < 0.01 else "medium" if share < 0.1 else "large"
            rows.append(
                {
                    "image_id": record.image_id,
                    "class": CLASSES[c],
                    "probability": float(rng.uniform()),
                    "peak_row": int(rng.integers(0, 64)),
                    "peak_col": int(rng.integers(0, 64)),
                    "peak_row_original": int(rng.integers(0, HEIGHT)),
                    "peak_col_original": int(rng.integers(0, WIDTH)),
                    "point_hit": bool(rng.uniform() < 0.5),
                    "iobb": float(rng.uniform()),
                    "iou": float(rng.uniform()),
                    "box_area": int(share * 64 * 64),
                    "box_share": share,
                    "size_bucket": bucket,
                }
            )
    pd.DataFrame(rows).to_csv(paths.root / "eval_pairs.csv", index=False)
    return paths
