"""Heatmap pages of a trained run: for each (image, class) with ground-truth boxes, the original
image and its CAM overlay with the boxes, titled with probability and point hit/miss."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pylon.data import read_picked as read_reference_picked
from pylon.data.base import BoxDataset
from pylon.data.images import DATASET_PNG16, read_image
from pylon.evaluation.coordinates import peak_in_original
from pylon.evaluation.execution import load_run_model
from pylon.evaluation.overlay import STYLES
from pylon.evaluation.pages import HeatmapRow, write_heatmap_pages
from pylon.metrics import score_pairs
from pylon.progress import Progress
from pylon.training.datamodule import build_dataset, eval_loader
from pylon.training.runs import open_trained_run

ROWS_PER_PAGE = 10
PEAK_AT = ("input", "original")


def read_picked(path: str | Path, class_names: list[str]) -> dict[str, set[int] | None]:
    """Parse a picked list.

    Args:
        path: either one ``image_id`` or ``image_id,class_name`` per line (``#`` comments,
            blank lines and an ``image_id[,class]`` header, the first line that is not a
            comment, are skipped), or the reference's
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
    first = True
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = [p.strip() for p in line.split(",")]
        if not parts[0] or parts[0].startswith("#"):
            continue
        header, first = first and parts[0] == "image_id", False
        if header:
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


