"""The paper's experiments as named presets (``pylon presets`` lists them), plus quick CPU runs.

A preset is a description and a dict of dotted overrides on ``TrainConfig``; ``{seed}`` in
``model.init_from`` is replaced by the run's seed (transfer from the same seed's NIH run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pylon.training.config import ConfigError, TrainConfig, apply_overrides


@dataclass(frozen=True)
class Preset:
    description: str
    overrides: dict[str, Any]


# Baselines: model name and the options selecting the variant (the reference's model configs).
MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "pylon": ("pylon", {}, "PYLON (pyramid attention + 3 UP modules)"),
    "cam": ("cam", {}, "CAM backbone, global max pooling"),
    "li2018": ("li2018", {}, "Li et al. 2018, MIL pooling"),
    "fpn": ("fpn", {"norm": "batchnorm", "dropout": 0.0}, "FPN, BatchNorm segmentation blocks"),
    "fpn-gn": ("fpn", {"norm": "groupnorm", "dropout": 0.0}, "FPN, GroupNorm (smp's original)"),
    "unet": ("unet", {}, "U-Net, decoder 256-128-64-64-64"),
    "deeplabv3plus": ("deeplabv3plus", {}, "DeepLabV3+, ASPP with global pooling"),
    "deeplabv3plus-nogap": (
        "deeplabv3plus",
        {"aspp_pooling": False},
        "DeepLabV3+ without ASPP GAP",
    ),
    "pan": ("pan", {}, "PAN (128 channels, stride 32), with global pooling"),
    "pan-nogap": ("pan", {"gap": False}, "PAN without global pooling branch and GAU attention"),
}

# The reference's Config defaults (utils/exp_base.py): Adam lr 1e-4, ReduceLROnPlateau on the
# validation loss (patience 1, factor 0.2), stop at lr <= 1e-6, fp16 autocast (``auto`` is fp16
# on CUDA; on a CPU, which has no fast fp16, bf16 or fp32), best validation loss kept.
RECIPE = {
    "optim.lr": 1e-4,
    "optim.scheduler": "plateau",
    "optim.patience": 1,
    "optim.factor": 0.2,
    "optim.lr_term": 1e-6,
    "precision": "auto",
    "model.encoder": "resnet50",
    "model.encoder_weights": "imagenet",
    "data.batch_size": 64,
}


def _cache(size: int, **options: Any) -> dict[str, Any]:
    """Cache training images at twice the input size (at most the 1024 px originals), so that
    random crops are as sharp as the reference's crops of the full-size image; ``options`` are
    the dataset's other options."""
    return {"data.size": size, "data.options": {"cache_size": min(2 * size, 1024), **options}}


NIH = {
    **RECIPE,
    "data.name": "nih14",
    "data.root": "data/nih14",
    "data.loc_split": "bbox",
    "max_epochs": 40,
    "val_every": 1,
}
VINDR = {
    **RECIPE,
    "data.name": "vindr",
    "data.root": "data/vindr",
    "max_epochs": 100,
    "val_every": 3,
}
VOC = {
    **RECIPE,
    "data.name": "voc",
    "data.root": "data/VOCdevkit",
    "data.test_split": "val",
    "data.val_split": "val",
    "data.loc_split": "val",
    "max_epochs": 40,
    "val_every": 1,
}

SYNTHETIC = {
    "data.name": "synthetic",
    "data.batch_size": 16,
    "data.num_workers": 0,
    "data.split_options": {
        "train": {"num_images": 1024},
        "val": {"num_images": 128},
        "test": {"num_images": 256},
    },
    "model.encoder": "resnet18",
    "optim.lr": 1e-3,
    "optim.scheduler": "onecycle",
    "optim.warmup_frac": 0.1,
    "max_epochs": 8,
}


def _two_phase(first_epochs: int | None = None) -> list[dict[str, Any]]:
    """Frozen encoder first, then the whole network (initialised from phase 1's best)."""
    frozen: dict[str, Any] = {"model.freeze": "enc"}
    if first_epochs is not None:
        frozen["max_epochs"] = first_epochs
    return [frozen, {"model.freeze": None, "model.encoder_weights": None}]


def _build() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}

    def add(name: str, description: str, *parts: dict[str, Any]) -> None:
        overrides: dict[str, Any] = {"experiment": name}
        for part in parts:
            overrides.update(part)
        presets[name] = Preset(description, overrides)

    def model(key: str) -> dict[str, Any]:
        name, options, _ = MODELS[key]
        return {"model.name": name, "model.options": dict(options)}

    for key, (_, _, text) in MODELS.items():
        add(f"nih256-{key}", f"NIH ChestX-ray14, 256 px: {text}", NIH, _cache(256), model(key))
    for key in ("cam", "li2018", "fpn", "pylon"):
        add(
            f"nih512-{key}",
            f"NIH ChestX-ray14, 512 px: {MODELS[key][2]}",
            NIH,
            _cache(512),
            model(key),
        )
    for key in ("cam", "li2018", "fpn", "pylon"):
        add(f"vindr-{key}", f"VinDr-CXR, 256 px: {MODELS[key][2]}", VINDR, _cache(256), model(key))
    for key in ("cam", "pylon"):
        add(
            f"vindr-{key}-transfer",
            f"VinDr-CXR, {key.upper() if key == 'cam' else 'PYLON'} initialised from "
            f"runs/nih256-{key}/<seed> (all but the head)",
            VINDR,
            _cache(256),
            model(key),
            {"model.init_from": f"runs/nih256-{key}/{{seed}}/checkpoints/best.safetensors"},
        )
    add(
        "vindr-pylon-twophase",
        "VinDr-CXR PYLON from runs/nih256-pylon/<seed>: frozen encoder, then full fine-tuning",
        VINDR,
        _cache(256),
        model("pylon"),
        {"model.init_from": "runs/nih256-pylon/{seed}/checkpoints/best.safetensors"},
        {"phases": _two_phase()},
    )

    def voc_data() -> dict[str, Any]:
        """A fresh options dict per preset; the reference's VOC head has 21 outputs, a
        never-positive "background" first."""
        return _cache(256, background_class=True)

    for key in ("cam", "li2018", "fpn"):
        add(f"voc-{key}", f"Pascal VOC 2012, 256 px: {MODELS[key][2]}", VOC, voc_data(), model(key))
    add(
        "voc-pylon-twophase",
        "Pascal VOC 2012 PYLON: frozen ImageNet encoder, then full fine-tuning",
        VOC,
        voc_data(),
        model("pylon"),
        {"phases": _two_phase()},
    )
    for key in ("pylon", "cam", "li2018", "fpn"):
        add(
            f"synthetic-{key}",
            f"Quick CPU run on synthetic data, resnet18: {MODELS[key][2]}",
            SYNTHETIC,
            model(key),
        )
    add(
        "synthetic-pylon-twophase",
        "Quick CPU run on synthetic data: PYLON frozen encoder, then full fine-tuning",
        SYNTHETIC,
        model("pylon"),
        {"phases": _two_phase(first_epochs=3)},
    )
    return presets


PRESETS: dict[str, Preset] = _build()


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description."""
    return {name: preset.description for name, preset in PRESETS.items()}


def get_preset(name: str) -> TrainConfig:
    """The config of a preset.

    Args:
        name: a name of :func:`list_presets`.

    Returns:
        The validated ``TrainConfig``.

    Raises:
        ConfigError: for an unknown name (a wrong command line: exit 2 in the CLI).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; run `pylon presets` to list them")
    return apply_overrides(TrainConfig(), PRESETS[name].overrides)
