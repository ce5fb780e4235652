"""The metric's up-sampled probability maps and their peak: the one peak finder of the project.

A map is scored as ``sigmoid(cam)`` in float32, up-sampled with
``F.interpolate(mode="bilinear", align_corners=False)`` to the input size (H, W); its peak is the
first maximum in row-major order, i.e. ``argmax`` of the flattened map. Maps are processed a chunk
at a time, on the device they are on, so that memory stays bounded whatever their number.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

# Up-sampled bytes per chunk. On the CPU a few maps that stay in the cache are fastest (measured:
# 4-8 maps of 256x256); a GPU wants large chunks.
CPU_CHUNK_BYTES = 8 * 2**20
DEVICE_CHUNK_BYTES = 512 * 2**20


def as_image_size(image_size) -> tuple[int, int]:
    """``image_size`` as a checked ``(H, W)`` pair of positive ints."""
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), got {image_size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


def chunk_pairs(
    image_size: tuple[int, int], device: torch.device, bytes_per_pixel: int, budget: int | None
) -> int:
    """Maps per chunk so that ``bytes_per_pixel`` bytes per output pixel of ``image_size`` (H, W)
    fit ``budget`` bytes (default: ``CPU_CHUNK_BYTES`` when ``device`` is the CPU,
    ``DEVICE_CHUNK_BYTES`` elsewhere); at least 1."""
    if budget is None:
        budget = CPU_CHUNK_BYTES if device.type == "cpu" else DEVICE_CHUNK_BYTES
    return max(1, budget // (bytes_per_pixel * image_size[0] * image_size[1]))


def full_precision(device: torch.device):
    """A context with autocast off on ``device``: an enclosing bf16/fp16 autocast must not touch
    the metric."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def check_maps(maps: Tensor, apply_sigmoid: bool, name) -> None:
    """Raise ``ValueError`` naming ``name(k)`` for the first map ``k`` of ``maps`` (P, h, w) that
    holds NaN or infinity (or, when ``apply_sigmoid`` is False, a negative value)."""
    fine = torch.isfinite(maps).flatten(1).all(dim=1)
    if not apply_sigmoid:
        fine &= (maps >= 0).flatten(1).all(dim=1)
    if bool(fine.all()):
        return
    k = int((~fine).nonzero()[0, 0])
    if not torch.isfinite(maps[k]).all():
        raise ValueError(f"{name(k)} contains NaN or infinite values")
    raise ValueError(
        f"{name(k)} has negative values but apply_sigmoid=False expects probabilities in "
        "[0, 1]; pass raw scores with apply_sigmoid=True"
    )


def upsample(maps: Tensor, image_size: tuple[int, int], apply_sigmoid: bool) -> Tensor:
    """Probability maps (P, H, W) = ``image_size`` float32 of maps ``maps`` (P, h, w):
    ``sigmoid`` in float32 (unless ``apply_sigmoid`` is False), then bilinear up-sampling,
    ``align_corners=False``."""
    maps = maps.float()
    if apply_sigmoid:
        maps = maps.sigmoid()
    up = F.interpolate(maps[:, None], size=image_size, mode="bilinear", align_corners=False)
    return up[:, 0]


def first_peaks(up: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row, column (P,) long and value (P,) of the first maximum in row-major order of each map
    of ``up`` (P, H, W): the first row holding the maximum, then its first column holding it, the
    pixel ``argmax`` of the flattened map returns (one pass over the maps instead of argmax's
    slower scan)."""
    row_max = up.amax(dim=2)
    peak = row_max.amax(dim=1)
    # argmax returns the first maximal index (documented); on 0/1 values, the first 1.
    rows = (row_max == peak[:, None]).to(torch.uint8).argmax(dim=1)
    line = up[torch.arange(len(up), device=up.device), rows]
    cols = (line == peak[:, None]).to(torch.uint8).argmax(dim=1)
    return rows, cols, peak


def peak_locations(
    cams: Tensor,
    size: tuple[int, int],
    *,
    apply_sigmoid: bool = True,
    chunk_bytes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The metric's peak pixel of every map: the point-localization arg-max.

    Args:
        cams: raw class maps, (N, C, h, w) or (P, h, w), on any device (the work runs there);
            probabilities in [0, 1] with ``apply_sigmoid=False``.
        size: (H, W), the network input size the maps are up-sampled to.
        apply_sigmoid: apply ``sigmoid`` (in float32) first.
        chunk_bytes: memory for the up-sampled maps of one chunk (default: 8 MiB on the CPU,
            512 MiB on a GPU).

    Returns:
        ``(rows, cols)``, long CPU tensors of shape (N, C) or (P,): the first maximum in
        row-major order of ``sigmoid(cam)`` up-sampled bilinearly (``align_corners=False``) to
        ``size``, i.e. ``divmod(up.flatten().argmax(), W)``. Raises ``ValueError`` for a map with
        NaN or infinity.
    """
    if not isinstance(cams, Tensor) or cams.ndim not in (3, 4) or not cams.is_floating_point():
        raise ValueError(
            "cams must be a floating-point tensor of shape (N, C, h, w) or (P, h, w), got "
            f"{getattr(cams, 'shape', type(cams).__name__)}"
        )
    size = as_image_size(size)
    maps = cams.detach().flatten(0, 1) if cams.ndim == 4 else cams.detach()
    step = chunk_pairs(size, maps.device, 4, chunk_bytes)
    rows, cols = [], []
    with torch.no_grad(), full_precision(maps.device):
        for start in range(0, len(maps), step):
            chunk = maps[start : start + step]
            check_maps(chunk, apply_sigmoid, _map_name(cams, start))
            r, c, _ = first_peaks(upsample(chunk, size, apply_sigmoid))
            rows.append(r.cpu())
            cols.append(c.cpu())
    shape = cams.shape[:-2]
    empty = torch.zeros(0, dtype=torch.long)
    rows = torch.cat(rows) if rows else empty
    cols = torch.cat(cols) if cols else empty
    return rows.reshape(shape), cols.reshape(shape)


def _map_name(cams: Tensor, start: int):
    if cams.ndim == 4:
        return lambda k: f"cams[{(start + k) // cams.shape[1]}, {(start + k) % cams.shape[1]}]"
    return lambda k: f"cams[{start + k}]"
