"""Resume checkpoints: an atomic, ``weights_only`` CheckpointIO and RNG states as tensors."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pylon.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes through a temp file + rename; reads only with ``torch.load(weights_only=True)``.

    Args:
        run: fingerprint of the run's config (:func:`run_fingerprint`), written into every
            checkpoint; a checkpoint that carries another one is refused on load.
        shapes: parameter name -> shape of the module being trained; a checkpoint whose
            ``state_dict`` does not match (the weights of another model) is refused on load.
    """

    def __init__(self, run: str | None = None, shapes: dict[str, tuple[int, ...]] | None = None):
        super().__init__()
        self.run = run
        self.shapes = shapes

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if self.run is not None:
            checkpoint["pylon_run"] = self.run
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"cannot load resume checkpoint {path} ({type(err).__name__}: {err}); "
                "delete it to restart the run from scratch"
            ) from None
        self._check_origin(path, checkpoint)
        return checkpoint

    def _check_origin(self, path: Path, checkpoint: dict[str, Any]) -> None:
        advice = "move it away (or pass --retrain) to start this run from scratch"
        saved = checkpoint.get("pylon_run")
        if self.run is not None and saved is not None and saved != self.run:
            raise ValueError(
                f"resume checkpoint {path} belongs to another run (it was written with a "
                f"different config than {path.parent.parent / 'config.yaml'}); {advice}"
            )
        if self.shapes is None:
            return
        state = checkpoint.get("state_dict")
        if not isinstance(state, dict):
            raise ValueError(f"resume checkpoint {path} holds no state_dict; {advice}")
        theirs = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
        if theirs != self.shapes:
            differs = sorted(set(theirs) ^ set(self.shapes)) or sorted(
                k for k in theirs if theirs[k] != self.shapes[k]
            )
            raise ValueError(
                f"resume checkpoint {path} holds the weights of another model (first difference: "
                f"{differs[0]}); {advice}"
            )


def run_fingerprint(config: dict[str, Any]) -> str:
    """A short stable hash of a run's config (as a dict), stored in its resume checkpoints."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
