"""Benchmark: localization metrics on 1,000 images x 8 classes of 256x256 maps at 1024 px boxes.

Compares a naive per-image, per-class loop (one up-sampled map at a time, numpy masks) with the
vectorised, chunked ``pylon.metrics.LocalizationAccumulator``, and checks they agree.
Run: ``.venv/bin/python bench/metrics.py [--images 1000] [--naive-images 100]``.
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


def make_data(num_images: int, num_classes: int, map_size: int, image_size: int, seed: int = 0):
    """Smooth random maps and NIH-like boxes: one or two findings per image, 1-3 boxes each."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_images, num_classes, map_size // 16, map_size // 16, generator=gen)
    cams = F.interpolate(coarse * 3, size=(map_size, map_size), mode="bilinear")
    cams += 0.3 * torch.randn(cams.shape, generator=gen)
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for cls in rng.choice(num_classes, size=rng.integers(1, 3), replace=False):
            for _ in range(rng.integers(1, 4)):
                w, h = rng.uniform(20, 400, size=2)
                x, y = rng.uniform(0, image_size - w), rng.uniform(0, image_size - h)
                image_boxes.append((x, y, w, h, int(cls)))
        boxes.append(image_boxes)
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


def upsample_only(cams: torch.Tensor, boxes, image_size: int, batch: int = 6) -> None:
    """The floor shared by both: up-sample the sigmoid of every scored map, nothing else."""
    pairs = sorted({(i, b[4]) for i, image_boxes in enumerate(boxes) for b in image_boxes})
    index = torch.tensor(pairs)
    for start in range(0, len(index), batch):
        maps = cams[index[start : start + batch, 0], index[start : start + batch, 1]].sigmoid()
        F.interpolate(maps[:, None], size=(image_size, image_size), mode="bilinear")


def vectorised(cams: torch.Tensor, boxes, image_size: int, batch: int):
    acc = LocalizationAccumulator(cams.shape[1], (image_size, image_size), thresholds=THRESHOLDS)
    for start in range(0, len(cams), batch):
        acc.update(cams[start : start + batch], boxes[start : start + batch])
    return acc.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--map-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument(
        "--naive-images", type=int, default=100, help="subset timed for the naive loop"
    )
    parser.add_argument("--batch", type=int, default=100, help="images per update() call")
    parser.add_argument("--device", default="cpu", help="where the maps live, e.g. cuda")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cams, boxes = make_data(args.images, args.classes, args.map_size, args.image_size)
    cams = cams.to(args.device)
    pairs = sum(len({b[4] for b in image_boxes}) for image_boxes in boxes)
    print(
        f"{args.images} images x {args.classes} classes, {args.map_size}px maps -> "
        f"{args.image_size}px, {pairs} (image, class) pairs with boxes, "
        f"{torch.get_num_threads()} torch threads"
    )

    n_naive = min(args.naive_images, args.images)
    start = time.perf_counter()
    ref = naive(cams[:n_naive], boxes[:n_naive], args.image_size)
    naive_s = elapsed(start, args.device) * args.images / n_naive
    note = "" if n_naive == args.images else f" (timed on {n_naive} images, extrapolated)"
    print(f"naive per-image loop: {naive_s:8.2f} s{note}")

    start = time.perf_counter()
    got = vectorised(cams, boxes, args.image_size, args.batch)
    ours_s = elapsed(start, args.device)
    print(f"pylon.metrics       : {ours_s:8.2f} s")
    print(f"speed-up            : {naive_s / ours_s:8.1f}x")
    start = time.perf_counter()
    upsample_only(cams, boxes, args.image_size)
    floor_s = elapsed(start, args.device)
    print(
        f"up-sampling alone   : {floor_s:8.2f} s  (the work both must do; ours = "
        f"{ours_s / floor_s:.2f}x this floor, naive = {naive_s / floor_s:.2f}x)"
    )

    sub = vectorised(cams[:n_naive], boxes[:n_naive], args.image_size, args.batch)
    agree = all(
        math.isclose(ref[k], sub[f"{k.replace('point', 'point_acc')}_weighted"]) for k in ref
    )
    print(
        f"agree with naive on the timed subset: {agree}; "
        f"point_acc_weighted {got['point_acc_weighted']:.4f}"
    )


if __name__ == "__main__":
    main()
