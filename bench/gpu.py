"""The prepared GPU check of issue 12: is a paper preset's training loader-bound on this machine?

Measures, in one run, PYLON-resnet50's training step rate (forward + backward + Adam, batch 64,
14 classes, 1 channel) at 256 and 512 px under fp16 and bf16 autocast (channels_last, as the
precision policy gives on CUDA; fp32 as a baseline), and the training loader's rate from the
resized-image cache with all of this machine's cores as workers, then prints the ratio and a
verdict per size. Synthetic data: smooth 1024 px PNGs written to a temporary folder.

Usage (about 3 minutes on one GPU): ``python bench/gpu.py``. A quick check that it runs at all,
on the CPU: ``python bench/gpu.py --device cpu --encoder resnet18 --sizes 256 --batch 2 --steps 1
--images 8 --precisions fp32 --epoch 8``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pylon.data import create_dataset
from pylon.models import create_model
from pylon.models.precision import resolve_execution

# the synthetic PNGs of bench/data.py (bench/ is a folder of scripts, not a package)
_spec = importlib.util.spec_from_file_location("bench_data", Path(__file__).with_name("data.py"))
_bench_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench_data)
write_images, images_per_second = _bench_data.write_images, _bench_data.images_per_second


def step_rate(
    encoder: str, size: int, batch: int, steps: int, precision: str, device: str
) -> float:
    """Images/s of one training step (forward, BCE on the logits, backward, Adam; a GradScaler
    under fp16, as Lightning's 16-mixed uses) after two warm-up steps."""
    execution = resolve_execution(precision, device)
    model = create_model("pylon", encoder=encoder, encoder_weights=None, num_classes=14)
    model = execution.prepare_model(model.to(device).train())
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    scaler = torch.amp.GradScaler(device, enabled=execution.precision == "fp16")
    x = execution.prepare_input(torch.randn(batch, 1, size, size, device=device))
    y = (torch.rand(batch, 14, device=device) < 0.3).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with execution.autocast():
            logits = model(x).logits
        scaler.scale(F.binary_cross_entropy_with_logits(logits.float(), y)).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(2):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--precisions", default="fp32,fp16,bf16")
    parser.add_argument("--images", type=int, default=640, help="PNGs the loader reads")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--epoch", type=int, default=3000, help="samples per timed loader epoch")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA GPU here; pass --device cpu for a smoke run")
    sizes = [int(s) for s in args.sizes.split(",")]
    precisions = args.precisions.split(",")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.workers} loader workers, batch {args.batch}")
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_images(folder, args.images)
        for size in sizes:
            rates = {}
            for precision in precisions:
                rates[precision] = step_rate(
                    args.encoder, size, args.batch, args.steps, precision, args.device
                )
                print(
                    f"{size} px PYLON-{args.encoder} training step, {precision}"
                    f"{' + channels_last' if precision != 'fp32' else ''}: "
                    f"{rates[precision]:.1f} img/s"
                )
            # the paper presets cache at twice the input size (sharper crops), at most 1024 px
            data = create_dataset(
                "csv",
                folder,
                split="all",
                size=size,
                augment=True,
                progress=False,
                cache_dir=folder / f"cache{size}",
                cache_size=min(2 * size, 1024),
            )
            loaded = images_per_second(
                data,
                args.batch,
                args.workers,
                epoch=args.epoch,
                repeats=2,
                pin_memory=torch.cuda.is_available(),
            )
            fastest = max(rates, key=rates.get)
            ratio = loaded / rates[fastest]
            verdict = "loader-bound" if ratio < 1 else "not loader-bound"
            print(
                f"{size} px loader, {args.workers} workers, cache {min(2 * size, 1024)} px: "
                f"{loaded:.1f} img/s = {ratio:.2f}x the fastest step ({fastest}): {verdict}"
                f"; {rates[fastest] / (loaded / max(args.workers, 1)):.2f} workers keep it busy"
            )


if __name__ == "__main__":
    main()
