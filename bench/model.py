"""Benchmark PYLON-resnet50 on the CPU: float32 vs bf16 autocast, with and without channels_last.

Prints images/s for forward (inference) and forward+backward (training) at 256 px, batch 8, their
ratios to float32, and how far each path's outputs are from float32's: on the randomly initialised
resnet50 (a pessimistic case: random BatchNorm ResNets amplify rounding) and, with ``--weights``,
on a trained checkpoint saved by ``pylon.save_weights`` (any encoder; synthetic-data images).
Run: ``.venv/bin/python bench/model.py [--size 256 --batch 8 --iters 2 --weights W.safetensors]``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from pylon.models import create_model, load_model
from pylon.models.precision import Execution, cpu_has_native_bf16, resolve_execution

PATHS = {
    "fp32": Execution("cpu", "fp32", channels_last=False),
    "fp32 + channels_last": Execution("cpu", "fp32", channels_last=True),
    "bf16": Execution("cpu", "bf16", channels_last=False),
    "bf16 + channels_last": Execution("cpu", "bf16", channels_last=True),
}


def _xray_like(n: int, size: int, seed: int) -> torch.Tensor:
    """Images that differ from each other in structure, contrast and brightness (unlike white
    noise), so that BatchNorm statistics estimated from them resemble a trained model's."""
    g = torch.Generator().manual_seed(seed)
    shape = F.interpolate(torch.randn(n, 1, 8, 8, generator=g), size=(size, size), mode="bicubic")
    contrast = 2 * torch.rand(n, 1, 1, 1, generator=g)
    noise = 0.3 * torch.randn(n, 1, size, size, generator=g)
    return shape * contrast + noise + torch.randn(n, 1, 1, 1, generator=g)


def _time(fn, iters: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def _trained_deviations(args: argparse.Namespace) -> None:
    """Deviations of a trained checkpoint on in-distribution images (the synthetic val split)."""
    from pylon.data.registry import create_dataset
    from pylon.data.sample import collate

    trained = load_model(args.weights).eval()
    config = trained.pylon_config
    data = create_dataset("synthetic", split="val", size=args.size, num_images=args.batch)
    x = collate([data[i] for i in range(args.batch)])["image"]
    x = x[:, :1].repeat(1, config["in_channels"], 1, 1)
    with torch.inference_mode():
        ref = trained(x)
    print(f"\ntrained {config['name']}-{config['encoder']} ({args.weights}), synthetic val images:")
    for label, run in PATHS.items():
        model = run.prepare_model(copy.deepcopy(trained))
        with torch.inference_mode(), run.autocast():
            out = model(run.prepare_input(x))
        d_logit = (out.logits.float() - ref.logits).abs().max().item()
        d_prob = (out.logits.float().sigmoid() - ref.logits.sigmoid()).abs().max().item()
        d_map = (out.cam.float().sigmoid() - ref.cam.sigmoid()).abs().max().item()
        print(f"{label:<22}{d_logit:>11.4f}{d_prob:>19.4f}{d_map:>18.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--weights", help="a trained checkpoint to measure deviations on")
    args = parser.parse_args()

    torch.manual_seed(0)
    x = _xray_like(args.batch, args.size, seed=0)
    target = (torch.rand(args.batch, 14) < 0.3).float()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {cpu_has_native_bf16()}"
    )
    print(f"PYLON-resnet50, 1 channel, 14 classes, batch {args.batch} at {args.size} px")
    print(
        "deviations: max over the batch vs fp32, eval mode, BatchNorm calibrated on other batches\n"
    )

    base = create_model("pylon", encoder="resnet50")
    # BatchNorm statistics from other images, so eval outputs have a trained model's scale
    for m in base.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        for seed in range(1, 3):
            base.train()(_xray_like(args.batch, args.size, seed))

    results, reference = {}, None
    for label, run in PATHS.items():
        model = run.prepare_model(copy.deepcopy(base))
        xin = run.prepare_input(x)

        def forward(model=model, run=run, xin=xin):
            with torch.inference_mode(), run.autocast():
                return model(xin)

        def train_step(model=model, run=run, xin=xin):
            model.zero_grad(set_to_none=True)
            with run.autocast():
                out = model(xin)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits.float(), target)
            loss.backward()

        model.eval()
        out = forward()
        logits, heatmap = out.logits.float(), out.cam.float().sigmoid()
        reference = (logits, heatmap) if reference is None else reference
        devs = (
            (logits - reference[0]).abs().max().item(),
            (logits.sigmoid() - reference[0].sigmoid()).abs().max().item(),
            (heatmap - reference[1]).abs().max().item(),
        )
        fwd = _time(forward, args.iters)
        model.train()
        bwd = _time(train_step, args.iters)
        results[label] = (args.batch / fwd, args.batch / bwd, *devs)

    base_f, base_b = results["fp32"][:2]
    header = f"{'path':<22}{'fwd img/s':>10}{'x fp32':>8}{'fwd+bwd img/s':>15}{'x fp32':>8}"
    print(header + f"{'|d logit|':>11}{'|d sigmoid(logit)|':>19}{'|d sigmoid(cam)|':>18}")
    for label, (f, b, d_logit, d_prob, d_map) in results.items():
        print(
            f"{label:<22}{f:>10.2f}{f / base_f:>8.2f}{b:>15.2f}{b / base_b:>8.2f}"
            f"{d_logit:>11.4f}{d_prob:>19.4f}{d_map:>18.4f}"
        )
    if args.weights:
        _trained_deviations(args)
    rec = resolve_execution("auto", "cpu")
    print(
        f"\nprecision 'auto' on this CPU (pylon.models.precision): {rec.precision}, "
        f"channels_last={rec.channels_last}"
    )


if __name__ == "__main__":
    main()
