"""Training-loader throughput on 1024 px PNGs: direct decoding versus the resized-image cache, and
what caching at twice the input size (the paper presets' sharper crops) costs.

Usage: python bench/data.py [--images 200] [--size 256] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import DataLoader

from pylon.data import collate, create_dataset


def write_images(folder: Path, n: int, side: int = 1024) -> None:
    """Smooth radiograph-like 8-bit PNGs (noise-only PNGs would decode unrealistically slowly)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    rows = ["image,finding"]
    for i in range(n):
        base = 120 + 80 * np.sin(6 * xx + i) * np.cos(4 * yy) + rng.normal(0, 4, (side, side))
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.clip(base, 0, 255).astype(np.uint8))
        rows.append(f"{i:04d}.png,{i % 2}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def images_per_second(dataset, batch: int) -> float:
    """One epoch through a one-worker DataLoader, timed from the first batch (worker start-up
    excluded); the worker runs torch single-threaded, as DataLoader workers do."""
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=1, collate_fn=collate, drop_last=True
    )
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    count = sum(len(b["image_id"]) for b in batches)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_images(folder, args.images)
        options = dict(split="all", size=args.size, augment=True, progress=False)
        direct = create_dataset("csv", folder, cache=False, **options)
        start = time.perf_counter()
        cached = create_dataset("csv", folder, cache=True, cache_dir=folder / "cache", **options)
        build = time.perf_counter() - start
        sharp = create_dataset(
            "csv",
            folder,
            cache=True,
            cache_dir=folder / "cache2x",
            cache_size=min(2 * args.size, 1024),
            **options,
        )
        direct_rate = images_per_second(direct, args.batch)
        cached_rate = images_per_second(cached, args.batch)
        sharp_rate = images_per_second(sharp, args.batch)
    print(
        f"{args.images} PNGs of 1024x1024 -> {args.size} px, train transform, one DataLoader worker"
    )
    print(f"direct decode : {direct_rate:8.1f} images/s")
    print(f"cache         : {cached_rate:8.1f} images/s (one-off build {build:.1f} s)")
    print(f"speed-up      : {cached_rate / direct_rate:8.1f}x (target >= 10x)")
    print(
        f"cache at 2x   : {sharp_rate:8.1f} images/s "
        f"({sharp_rate / cached_rate:.2f}x the cache at the input size)"
    )


if __name__ == "__main__":
    main()
