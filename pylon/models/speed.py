"""The default CPU execution path: bfloat16 autocast + channels_last where the CPU computes bf16
natively (AVX512-BF16 or AMX), plain float32 elsewhere. Measured by ``bench/model.py``."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# Bound on what bf16 autocast changes: probabilities (sigmoid of logits and of the CAM) stay within
# this absolute difference of float32's. Measured (bench/model.py, docs/models.md): ~0.01 with
# trained weights; up to ~0.06 on randomly initialised networks, which amplify rounding.
BF16_PROB_TOLERANCE = 0.1
ENV_VAR = "PYLON_CPU_PRECISION"  # "auto" (default), "bf16" or "fp32"


@dataclass(frozen=True)
class CpuExecution:
    """How to run a model on the CPU: ``bf16`` autocast and/or ``channels_last`` memory format."""

    bf16: bool
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for the forward pass (and loss); a no-op when ``bf16`` is off."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place to the memory format (weights stay float32)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare_input(self, x: Tensor) -> Tensor:
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 matmuls run faster than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def recommended_cpu_execution() -> CpuExecution:
    """The fastest path whose probabilities stay within ``BF16_PROB_TOLERANCE`` of float32's.

    Override with the environment variable ``PYLON_CPU_PRECISION=fp32`` (or ``bf16``).
    """
    choice = os.environ.get(ENV_VAR, "auto").lower()
    if choice not in ("auto", "bf16", "fp32"):
        raise ValueError(f"{ENV_VAR} must be 'auto', 'bf16' or 'fp32', got {choice!r}")
    bf16 = choice == "bf16" or (choice == "auto" and cpu_has_native_bf16())
    return CpuExecution(bf16=bf16, channels_last=bf16)


def prepare_for_cpu(model: nn.Module) -> CpuExecution:
    """Apply :func:`recommended_cpu_execution` to ``model`` and return it for the inputs/autocast::

    run = prepare_for_cpu(model)
    with run.autocast():
        out = model(run.prepare_input(images))
    logits = out.logits.float()
    """
    run = recommended_cpu_execution()
    run.prepare_model(model)
    return run
