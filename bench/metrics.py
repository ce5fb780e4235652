"""Benchmark: localization metrics on 1,000 images x 8 classes of 256x256 maps at 1024 px boxes.

Times a naive per-image, per-class loop (one ``F.interpolate``-d map at a time, torch masks)
against ``pylon.metrics.LocalizationAccumulator``, on one or more torch thread counts, and checks
that both give the same numbers. ``--maps cam`` (default): CAM-like maps, a low background with a
few findings; ``--maps rough``: random fields with pixel noise, whose half-peak contour crosses
everywhere (the worst case for ``pylon.metrics``, which evaluates pixels only near it).
Run: ``.venv/bin/python bench/metrics.py [--images 1000] [--naive-images 100] [--threads 1 2]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from pylon.metrics import LocalizationAccumulator

THRESHOLDS = (0.1, 0.25, 0.5)


def make_boxes(num_images: int, num_classes: int, image_size: int, rng) -> list[list[tuple]]:
    """NIH-like boxes: one or two findings per image, 1-3 boxes each, 20-400 px wide."""
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for cls in rng.choice(num_classes, size=rng.integers(1, 3), replace=False):
            for _ in range(rng.integers(1, 4)):
                w, h = rng.uniform(20, 400, size=2)
                x, y = rng.uniform(0, image_size - w), rng.uniform(0, image_size - h)
                image_boxes.append((x, y, w, h, int(cls)))
        boxes.append(image_boxes)
    return boxes


def cam_maps(boxes, num_classes: int, map_size: int, image_size: int, rng) -> torch.Tensor:
    """Raw scores: background about -6 with smooth variation, 1-3 Gaussian findings per map,
    the first of a class with boxes placed near (not always on) one of its boxes."""
    num_images = len(boxes)
    coarse = torch.from_numpy(rng.normal(0, 1, size=(num_images, num_classes, 8, 8)))
    cams = -6 + F.interpolate(coarse.float(), size=(map_size, map_size), mode="bilinear")
    grid = torch.arange(map_size, dtype=torch.float32)
    scale = map_size / image_size
    for i, image_boxes in enumerate(boxes):
        for c in range(num_classes):
            spots = []
            mine = [b for b in image_boxes if b[4] == c]
            if mine:
                x, y, w, h, _ = mine[rng.integers(len(mine))]
                jitter = rng.normal(0, 0.5, size=2) * (w, h)
                spots.append(((x + w / 2 + jitter[0]) * scale, (y + h / 2 + jitter[1]) * scale))
            for _ in range(rng.integers(0, 3)):
                spots.append(tuple(rng.uniform(0, map_size, size=2)))
            for cx, cy in spots:
                radius, height = rng.uniform(3, 30), rng.uniform(6, 14)
                bump_y = torch.exp(-0.5 * ((grid - cy) / radius) ** 2)
                bump_x = torch.exp(-0.5 * ((grid - cx) / radius) ** 2)
                cams[i, c] += height * bump_y[:, None] * bump_x[None, :]
    return cams


def rough_maps(num_images: int, num_classes: int, map_size: int, gen) -> torch.Tensor:
    """Raw scores: a smooth random field (16 px features) plus pixel noise."""
    coarse = torch.randn(num_images, num_classes, map_size // 16, map_size // 16, generator=gen)
    cams = F.interpolate(coarse * 3, size=(map_size, map_size), mode="bilinear")
    return cams + 0.3 * torch.randn(cams.shape, generator=gen)


def make_data(num_images, num_classes, map_size, image_size, maps="cam", seed: int = 0):
    rng = np.random.default_rng(seed)
    boxes = make_boxes(num_images, num_classes, image_size, rng)
    if maps == "cam":
        cams = cam_maps(boxes, num_classes, map_size, image_size, rng)
    else:
        cams = rough_maps(num_images, num_classes, map_size, torch.Generator().manual_seed(seed))
    return cams, boxes


def naive(cams: torch.Tensor, boxes, image_size: int):
    """Per image, per class: up-sample one map, arg-max, paint the boxes, count; hit fractions."""
    size = (image_size, image_size)
    hits: dict[str, list[bool]] = {"point": []}
    for i in range(cams.shape[0]):
        for c in range(cams.shape[1]):
            cls_boxes = [b for b in boxes[i] if b[4] == c]
            if not cls_boxes:
                continue
            prob = cams[i, c].sigmoid()
            up = F.interpolate(prob[None, None], size=size, mode="bilinear")[0, 0]
            row, col = divmod(int(up.argmax()), image_size)
            hit = any(x <= col <= x + w and y <= row <= y + h for x, y, w, h, _ in cls_boxes)
            hits["point"].append(hit)
            mask = up / up.max() > 0.5
            gt = torch.zeros_like(mask)
            for x, y, w, h, _ in cls_boxes:
                x0, y0, w0, h0 = int(x), int(y), int(w), int(h)
                gt[max(y0, 0) : max(y0 + h0, 0), max(x0, 0) : max(x0 + w0, 0)] = True
            inter, area = int((mask & gt).sum()), int(mask.sum())
            union = int((mask | gt).sum())
            for t in THRESHOLDS:
                hits.setdefault(f"iobb{t}", []).append(area > 0 and inter / area > t)
                hits.setdefault(f"iou{t}", []).append(union > 0 and inter / union > t)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def elapsed(start: float, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def vectorised(cams: torch.Tensor, boxes, image_size: int, batch: int):
    acc = LocalizationAccumulator(cams.shape[1], (image_size, image_size), thresholds=THRESHOLDS)
    for start in range(0, len(cams), batch):
        acc.update(cams[start : start + batch], boxes[start : start + batch])
    return acc.compute()


def agree(ref: dict[str, float], got: dict[str, float]) -> bool:
    return all(
        math.isclose(ref[k], got[f"{k.replace('point', 'point_acc')}_weighted"]) for k in ref
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--map-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--maps", choices=["cam", "rough"], default="cam")
    parser.add_argument(
        "--naive-images", type=int, default=100, help="subset timed for the naive loop"
    )
    parser.add_argument("--batch", type=int, default=100, help="images per update() call")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    parser.add_argument("--device", default="cpu", help="where the maps live, e.g. cuda")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time"
    )
    args = parser.parse_args()

    cams, boxes = make_data(args.images, args.classes, args.map_size, args.image_size, args.maps)
    cams = cams.to(args.device)
    pairs = sum(len({b[4] for b in image_boxes}) for image_boxes in boxes)
    n_naive = min(args.naive_images, args.images)
    print(
        f"{args.images} images x {args.classes} classes, {args.maps} {args.map_size}px maps -> "
        f"{args.image_size}px, {pairs} (image, class) pairs with boxes; naive loop timed on "
        f"{n_naive} images and scaled; best of {args.repeats} runs"
    )
    # Per-shape set-up (interpolation weights read back from torch), once per process.
    vectorised(cams[:2], boxes[:2], args.image_size, args.batch)

    for threads in args.threads:
        torch.set_num_threads(threads)
        naive_s = ours_s = naive_cpu = ours_cpu = math.inf
        for _ in range(args.repeats):  # the best of a few runs: the machine may be shared
            start, cpu = time.perf_counter(), time.process_time()
            ref = naive(cams[:n_naive], boxes[:n_naive], args.image_size)
            naive_s = min(naive_s, elapsed(start, args.device) * args.images / n_naive)
            naive_cpu = min(naive_cpu, (time.process_time() - cpu) * args.images / n_naive)
            start, cpu = time.perf_counter(), time.process_time()
            got = vectorised(cams, boxes, args.image_size, args.batch)
            ours_s = min(ours_s, elapsed(start, args.device))
            ours_cpu = min(ours_cpu, time.process_time() - cpu)
        same = agree(ref, vectorised(cams[:n_naive], boxes[:n_naive], args.image_size, 100))
        print(
            f"{threads} thread(s): naive {naive_s:7.2f} s, pylon.metrics {ours_s:6.2f} s, "
            f"speed-up {naive_s / ours_s:5.1f}x (CPU time: {naive_cpu:.2f} s vs {ours_cpu:.2f} s, "
            f"{naive_cpu / ours_cpu:.1f}x); same numbers on the naive subset: {same}; "
            f"point_acc_weighted {got['point_acc_weighted']:.4f}"
        )


if __name__ == "__main__":
    main()
