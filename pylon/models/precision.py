"""The one precision policy: which autocast dtype and memory format a model runs with, for
training, evaluation, prediction, export and the demo alike. Measured by ``bench/model.py``.

Vocabulary (config ``precision``, ``--precision`` of every command): ``auto``, ``fp32``,
``bf16``, ``fp16``. ``auto`` is fp16 autocast on CUDA (what the reference runs used), bf16
autocast on CPUs that compute bf16 natively (AVX512-BF16 or AMX: about 2-3x faster there), and
fp32 on other CPUs. channels_last goes with mixed precision unless asked otherwise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Older spellings (Lightning's and earlier pylon configs) mapped onto the vocabulary.
ALIASES = {"32": "fp32", "32-true": "fp32", "16": "fp16", "16-mixed": "fp16", "bf16-mixed": "bf16"}
LIGHTNING = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Bound on what bf16 autocast changes: probabilities (sigmoid of logits and of the CAM) stay within
# this absolute difference of float32's. Measured (bench/model.py, docs/models.md): ~0.01 with
# trained weights; up to ~0.06 on randomly initialised networks, which amplify rounding.
BF16_PROB_TOLERANCE = 0.1


def normalize_precision(name: str, *, field: str = "precision") -> str:
    """Map a precision name (or an older alias such as ``"32"``) onto :data:`PRECISIONS`.

    Args:
        name: the name given by a user or read from a config.
        field: how to name the setting in the error message.

    Returns:
        One of ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``.

    Raises:
        ValueError: for any other name, listing the accepted ones.
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise ValueError(f"{field}={name!r}; expected one of {', '.join(PRECISIONS)}")
    return key


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 matmuls run faster than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class Execution:
    """How a model runs: device type, resolved precision and memory format.

    Use it the same way everywhere::

        run = resolve_execution("auto", device)
        run.prepare_model(model)
        with run.autocast():
            out = model(run.prepare_input(images))
    """

    device_type: str
    precision: str  # "fp32", "bf16" or "fp16" (never "auto")
    channels_last: bool

    @property
    def mixed(self) -> bool:
        """True when autocast runs in a 16-bit dtype."""
        return self.precision != "fp32"

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (float32 when autocast is off)."""
        return DTYPES[self.precision]

    @property
    def lightning_precision(self) -> str:
        """The same choice in Lightning's ``Trainer(precision=...)`` spelling."""
        return LIGHTNING[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for the forward pass (and loss); a no-op in fp32."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.mixed)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place to the memory format (weights stay float32) and return it."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare_input(self, x: Tensor) -> Tensor:
        """The input batch ``x`` in the model's memory format (4-D inputs; others unchanged)."""
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def resolve_execution(
    precision: str = "auto",
    device: str | torch.device = "cpu",
    *,
    channels_last: bool | None = None,
) -> Execution:
    """Decide how to run on ``device``.

    Args:
        precision: one of :data:`PRECISIONS` (or an alias); ``auto`` picks fp16 on CUDA, bf16 on
            CPUs with native bf16, else fp32.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``);
            ``"gpu"`` means CUDA.
        channels_last: force the memory format; ``None`` turns it on with mixed precision.

    Returns:
        The :class:`Execution` to use.

    Raises:
        ValueError: for an unknown precision, or fp16 on the CPU (no fast fp16 kernels there).
    """
    name = normalize_precision(precision)
    device_type = "cuda" if str(device) == "gpu" else torch.device(device).type
    if name == "auto":
        if device_type == "cuda":
            name = "fp16"
        else:
            name = "bf16" if cpu_has_native_bf16() else "fp32"
    if name == "fp16" and device_type == "cpu":
        raise ValueError("precision='fp16' needs a CUDA device; on the CPU use 'bf16' or 'fp32'")
    if channels_last is None:
        channels_last = name != "fp32"
    return Execution(device_type=device_type, precision=name, channels_last=bool(channels_last))


def prepare_for_cpu(model: nn.Module, precision: str = "auto") -> Execution:
    """Resolve ``precision`` for the CPU, apply its memory format to ``model`` and return it."""
    run = resolve_execution(precision, "cpu")
    run.prepare_model(model)
    return run
