"""Resume checkpoints: an atomic, ``weights_only`` CheckpointIO and RNG states as tensors."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pylon.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes through a temp file + rename; reads only with ``torch.load(weights_only=True)``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"cannot load resume checkpoint {path} ({type(err).__name__}: {err}); "
                "delete it to restart the run from scratch"
            ) from None


def capture_rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and ints (loadable with weights_only=True)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "python_version": int(py_version),
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": py_gauss,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(
        (
            "MT19937",
            states["numpy_keys"].numpy().astype(np.uint32),
            states["numpy_pos"],
            states["numpy_has_gauss"],
            states["numpy_gauss"],
        )
    )
    random.setstate(
        (
            states["python_version"],
            tuple(int(v) for v in states["python_state"].tolist()),
            states["python_gauss"],
        )
    )
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