def check_limit(limit: int | None) -> None:
    """Refuse a row limit below 1 (``None``, no limit, is fine).

    Args:
        limit: the most rows to draw.

    Raises:
        ValueError: naming the limit and what is expected.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for every pair), got {limit}")


def original_view(dataset, index: int) -> tuple[np.ndarray, list]:
    """The image at its original resolution and its boxes in that image's pixels.

    Args:
        dataset: an evaluation dataset (file-backed ``BoxDataset`` or the synthetic one).
        index: the sample's index.

    Returns:
        ``(image, boxes)``: the decoded file for file-backed datasets (uint8, as on disk), else
        the un-augmented sample de-normalised with the dataset's ``preprocessing``; boxes are
        ``(x, y, w, h, class_index)``.
    """
    if isinstance(dataset, BoxDataset):
        record = dataset.records[index]
        return read_image(record.path, dataset.in_channels, png16=DATASET_PNG16), list(record.boxes)
    sample = dataset[index]
    record = dataset.preprocessing
    mean = torch.tensor(record.mean)[:, None, None]
    std = torch.tensor(record.std)[:, None, None]
    pixels = (sample["image"] * std + mean).clamp(0, 1).mul(255).round().byte()
    return pixels.permute(1, 2, 0).squeeze(-1).numpy(), list(sample["boxes"])


def heatmap_rows(
    run_dir: str | Path,
    *,
    split: str | None = None,
    picked: str | Path | None = None,
    limit: int | None = None,
    device: str | None = None,
    progress: bool = True,
    peak_at: str = "input",
) -> Iterator[HeatmapRow]:
    """One row per (image, class) pair with boxes, in dataset order (streamed batch by batch).

    Args:
        run_dir: a trained run folder.
        split: the split with boxes (default: the run's ``loc_split``).
        picked: a picked list (:func:`read_picked`): only those images (and classes).
        limit: stop after this many rows (``None``: every pair); at least 1.
        device: where the model runs (default: where training runs); the precision policy and
            channels_last apply as in training.
        progress: report progress (a bar in a terminal, plain lines in logs).
        peak_at: ``"input"``: the peak and hit are the metric's (the point-localization arg-max
            at the network input, as in ``eval_loc.csv``), the peak mapped to original pixels by
            :func:`pylon.evaluation.coordinates.peak_in_original`; ``"original"``: the map is
            up-sampled to the original image and scored against the original boxes there, as the
            reference's figures do.

    Returns:
        An iterator of :class:`HeatmapRow`.

    Raises:
        ValueError: when ``limit`` is below 1, when picked images are not in the split, or none
            has boxes of the picked classes (those without boxes are skipped with a warning).
    """
    check_limit(limit)
    if peak_at not in PEAK_AT:
        raise ValueError(f"peak_at={peak_at!r}; expected one of {', '.join(PEAK_AT)}")
    paths, config = open_trained_run(run_dir)
    split = split or config.data.loc_split
    dataset = build_dataset(config.data, split)
    names = list(dataset.class_names)
    wanted = read_picked(picked, names) if picked else None
    if wanted is not None and isinstance(dataset, BoxDataset):
        _check_picked_in_split(wanted, {r.image_id for r in dataset.records}, picked, split)
    model, execution, target = load_run_model(paths, config, device)
    data = dataclasses.replace(config.data, num_workers=0)
    count, offset, seen, present = 0, 0, set(), set()
    if limit is not None:
        reporter = Progress(f"heatmaps {split}", limit, unit="row", enabled=progress)
    else:
        reporter = Progress(f"heatmaps {split}", len(dataset), unit="img", enabled=progress)
    with reporter, torch.no_grad():
        for batch in eval_loader(dataset, data):
            n = len(batch["image"])
            present.update(batch["image_id"])
            images = execution.prepare_input(batch["image"].to(target))
            with execution.autocast():
                output = model(images)
            cams = output.cam.float()
            input_size = tuple(images.shape[-2:])
            scores = score_pairs(cams, batch["boxes"], input_size)
            cams = cams.cpu()
            probabilities = torch.sigmoid(output.logits.float()).cpu()
            for k in range(len(scores)):
                i, c = int(scores.image_index[k]), int(scores.class_index[k])
                image_id = batch["image_id"][i]
                if wanted is not None:
                    classes = wanted.get(image_id, set())
                    if classes is not None and c not in classes:
                        continue
                seen.add(image_id)
                image, boxes = original_view(dataset, offset + i)
                boxes = [b for b in boxes if int(b[4]) == c]
                if peak_at == "original":
                    own = [[(*b[:4], 0) for b in boxes]]
                    at = score_pairs(cams[i : i + 1, c : c + 1], own, image.shape[:2])
                    peak, hit = (int(at.peak_row[0]), int(at.peak_col[0])), bool(at.point_hit[0])
                else:
                    row, col = int(scores.peak_row[k]), int(scores.peak_col[k])
                    peak = peak_in_original(row, col, input_size, image.shape[:2])
                    hit = bool(scores.point_hit[k])
                yield HeatmapRow(
                    image=image,
                    heatmap=torch.sigmoid(cams[i, c]).numpy(),
                    boxes=boxes,
                    class_name=names[c],
                    probability=float(probabilities[i, c]),
                    hit=hit,
                    peak=(float(peak[0]), float(peak[1])),
                )
                count += 1
                if limit is not None:
                    reporter.advance()
                    if count >= limit:
                        return
            if limit is None:
                reporter.advance(n)
            offset += n
    if wanted is not None:
        if not isinstance(dataset, BoxDataset):
            _check_picked_in_split(wanted, present, picked, split)
        without = sorted(set(wanted) - seen)
        if without and not seen:
            raise ValueError(
                f"{picked}: none of the picked images has boxes of the picked classes in split "
                f"{split!r}"
            )
        if without:
            # the reference's VinDr picked files list 'No finding' images too
            warnings.warn(
                f"{picked}: {len(without)} picked image(s) without boxes of the picked classes "
                f"in split {split!r} were skipped, first: {', '.join(without[:5])}",
                stacklevel=2,
            )


def _check_picked_in_split(wanted, ids, picked, split) -> None:
    missing = sorted(set(wanted) - set(ids))
    if missing:
        raise ValueError(
            f"{picked}: {len(missing)} picked image(s) are not in split {split!r}, first: "
            f"{', '.join(missing[:5])}"
        )


def write_run_heatmaps(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    split: str | None = None,
    picked: str | Path | None = None,
    limit: int | None = 50,
    style: str = "reference",
    device: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write ``heatmaps_<page>.png`` pages of 10 rows into ``out_dir``, a page at a time: only
    10 full-resolution images are in memory.

    Args:
        run_dir: a trained run folder.
        out_dir: the output folder (default ``RUN/heatmaps/<split>``).
        split, picked, limit, device, progress: as :func:`heatmap_rows`.
        style: ``"reference"`` (as the reference's figures: each map min-max scaled per image,
            heat + 0.5 x image, white boxes, peak and hit taken from the map up-sampled to the
            original image) or ``"probability"`` (absolute probabilities; peak and hit are the
            metric's, as in ``eval_loc.csv``); the figure titles say which.

    Returns:
        The pages written, in order (none when no pair has boxes).
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r}; expected one of {', '.join(STYLES)}")
    check_limit(limit)
    paths, config = open_trained_run(run_dir)
    split = split or config.data.loc_split
    out_dir = Path(out_dir) if out_dir else paths.root / "heatmaps" / split
    pages: list[Path] = []
    chunk: list[HeatmapRow] = []

    def flush() -> None:
        (page,) = write_heatmap_pages(chunk, out_dir, ROWS_PER_PAGE, prefix=".page", style=style)
        target = out_dir / f"heatmaps_{len(pages):03d}.png"
        os.replace(page, target)
        pages.append(target)
        chunk.clear()

    rows = heatmap_rows(
        run_dir,
        split=split,
        picked=picked,
        limit=limit,
        device=device,
        progress=progress,
        peak_at="original" if style == "reference" else "input",
    )
    for row in rows:
        chunk.append(row)
        if len(chunk) == ROWS_PER_PAGE:
            flush()
    if chunk:
        flush()
    return pages
