"""Data-loading benchmarks: augmented loader rate per worker from the cache (0/1/2 workers, 256 and
512 px) against the model's training step rate, direct decoding versus the cache, the cost of
caching at twice the input size, and reopening a cache of a full NIH-sized split.

Usage: python bench/data.py [--images 300] [--epoch 3000] [--batch 32] [--reopen-images 112120]
[--model resnet50]
(``--reopen-images 0`` or ``--model none`` skip those parts).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import DataLoader

from pylon.data import collate, create_dataset
from pylon.training.datamodule import init_worker


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


def images_per_second(
    dataset,
    batch: int,
    workers: int,
    *,
    epoch: int = 3000,
    threads: int | None = None,
    init: bool = True,
    repeats: int = 3,
    pin_memory: bool = False,
) -> float:
    """Best of ``repeats`` epochs of ``epoch`` samples (the dataset's images reshuffled as often
    as needed) through a DataLoader built as training builds it (one OpenCV thread per worker
    unless ``init`` is off; new workers every epoch), each timed from its first batch (worker
    start-up excluded); the best, as other load on a shared machine only ever slows an epoch
    down. Epochs much longer than the 300 images amortise what a fresh worker pays at first
    (copy-on-write faults), as a real epoch of 78k images does. ``threads`` sets the main
    process's OpenCV and torch threads (they load with 0 workers); ``pin_memory`` as training
    sets it on a GPU machine."""
    import torch
    from torch.utils.data import RandomSampler

    saved = cv2.getNumThreads(), torch.get_num_threads()
    if threads is not None:
        cv2.setNumThreads(threads)
        torch.set_num_threads(threads)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=RandomSampler(dataset, num_samples=max(epoch, batch)),
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
        worker_init_fn=init_worker if workers and init else None,
        pin_memory=pin_memory,
    )
    best = 0.0
    for _ in range(repeats):
        batches = iter(loader)
        next(batches)
        start = time.perf_counter()
        count = sum(len(b["image_id"]) for b in batches)
        best = max(best, count / (time.perf_counter() - start))
    cv2.setNumThreads(saved[0])
    torch.set_num_threads(saved[1])
    return best


def batch_costs(dataset, batch: int, batches: int = 40) -> tuple[float, float]:
    """Milliseconds per image, in this process on one thread, of making batches (items and
    collate) and of what a worker adds to send one: copying it into a new shared-memory segment
    (``share_memory_``, as torch's worker queue does), page faults included."""
    import torch

    saved = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    order = np.random.default_rng(0).integers(0, len(dataset), (batches, batch))
    made = []
    start = time.perf_counter()
    for indices in order:
        made.append(collate([dataset[int(i)] for i in indices]))
    make = time.perf_counter() - start
    start = time.perf_counter()
    for b in made:
        b["image"].share_memory_()
        b["labels"].share_memory_()
    share = time.perf_counter() - start
    cv2.setNumThreads(saved[0])
    torch.set_num_threads(saved[1])
    return 1000 * make / order.size, 1000 * share / order.size


def train_step_rate(encoder: str, size: int, batch: int, steps: int) -> float:
    """Images/s of PYLON's forward + backward + Adam step on this machine's CPU (fp32)."""
    import torch

    from pylon.models import create_model

    model = create_model("pylon", encoder=encoder, encoder_weights=None, num_classes=14)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    x, y = torch.randn(batch, 1, size, size), torch.rand(batch, 14).round()

    def step():
        optimizer.zero_grad()
        out = model(x)
        logits = out.logits
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def write_nih(root: Path, n_images: int) -> None:
    """The official NIH layout with ``n_images`` tiny PNGs (the reopen cost is per file)."""
    images = root / "images"
    images.mkdir(parents=True)
    ok, png = cv2.imencode(".png", np.full((8, 8), 100, np.uint8))
    names = [f"{i // 10:08d}_{i % 10:03d}.png" for i in range(n_images)]
    for name in names:
        (images / name).write_bytes(png.tobytes())
    entries = ["Image Index,Finding Labels,Follow-up #,Patient ID"]
    entries += [
        f"{n},{'Mass' if i % 7 == 0 else 'No Finding'},0,{i // 10}" for i, n in enumerate(names)
    ]
    (root / "Data_Entry_2017.csv").write_text("\n".join(entries) + "\n")
    test = max(1, round(n_images * 25596 / 112120))  # NIH's test share
    (root / "train_val_list.txt").write_text("\n".join(names[test:]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[:test]) + "\n")
    (root / "BBox_List_2017.csv").write_text(
        f"Image Index,Finding Label,Bbox [x,y,w,h],,,\n{names[0]},Mass,1,1,4,4\n"
    )


def reopen_seconds(n_images: int, repeats: int = 3) -> tuple[int, float, float, float]:
    """Images of the NIH train split, its first (build) time, the best of ``repeats`` reopens
    (warm: albumentations and pandas already imported), and the time of the reopen's one stat
    pass over the sources (existence check and cache key) on its own."""
    from pylon.data import cache

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_nih(root, n_images)
        options = dict(split="train", size=32, cache_dir=root / "cache", progress=False)
        start = time.perf_counter()
        first = create_dataset("nih14", root, **options)
        build = time.perf_counter() - start
        reopen = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            create_dataset("nih14", root, **options)
            reopen = min(reopen, time.perf_counter() - start)
        start = time.perf_counter()
        cache.stat_sources([r.path for r in first.records])
        stat = time.perf_counter() - start
    return len(first), build, reopen, stat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--reopen-images",
        type=int,
        default=112120,
        help="images of the generated NIH layout (NIH has 112120; train split ~78k)",
    )
    parser.add_argument("--epoch", type=int, default=3000, help="samples per timed epoch")
    parser.add_argument("--model", default="resnet50", help="encoder of PYLON, or none")
    parser.add_argument("--model-batch", type=int, default=8)
    args = parser.parse_args()
    print(f"CPUs available: {len(os.sched_getaffinity(0))}, OpenCV threads {cv2.getNumThreads()}")
    rates: dict[int, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_images(folder, args.images)
        base = dict(split="all", augment=True, progress=False)
        for size in (256, 512):
            data = create_dataset("csv", folder, size=size, cache_dir=folder / "c", **base)
            rates[size] = {
                w: images_per_second(data, args.batch, w, epoch=args.epoch) for w in (0, 1, 2)
            }
            print(
                f"\n{size} px from a {size} px cache, train transform, batch {args.batch}: "
                f"0 workers {rates[size][0]:.0f} img/s, 1 worker {rates[size][1]:.0f}, "
                f"2 workers {rates[size][2]:.0f} ({rates[size][2] / 2:.0f} per worker)"
            )
            if size == 256:
                single = images_per_second(data, args.batch, 0, epoch=args.epoch, threads=1)
                plain = images_per_second(data, args.batch, 1, epoch=args.epoch, init=False)
                make, share = batch_costs(data, args.batch)
                print(
                    f"  0 workers with 1 OpenCV + 1 torch thread: {single:.0f} img/s; "
                    f"1 worker keeping OpenCV's threads ({cv2.getNumThreads()}): "
                    f"{plain:.0f} img/s\n"
                    f"  per image on one thread: items + collate {make:.2f} ms, then the copy "
                    f"into shared memory a worker makes to send the batch {share:.2f} ms"
                )
        direct = create_dataset("csv", folder, size=256, cache=False, **base)
        direct_rate = images_per_second(
            direct, args.batch, 1, epoch=max(args.images, 4 * args.batch)
        )
        cached_rate = rates[256][1]
        print(f"\ndirect decode of 1024 px PNGs: {direct_rate:.1f} img/s (1 worker)")
        print(f"cache / direct: {cached_rate / direct_rate:.1f}x (target >= 10x)")
        sharp = create_dataset(
            "csv", folder, size=256, cache_dir=folder / "c2", cache_size=512, **base
        )
        sharp_rate = images_per_second(sharp, args.batch, 1, epoch=args.epoch)
        print(
            f"256 px from a 512 px cache (data.cache_size=512, sharper crops): "
            f"{sharp_rate:.0f} img/s (1 worker), {sharp_rate / cached_rate:.2f}x the 256 px cache"
        )
    if args.model != "none":
        for size in (256, 512):
            steps = 3 if size == 256 else 2
            step = train_step_rate(args.model, size, args.model_batch, steps)
            per_worker = rates[size][1]
            print(
                f"\nPYLON-{args.model} training step at {size} px, batch {args.model_batch}, "
                f"CPU fp32: {step:.1f} img/s; one loader worker gives {per_worker:.0f} img/s, "
                f"{per_worker / step:.0f}x the step rate; a device training at R img/s needs "
                f"ceil(R / {per_worker:.0f}) workers"
            )
    if args.reopen_images:
        n, build, reopen, stat = reopen_seconds(args.reopen_images)
        print(
            f"\nnih14 train split of {n} images (tiny PNGs): first open {build:.1f} s (build), "
            f"reopen {reopen:.2f} s (best of 3; target <= 2 s), of which the stat pass "
            f"{stat:.2f} s"
        )


if __name__ == "__main__":
    main()
