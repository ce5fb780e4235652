"""Time ``pylon benchmark`` on synthetic test images for one model, by metric family.

Builds a run folder of PYLON-resnet18 at 256 px (random weights: the metrics' cost depends on the
maps' shapes, not on training; a trained map has fewer contours, so MaxBoxAcc is if anything
faster), scores its own CAM with every metric of the benchmark, and prints the seconds per
family, their share of the total and the share spent in model forwards (faithfulness on
``--faithfulness-images`` images); then once more without faithfulness and with the coarser
MaxBoxAcc grid (``cam_interval=0.01``), and the ratio of MaxBoxAcc's times.
Run: ``.venv/bin/python bench/benchmark.py [--images 512 --faithfulness-images 16]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pylon import create_model, save_weights
from pylon.data import create_dataset
from pylon.evaluation.benchmark import RunInfo, score_run_method
from pylon.evaluation.benchmark_scoring import OWN, BenchmarkOptions
from pylon.training.config import DataConfig, ModelConfig, TrainConfig
from pylon.training.runs import RunPaths


def make_run(root: Path, images: int, size: int) -> Path:
    paths = RunPaths.of(root, "bench", 0)
    config = TrainConfig(
        experiment="bench",
        model=ModelConfig(name="pylon", encoder="resnet18"),
        data=DataConfig(name="synthetic", size=size, options={"num_images": images}),
    )
    config.to_yaml(paths.config)
    dataset = create_dataset("synthetic", None, "test", size=size, num_images=images)
    torch.manual_seed(0)
    model = create_model("pylon", encoder="resnet18", num_classes=len(dataset.class_names))
    info = {"class_names": dataset.class_names, "size": size, "in_channels": 1}
    save_weights(model, paths.best, metadata={"pylon_data": info})
    paths.mark_done()
    return paths.root


def run_once(run: Path, out: Path, images: int, options: BenchmarkOptions) -> dict[str, float]:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    results, ids, _ = score_run_method(
        RunInfo(run, "bench/0", "bench"),
        OWN,
        split="test",
        max_images=images,
        options=options,
        out_dir=out,
        progress=False,
        timings=timings,
    )
    timings["total"] = time.perf_counter() - start
    timings["pairs"] = float(len(results["point"]))
    timings["images"] = float(len(ids))
    return timings


def report(title: str, timings: dict[str, float]) -> None:
    total = timings["total"]
    print(
        f"\n{title}: {int(timings['images'])} images, {int(timings['pairs'])} pairs, "
        f"{total:.1f} s ({timings['images'] / total:.1f} img/s)"
    )
    for name, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
        if name in ("total", "pairs", "images"):
            continue
        print(f"  {name:<24} {seconds:8.1f} s  {100 * seconds / total:5.1f} %")
    other = total - sum(v for k, v in timings.items() if k not in ("total", "pairs", "images"))
    print(f"  {'data and bookkeeping':<24} {other:8.1f} s  {100 * other / total:5.1f} %")
    forwards = timings.get("maps (model forwards)", 0.0)
    print(f"  share in model forwards (maps): {100 * forwards / total:.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--faithfulness-images", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = make_run(root / "runs", args.images, args.size)
        options = BenchmarkOptions(faithfulness_images=args.faithfulness_images)
        timings = run_once(run, root / "out", args.images, options)
        report(
            f"PYLON-resnet18 {args.size} px, own CAM, every metric (faithfulness on "
            f"{args.faithfulness_images} images)",
            timings,
        )
        coarse = BenchmarkOptions(cam_interval=0.01, faithfulness_images=0)
        fast = run_once(run, root / "coarse", args.images, coarse)
        report("the same without faithfulness, MaxBoxAcc grid 0.01", fast)
        ratio = timings["MaxBoxAccV2"] / fast["MaxBoxAccV2"]
        print(f"MaxBoxAccV2 on the paper's 0.001 grid / on 0.01: {ratio:.2f}x")
    print(f"\ntorch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
