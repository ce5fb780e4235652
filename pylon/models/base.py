"""The one model contract: every model is a :class:`ClassMapModel`, whose template ``forward``
checks the input, computes the class map and pools it into image-level logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pylon.models.checks import check_input
from pylon.models.output import ModelOutput
from pylon.models.pooling import pool_class_map


class ClassMapModel(nn.Module):
    """Base class of every pylon model (weakly supervised: a class map pooled into logits).

    A subclass declares, as attributes or properties:

    * ``encoder``: the smp encoder (what :func:`~pylon.models.freeze.freeze_encoder` freezes);
    * ``class_head``: the ``nn.Conv2d`` that outputs the class map (what the prior init sets);
    * ``in_channels``: the number of input channels;
    * ``min_size``: the smallest input height/width (inputs must also be multiples of
      ``size_multiple``, 32);
    * ``pool``: how the map becomes logits (``"max"``, ``"avg"`` or ``"mil"``, see
      :func:`~pylon.models.pooling.pool_class_map`);
    * ``batchnorm_1x1``: ``None``, or ``(pixels, block)`` when a block batch-normalises a map
      with one cell per ``pixels`` x ``pixels`` of input (``pixels == 0``: a globally pooled,
      always 1x1 map), which cannot be trained on a single such cell;
    * ``reference_names``: prefixes renamed when loading a checkpoint written by the reference
      implementation (``{reference prefix: our prefix}``, empty when the names are equal);

    and implements :meth:`class_map`.
    """

    size_multiple: int = 32
    min_size: int = 32
    in_channels: int = 1
    pool: str = "max"
    mil_floor: float = 0.98
    batchnorm_1x1: tuple[int, str] | None = None
    reference_names: dict[str, str] = {}  # noqa: RUF012 (read-only class default)

    def class_map(self, x: Tensor) -> Tensor:
        """Return the raw class map ``(N, num_classes, h, w)`` of a checked input ``x``."""
        raise NotImplementedError

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` fits the model: ``(N, in_channels, H, W)`` with H and
        W multiples of ``size_multiple`` and at least ``min_size``, and in training mode enough
        cells for every batch-normalised map (the batch-norm 1x1 rule)."""
        check_input(
            x, in_channels=self.in_channels, multiple=self.size_multiple, min_size=self.min_size
        )
        if not self.training or self.batchnorm_1x1 is None:
            return
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        pixels, block = self.batchnorm_1x1
        height, width = int(x.shape[2]), int(x.shape[3])
        cells = 1 if pixels == 0 else (height // pixels) * (width // pixels)
        if x.shape[0] * cells < 2:
            where = f" below {2 * pixels} px" if pixels else ""
            raise ValueError(
                f"{type(self).__name__} in training mode needs a batch of at least 2 "
                f"images{where}: its {block} batch-normalises a 1x1 map there; "
                f"got input {tuple(x.shape)}"
            )

    def pool_logits(self, cam: Tensor) -> Tensor:
        """Pool the class map ``(N, C, h, w)`` into logits ``(N, C)`` the model's way."""
        return pool_class_map(cam, self.pool, mil_floor=self.mil_floor)

    def forward(self, x: Tensor) -> ModelOutput:
        """Check ``x``, compute its class map and pool it: ``ModelOutput(logits, cam)``.

        The map is cast to float32 before pooling, as the reference implementation does, so under
        autocast the logits (and the loss reduced from them) are float32 too.
        """
        self.check_input(x)
        cam = self.class_map(x).float()
        return ModelOutput(self.pool_logits(cam), cam)
