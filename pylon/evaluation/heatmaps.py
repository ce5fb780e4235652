"""Heatmap pages of a trained run: for each (image, class) with ground-truth boxes, the original
image and its CAM overlay with the boxes, titled with probability and point hit/miss."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pylon.data import read_picked as read_reference_picked
from pylon.data.images import read_image
from pylon.evaluation.pages import HeatmapRow, write_heatmap_pages
from pylon.metrics import score_pairs
from pylon.models.weights import load_model
from pylon.training.datamodule import build_dataset, eval_loader
from pylon.training.runs import RunPaths, open_trained_run

ROWS_PER_PAGE = 10


def read_picked(path: str | Path, class_names: list[str]) -> dict[str, set[int] | None]:
    """Parse a picked list.

    Args:
        path: either one ``image_id`` or ``image_id,class_name`` per line (an optional
            ``image_id[,class]`` header and ``#`` comments are skipped), or the reference's
            ``picked.csv`` / ``v*_picked.csv`` (``Image Index,<classes>`` with an unnamed index
            column, or ``image_id,<classes>``), whose images are shown for every class with boxes.
        class_names: the run's classes.

    Returns:
        ``{image_id: class indices}``; ``None`` means every class that has boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"picked list {path} not found")
    header = [c.strip() for c in path.read_text().split("\n", 1)[0].split(",")]
    if "Image Index" in header or (header[:1] == ["image_id"] and len(header) > 2):
        return dict.fromkeys(read_reference_picked(path))
    picked: dict[str, set[int] | None] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = [p.strip() for p in line.split(",")]
        if not parts[0] or parts[0].startswith("#") or (number == 1 and parts[0] == "image_id"):
            continue
        if len(parts) == 1 or not parts[1]:
            picked[parts[0]] = None
            continue
        if parts[1] not in class_names:
            raise ValueError(
                f"{path}, line {number}: unknown class {parts[1]!r}; expected one of {class_names}"
            )
        current = picked.setdefault(parts[0], set())
        if current is not None:
            current.add(class_names.index(parts[1]))
    if not picked:
        raise ValueError(f"{path}: no image ids listed")
    return picked


def original_view(dataset, index: int) -> tuple[np.ndarray, list]:
    """The image at its original resolution (uint8) and its boxes in that image's pixels.

    Uses ``dataset.original_image(index)`` where a dataset provides it, else the ``records``
    of file-backed datasets, else the (un-augmented, de-normalised) sample itself.
    """
    if hasattr(dataset, "original_image"):
        return dataset.original_image(index)
    if hasattr(dataset, "records"):
        record = dataset.records[index]
        return read_image(record.path, dataset.in_channels), list(record.boxes)
    sample = dataset[index]
    mean = torch.tensor(dataset.mean)[:, None, None]
    std = torch.tensor(dataset.std)[:, None, None]
    pixels = (sample["image"] * std + mean).clamp(0, 1).mul(255).round().byte()
    return pixels.permute(1, 2, 0).squeeze(-1).numpy(), list(sample["boxes"])


def heatmap_rows(
    run_dir: str | Path,
    *,
    split: str | None = None,
    picked: str | Path | None = None,
    limit: int | None = None,
) -> Iterator[HeatmapRow]:
    """Yield one row per (image, class) pair with boxes, in dataset order (streamed)."""
    paths, config = open_trained_run(run_dir)
    dataset = build_dataset(config.data, split or config.data.loc_split)
    names = list(dataset.class_names)
    wanted = read_picked(picked, names) if picked else None
    model = load_model(paths.best).eval()
    data = dataclasses.replace(config.data, num_workers=0)
    count, offset, seen = 0, 0, set()
    with torch.no_grad():
        for batch in eval_loader(dataset, data):
            n = len(batch["image"])
            output = model(batch["image"])
            scores = score_pairs(
                output.cam.float(), batch["boxes"], tuple(batch["image"].shape[-2:])
            )
            height, width = batch["image"].shape[-2:]
            for k in range(len(scores)):
                i, c = int(scores.image_index[k]), int(scores.class_index[k])
                image_id = batch["image_id"][i]
                if wanted is not None:
                    classes = wanted.get(image_id, set())
                    if classes is not None and c not in classes:
                        continue
                seen.add(image_id)
                image, boxes = original_view(dataset, offset + i)
                sy, sx = image.shape[0] / height, image.shape[1] / width
                peak = (
                    (int(scores.peak_row[k]) + 0.5) * sy - 0.5,
                    (int(scores.peak_col[k]) + 0.5) * sx - 0.5,
                )
                yield HeatmapRow(
                    image=image,
                    heatmap=torch.sigmoid(output.cam[i, c].float()).numpy(),
                    boxes=[b for b in boxes if int(b[4]) == c],
                    class_name=names[c],
                    probability=float(torch.sigmoid(output.logits[i, c].float())),
                    hit=bool(scores.point_hit[k]),
                    peak=peak,
                )
                count += 1
                if limit is not None and count >= limit:
                    return
            offset += n
    if wanted is not None:
        missing = sorted(set(wanted) - seen)
        if missing:
            raise ValueError(
                f"{picked}: {len(missing)} picked image(s) have no boxes of the picked classes "
                f"in split {split or config.data.loc_split!r}, first: {', '.join(missing[:5])}"
            )


def write_run_heatmaps(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    split: str | None = None,
    picked: str | Path | None = None,
    limit: int | None = 50,
    style: str = "reference",
) -> list[Path]:
    """Write ``heatmaps_<page>.png`` pages of 10 rows into ``out_dir`` (default
    RUN/heatmaps/<split>), a page at a time: only 10 full-resolution images are in memory.

    ``style``: ``"reference"`` (each map min-max scaled per image, as the reference's figures)
    or ``"probability"`` (absolute probabilities); the figure titles say which. Returns the pages.
    """
    paths = RunPaths(Path(run_dir))
    out_dir = Path(out_dir) if out_dir else paths.root / "heatmaps" / (split or "default")
    pages: list[Path] = []
    chunk: list[HeatmapRow] = []

    def flush() -> None:
        (page,) = write_heatmap_pages(chunk, out_dir, ROWS_PER_PAGE, prefix=".page", style=style)
        target = out_dir / f"heatmaps_{len(pages):03d}.png"
        os.replace(page, target)
        pages.append(target)
        chunk.clear()

    for row in heatmap_rows(run_dir, split=split, picked=picked, limit=limit):
        chunk.append(row)
        if len(chunk) == ROWS_PER_PAGE:
            flush()
    if chunk:
        flush()
    return pages
