"""Save and load model weights: safetensors with the model config embedded (byte-reproducible),
and loading of those, of released PyTorch state dicts and of the reference implementation's
checkpoints into a pylon model."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor, nn

from pylon.io import atomic_path
from pylon.models.state_dict import (
    PICKLE_SUFFIXES,
    LoadReport,
    existing_file,
    match_state_dict,
    read_state_dict,
    to_model_names,
)

logger = logging.getLogger(__name__)

MODEL_METADATA_KEY = "pylon_model"


def save_weights(
    model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> None:
    """Write ``model.state_dict()`` to a ``.safetensors`` file atomically.

    Args:
        model: the model; its ``pylon_config`` goes under metadata key ``"pylon_model"`` (JSON).
        path: the file to write.
        metadata: other entries, stored as given if strings, else as JSON (keys sorted).

    Returns:
        None. The file's bytes depend only on the tensors and the metadata: two identical models
        give identical files (metadata keys sorted; safetensors itself orders them at random).
    """
    header: dict[str, str] = {}
    config = getattr(model, "pylon_config", None)
    if config is not None:
        header[MODEL_METADATA_KEY] = json.dumps(config, sort_keys=True)
    for key, value in (metadata or {}).items():
        header[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    # clone: safetensors refuses tensors that share storage
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    blob = _with_sorted_header(save(state, metadata=header))
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def _with_sorted_header(blob: bytes) -> bytes:
    """Re-serialise a safetensors header with ``__metadata__`` keys sorted (same data bytes)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    ordered: dict[str, Any] = {}
    if "__metadata__" in header:
        ordered["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    ordered.update(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0])))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def read_weights_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read the metadata of a weights file written by :func:`save_weights`.

    Args:
        path: a ``.safetensors`` file.

    Returns:
        ``{"model": pylon_config or None, **other metadata (JSON-decoded where it is JSON)}``.
    """
    path = existing_file(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: a PyTorch {path.suffix} file, where pylon expects a .safetensors weights "
            "file written by pylon (a run's best.safetensors, which carries the model and its "
            "preprocessing). Pass that file; a plain state dict can be loaded into a model "
            "built with pylon.create_model(...) by pylon.load_weights(model, path)"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    result: dict[str, Any] = {"model": None}
    for key, value in raw.items():
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            decoded = value
        result["model" if key == MODEL_METADATA_KEY else key] = decoded
    return result


def load_weights(
    model: nn.Module, path: str | os.PathLike, *, strict: bool = True, transfer: bool = False
) -> LoadReport:
    """Load a weights file into ``model`` in place.

    Args:
        model: the target model.
        path: ``.safetensors`` or a plain PyTorch state dict (see
            :func:`~pylon.models.state_dict.read_state_dict`): ours, a released checkpoint, or
            one trained with the reference implementation (its names are mapped to ours, see
            docs/models.md).
        strict: every name and shape must match, else ``ValueError``.
        transfer: (or ``strict=False``) load every tensor whose name and shape match (e.g. a
            14-class model into a 15-class one: all but the head) and log what was skipped.

    Returns:
        A :class:`~pylon.models.state_dict.LoadReport`.
    """
    path = Path(path)
    state = to_model_names(model, read_state_dict(path))
    report = match_state_dict(model, state)
    if strict and not transfer and not report.complete:
        raise ValueError(
            f"{path}: weights do not fit the model ({report.summary()}); "
            "use load_weights(..., strict=False) to load only the matching tensors"
        )
    if not report.loaded:
        raise ValueError(f"{path}: no tensor matches the model by name and shape")
    model.load_state_dict(_subset(state, report.loaded), strict=False)
    if not report.complete:
        logger.warning("%s: %s", path, report.summary())
    return report


def _subset(state: Mapping[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    return {k: state[k] for k in names}


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved by :func:`save_weights` and load its weights strictly.

    Args:
        path: a ``.safetensors`` file with ``pylon_model`` metadata.

    Returns:
        The model (in train mode, as built).
    """
    from pylon.models.registry import create_model_from_config

    config = read_weights_metadata(path)["model"]
    if config is None:
        raise ValueError(
            f"{path}: has no '{MODEL_METADATA_KEY}' metadata; build the model with create_model() "
            "and use load_weights()"
        )
    model = create_model_from_config(config)
    load_weights(model, path, strict=True)
    return model
