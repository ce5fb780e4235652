"""The paper's experiments as named presets (``pylon presets`` lists them), plus quick CPU runs.

A preset is a description and a dict of dotted overrides on ``TrainConfig``; ``{seed}`` in
``model.init_from`` is replaced by the run's seed (transfer from the same seed's NIH run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pylon.training.config import TrainConfig, apply_overrides


@dataclass(frozen=True)
class Preset:
    description: str
    overrides: dict[str, Any]


# Baselines: model name and the options selecting the variant.
MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "pylon": ("pylon", {}, "PYLON (pyramid attention + 3 UP modules)"),
    "cam": ("cam", {}, "CAM backbone, global max pooling"),
    "li2018": ("li2018", {}, "Li et al. 2018, MIL pooling"),
    "fpn": ("fpn", {}, "FPN, GroupNorm segmentation blocks"),
    "fpn-bn": ("fpn", {"norm": "batchnorm"}, "FPN, BatchNorm segmentation blocks"),
    "unet": ("unet", {}, "U-Net, decoder 256-128-64-64-64"),
    "deeplabv3plus": ("deeplabv3plus", {}, "DeepLabV3+, ASPP with global pooling"),
    "deeplabv3plus-nogap": (
        "deeplabv3plus",
        {"aspp_pooling": False},
        "DeepLabV3+ without ASPP GAP",
    ),
    "pan": ("pan", {}, "PAN, with global pooling branch"),
    "pan-nogap": ("pan", {"gap": False}, "PAN without global pooling branch"),
}

NIH = {
    "data.name": "nih14",
    "data.root": "data/nih14",
    "data.loc_split": "bbox",
    "data.batch_size": 64,
    "model.encoder": "resnet50",
    "model.encoder_weights": "imagenet",
    "max_epochs": 40,
}
VINDR = {
    "data.name": "vindr",
    "data.root": "data/vindr",
    "data.size": 512,
    "data.batch_size": 64,
    "model.encoder": "resnet50",
    "model.encoder_weights": "imagenet",
    "max_epochs": 100,
    "val_every": 3,
}
VOC = {
    "data.name": "voc",
    "data.root": "data/VOCdevkit",
    "data.test_split": "val",
    "data.val_split": "val",
    "data.loc_split": "val",
    "data.batch_size": 64,
    "model.encoder": "resnet50",
    "model.encoder_weights": "imagenet",
    "max_epochs": 100,
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
        add(f"nih256-{key}", f"NIH ChestX-ray14, 256 px: {text}", NIH, model(key))
    for key in ("cam", "li2018", "fpn", "pylon"):
        add(
            f"nih512-{key}",
            f"NIH ChestX-ray14, 512 px: {MODELS[key][2]}",
            NIH,
            {"data.size": 512, "data.batch_size": 32},
            model(key),
        )
    for key in ("cam", "li2018", "fpn", "pylon"):
        add(f"vindr-{key}", f"VinDr-CXR, 512 px: {MODELS[key][2]}", VINDR, model(key))
    for key in ("cam", "pylon"):
        add(
            f"vindr-{key}-transfer",
            f"VinDr-CXR, {key.upper() if key == 'cam' else 'PYLON'} initialised from "
            f"runs/nih256-{key}/<seed> (all but the head)",
            VINDR,
            model(key),
            {"model.init_from": f"runs/nih256-{key}/{{seed}}/checkpoints/best.safetensors"},
        )
    add(
        "vindr-pylon-twophase",
        "VinDr-CXR PYLON from runs/nih256-pylon/<seed>: frozen encoder, then full fine-tuning",
        VINDR,
        model("pylon"),
        {"model.init_from": "runs/nih256-pylon/{seed}/checkpoints/best.safetensors"},
        {"phases": _two_phase()},
    )
    for key in ("cam", "li2018", "fpn"):
        add(f"voc-{key}", f"Pascal VOC 2012, 256 px: {MODELS[key][2]}", VOC, model(key))
    add(
        "voc-pylon-twophase",
        "Pascal VOC 2012 PYLON: frozen ImageNet encoder, then full fine-tuning",
        VOC,
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
    """The ``TrainConfig`` of preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; run `pylon presets` to list them")
    return apply_overrides(TrainConfig(), PRESETS[name].overrides)
