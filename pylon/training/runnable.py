"""``check_runnable(config)``: what a valid config still needs from this machine and its data
before a run starts: the device for its precision, its weight files (or pretrained weights in the
cache, or a network to fetch them), splits that hold at least one batch. ``pylon train`` calls it
before any run folder, image cache or download exists, so a run that cannot start is refused in
one line instead of failing minutes later.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pylon.models.encoder import check_encoder_weights_available
from pylon.models.precision import resolve_execution
from pylon.training.config import ConfigError, TrainConfig, apply_overrides
from pylon.training.datamodule import build_dataset


def check_runnable(config: TrainConfig) -> None:
    """Refuse a config that this machine cannot run, before anything is created.

    Checks, for the config and each of its phases: the accelerator and precision on this
    machine, ``model.encoder_weights`` (the file exists, or pretrained weights are cached or can
    be downloaded), ``model.init_from`` (the file exists; ``{seed}`` replaced), and that the
    train and val splits can be read and the train split holds at least one batch (the splits'
    records are read; no image cache is built).

    Args:
        config: the run's config (validated here too).

    Raises:
        ConfigError: a key wrong on any machine (:meth:`TrainConfig.validate`), or a precision
            the device does not have (fp16 on the CPU).
        ValueError: naming the key that this machine or the data cannot honour.
        FileNotFoundError: a weights file or the dataset's files are missing.
        pylon.models.encoder.EncoderWeightsUnavailable: pretrained weights offline.
    """
    config.validate()
    phases = phase_configs(config)
    for index, phase in enumerate(phases):
        _check_machine(phase)
        _check_weights(phase, first=index == 0)
    checked: list[dict] = []
    for phase in phases:
        data = dataclasses.asdict(phase.data)
        if data not in checked:  # phases that only change the model or schedule read the same
            checked.append(data)
            _check_splits(phase)


def phase_configs(config: TrainConfig) -> list[TrainConfig]:
    """The configs a run trains with: ``[config]``, or one per phase (its overrides applied to
    ``config``)."""
    if not config.phases:
        return [config]
    base = dataclasses.replace(config, phases=[])
    return [apply_overrides(base, overrides) for overrides in config.phases]


def device_type(config: TrainConfig) -> str:
    """``"cuda"``, ``"mps"`` or ``"cpu"``: where ``config.accelerator`` runs on this machine
    (``auto`` is CUDA when there is a GPU)."""
    if config.accelerator in ("gpu", "cuda"):
        return "cuda"
    if config.accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.accelerator


def check_accelerator(config: TrainConfig) -> str:
    """The device ``config.accelerator`` runs on (:func:`device_type`), refusing a GPU this
    machine does not have with ``ValueError`` naming the option."""
    device = device_type(config)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"accelerator={config.accelerator!r}: no CUDA GPU is available to PyTorch on this "
            "machine (torch.cuda.is_available() is False); use --accelerator cpu or auto"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            "accelerator='mps': this PyTorch has no usable MPS (Apple GPU) backend on this "
            "machine; use --accelerator cpu or auto"
        )
    return device


def _check_machine(config: TrainConfig) -> None:
    device = check_accelerator(config)
    try:
        resolve_execution(config.precision, device, channels_last=config.model.channels_last)
    except ValueError as err:  # fp16 on the CPU: options that conflict, as predict's --precision
        raise ConfigError(str(err)) from None


def _check_weights(config: TrainConfig, *, first: bool) -> None:
    model = config.model
    check_encoder_weights_available(
        model.encoder, model.encoder_weights, where="model.encoder_weights"
    )
    # later phases start from the previous phase's best weights, whatever init_from says
    if first and model.init_from:
        init_from = model.init_from.replace("{seed}", str(config.seed))
        if not Path(init_from).is_file():
            raise FileNotFoundError(
                f"model.init_from: weights {init_from} not found (train the source run first)"
            )


def _check_splits(config: TrainConfig) -> None:
    data = config.data
    sizes = {}
    for key in ("train_split", "val_split"):
        split = getattr(data, key)
        try:
            sizes[key] = len(build_dataset(data, split, cache=False))
        except ValueError as err:
            raise ValueError(f"data.{key}={split!r}: {err}") from None
    if sizes["train_split"] < data.batch_size:
        raise ValueError(
            f"data.batch_size={data.batch_size}: larger than split {data.train_split!r} of "
            f"dataset {data.name!r}, which has {sizes['train_split']} images; expected at most "
            f"{sizes['train_split']}"
        )
