"""Reading state dicts safely (safetensors, or pickles only with ``torch.load(weights_only=True)``)
and matching them to a model by name and shape, including the reference implementation's names."""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pkl", ".pt", ".pth", ".bin", ".ckpt")
# "net": the reference's older single-file checkpoints, {"net": ..., "opt": ..., "state": ...}
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_PREFIXES = ("module.", "model.")
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


@dataclass
class LoadReport:
    """What :func:`~pylon.models.weights.load_weights` did: tensors loaded, and those skipped.

    Attributes:
        loaded: names loaded.
        missing: in the model, not in the file.
        unexpected: in the file, not in the model.
        mismatched: in both, with different shapes.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every name and shape matched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """Return a one-line account, e.g. ``loaded 409 tensors; 2 shape-mismatched (...)``."""
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


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read the tensors of a weights file.

    Args:
        path: a ``.safetensors`` file, or a plain PyTorch state dict (``.pkl/.pt/.pth/.bin/.ckpt``)
            read with ``weights_only=True``; common wrappers (``{"state_dict": ...}``,
            ``{"model": ...}``) are unwrapped.

    Returns:
        ``{name: tensor}``. A pickle holding anything but tensors and plain containers (a pickled
        Python object, e.g. the ``argparse.Namespace`` of a Lightning checkpoint's
        hyper-parameters) is refused with a ``ValueError``: it is never unpickled.
    """
    path = existing_file(path)
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
        raise ValueError(_unsafe_pickle_message(path, str(err))) from None
    except (RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError) as err:
        # a file that is not a pickle at all: pickle's opcode table raises KeyError, and so on
        raise ValueError(f"{path}: not a readable PyTorch weights file ({err!r})") from None
    return _unwrap(obj, path)


def _unsafe_pickle_message(path: Path, error: str) -> str:
    found = _UNSAFE_GLOBAL.search(error)
    what = f"a pickled Python object ({found.group(1)})" if found else "a pickled Python object"
    if path.suffix.lower() == ".ckpt":
        hint = (
            "A Lightning checkpoint keeps its hyper-parameters as such an object. Use the run's "
            "best.safetensors instead, or, in a session that trusts the file, save only its "
            "tensors: torch.save(checkpoint['state_dict'], 'weights.pt')"
        )
    else:
        hint = (
            "Save only the tensors (torch.save(model.state_dict(), 'weights.pt')) or convert "
            "the file to .safetensors, in a session that trusts it"
        )
    return (
        f"{path}: refused for safety: it holds {what}, and pylon reads weights only as plain "
        f"tensors and containers (torch.load with weights_only=True). {hint}"
    )


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
            f"'state_dict', 'model' or 'net'), got {type(obj).__name__}"
        )
    return dict(obj)


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def to_model_names(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename ``state`` to ``model``'s parameter names where it uses other ones.

    Args:
        model: the target model.
        state: tensors from a file.

    Returns:
        ``state`` without a DataParallel ``module.`` / Lightning ``model.`` prefix the model
        lacks, and, when the file follows the reference implementation's layout (the model's
        ``reference_names`` prefix map, e.g. ``net.``/``out.`` of the CAM baseline), renamed to
        ours: whichever naming matches more of the model's tensors.
    """
    own = set(model.state_dict())
    state = dict(state)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    renames = getattr(model, "reference_names", None) or {}
    if renames:
        renamed = {_rename(k, renames): v for k, v in state.items()}
        if len(own.intersection(renamed)) > len(own.intersection(state)):
            logger.info("reading the reference implementation's names: %s", renames)
            state = renamed
    return state


def _rename(name: str, renames: Mapping[str, str]) -> str:
    for old in sorted(renames, key=len, reverse=True):  # longest prefix first
        if name.startswith(old):
            return renames[old] + name[len(old) :]
    return name


def match_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> LoadReport:
    """Compare ``state`` with ``model.state_dict()`` by name and shape (nothing is loaded).

    Args:
        model: the target model.
        state: tensors by name.

    Returns:
        A :class:`LoadReport` of what would load.
    """
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


def existing_file(path: str | os.PathLike) -> Path:
    """Check that a weights file exists.

    Args:
        path: the file.

    Returns:
        ``path`` as a ``Path``; ``FileNotFoundError`` naming it unless it is a file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path
