"""Save and load model weights safely: safetensors with the model config embedded, or released
PyTorch state dicts read only through ``torch.load(weights_only=True)``; transfer and freezing."""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pylon.io import atomic_path

logger = logging.getLogger(__name__)

MODEL_METADATA_KEY = "pylon_model"
PICKLE_SUFFIXES = (".pkl", ".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("module.", "model.")


@dataclass
class LoadReport:
    """What :func:`load_weights` did: tensors loaded, and those skipped and why."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # in both, different shapes

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        for label, names in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape-mismatched", self.mismatched),
        ):
            if names:
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                parts.append(f"{len(names)} {label} ({shown})")
        return "; ".join(parts)


def save_weights(
    model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> None:
    """Write ``model.state_dict()`` to a ``.safetensors`` file atomically.

    The model's ``pylon_config`` goes under metadata key ``"pylon_model"`` (JSON); other
    ``metadata`` values are stored as given if strings, else as JSON.
    """
    header: dict[str, str] = {}
    config = getattr(model, "pylon_config", None)
    if config is not None:
        header[MODEL_METADATA_KEY] = json.dumps(config)
    for key, value in (metadata or {}).items():
        header[str(key)] = value if isinstance(value, str) else json.dumps(value)
    # clone: safetensors refuses tensors that share storage
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def read_weights_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``{"model": pylon_config or None, **other metadata (JSON-decoded where it is JSON)}``."""
    path = _existing_file(path)
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


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or of a plain PyTorch state dict (``.pkl/.pt/.pth/...``).

    Pickles are read with ``weights_only=True``; anything that is not plain tensors/containers
    (i.e. could run code when unpickled) is refused with a ``ValueError``. Common wrappers
    (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped.
    """
    path = _existing_file(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if suffix not in PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported weights file type {suffix!r}; "
            f"expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused for safety: it is not a plain state dict of tensors and loading it "
            f"would execute code from the file ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable PyTorch weights file ({err})") from None
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise ValueError(
            f"{path}: expected a state dict (a mapping of names to tensors, possibly under "
            f"'state_dict' or 'model'), got {type(obj).__name__}"
        )
    return dict(obj)


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def _strip_prefixes(state: dict[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Drop a DataParallel ``module.`` / Lightning ``model.`` prefix the model itself lacks."""
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state) and not any(
            k.startswith(prefix) for k in model_keys
        ):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def match_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> LoadReport:
    """Compare ``state`` with ``model.state_dict()`` by name and shape (nothing is loaded)."""
    own = model.state_dict()
    report = LoadReport()
    for name, tensor in state.items():
        if name not in own:
            report.unexpected.append(name)
        elif tuple(own[name].shape) != tuple(tensor.shape):
            report.mismatched.append(name)
        else:
            report.loaded.append(name)
    report.missing = [name for name in own if name not in state]
    return report


def load_weights(
    model: nn.Module, path: str | os.PathLike, *, strict: bool = True, transfer: bool = False
) -> LoadReport:
    """Load a weights file into ``model`` in place and return a :class:`LoadReport`.

    ``strict=True`` (default): every name and shape must match, else ``ValueError``.
    ``strict=False`` or ``transfer=True``: load every tensor whose name and shape match (e.g. a
    14-class model into a 15-class one: all but the head) and log what was skipped.
    """
    path = Path(path)
    state = _strip_prefixes(read_state_dict(path), set(model.state_dict()))
    report = match_state_dict(model, state)
    if strict and not transfer and not report.complete:
        raise ValueError(
            f"{path}: weights do not fit the model ({report.summary()}); "
            "use load_weights(..., strict=False) to load only the matching tensors"
        )
    if not report.loaded:
        raise ValueError(f"{path}: no tensor matches the model by name and shape")
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    if not report.complete:
        logger.warning("%s: %s", path, report.summary())
    return report


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved by :func:`save_weights` (config from its metadata), load strictly."""
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


def _set_batchnorm_eval(module: nn.Module, args: Any) -> None:
    module.training = False


def freeze_encoder(model: nn.Module, *, batchnorm_eval: bool = True) -> int:
    """Stop training ``model.encoder``: ``requires_grad=False`` on its parameters; with
    ``batchnorm_eval`` its BatchNorm layers also keep using (and stop updating) their running
    statistics even after ``model.train()``. Returns the number of frozen parameters."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(model).__name__} has no 'encoder' submodule to freeze")
    count = 0
    for param in encoder.parameters():
        param.requires_grad_(False)
        count += param.numel()
    if batchnorm_eval:
        for module in encoder.modules():
            is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
            if is_bn and _set_batchnorm_eval not in module._forward_pre_hooks.values():
                module.eval()
                # model.train() flips BN back to training; the hook undoes that before each call
                module.register_forward_pre_hook(_set_batchnorm_eval)
    return count


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path
