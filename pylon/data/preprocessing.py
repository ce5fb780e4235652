"""The preprocessing record that travels with trained weights (like timm's ``pretrained_cfg``).

Datasets expose it (``dataset.preprocessing``), training writes it into the safetensors metadata
(key ``pylon_preprocessing``) and the run folder (``preprocessing.json``), and everything that
serves a model (``Predictor``, ``export``, ``heatmaps``, ``evaluate-cam``) rebuilds its inputs
from it alone. Weights written before it carried ``pylon_data``; those still load.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_KEY = "pylon_preprocessing"
LEGACY_METADATA_KEY = "pylon_data"
RUN_FILE = "preprocessing.json"
TRANSFORMS = ("xray", "voc")
INTERPOLATIONS = ("cubic", "linear", "area", "nearest")
# What each transform kind used before the record named its interpolation.
DEFAULT_INTERPOLATION = {"xray": "cubic", "voc": "cubic"}


@dataclass(frozen=True)
class Preprocessing:
    """How a model's inputs are made: the evaluation transform, its constants and the labels.

    Attributes:
        transform: the augmentation family (``"xray"`` or ``"voc"``); evaluation is resize +
            normalise for both.
        interpolation: the resize's interpolation (``"cubic"``, ``"linear"``, ``"area"``,
            ``"nearest"``).
        size: the square input size in pixels.
        in_channels: 1 (grey) or 3 (RGB).
        mean, std: per-channel normalisation on the [0, 1] pixel scale.
        class_names: the model's outputs, in order.
        model: the model's config (``create_model_from_config`` input: name, encoder, options),
            or ``None`` where the record describes a dataset only.
    """

    transform: str
    interpolation: str
    size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    model: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        self.validate("preprocessing")

    def validate(self, source: str) -> None:
        """Raise ``ValueError`` naming ``source`` and the field when a value cannot work."""
        if self.transform not in TRANSFORMS:
            raise ValueError(
                f"{source}: transform={self.transform!r}; expected one of {TRANSFORMS}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"{source}: interpolation={self.interpolation!r}; expected one of {INTERPOLATIONS}"
            )
        if self.size < 1 or self.in_channels not in (1, 3):
            raise ValueError(
                f"{source}: size={self.size}, in_channels={self.in_channels}; expected size >= 1 "
                "and 1 or 3 channels"
            )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"{source}: mean {list(self.mean)} and std {list(self.std)}; expected "
                f"{self.in_channels} value(s) each (one per input channel)"
            )
        if not self.class_names:
            raise ValueError(f"{source}: no class names")

    def with_model(self, model_config: Mapping[str, Any]) -> Preprocessing:
        """A copy that also names the model it belongs to."""
        return dataclasses.replace(self, model=dict(model_config))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists for tuples)."""
        data = dataclasses.asdict(self)
        for key in ("mean", "std", "class_names"):
            data[key] = list(data[key])
        return data

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata entry (sorted JSON, so identical runs give identical files)."""
        return {METADATA_KEY: json.dumps(self.to_dict(), sort_keys=True)}

    def write(self, run_dir: str | Path) -> Path:
        """Write ``preprocessing.json`` into ``run_dir`` atomically and return its path."""
        from pylon.io import write_text_atomic

        path = Path(run_dir) / RUN_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "preprocessing") -> Preprocessing:
        """Build from :meth:`to_dict` output; errors name ``source`` and the missing fields."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)}")
        required = [n for n in names if n != "model"]
        missing = [n for n in required if data.get(n) is None]
        if missing:
            raise ValueError(f"{source}: lacks {', '.join(missing)}")
        try:
            return cls(
                transform=str(data["transform"]),
                interpolation=str(data["interpolation"]),
                size=int(data["size"]),
                in_channels=int(data["in_channels"]),
                mean=tuple(data["mean"]),
                std=tuple(data["std"]),
                class_names=tuple(data["class_names"]),
                model=data.get("model"),
            )
        except ValueError as err:
            message = str(err).removeprefix("preprocessing: ")
            raise ValueError(f"{source}: {message}") from None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], source: str | Path) -> Preprocessing:
        """Read the record from decoded weights metadata (``read_weights_metadata``).

        Args:
            metadata: the file's metadata, JSON values decoded.
            source: the weights file, for messages.

        Returns:
            The record; for weights written before it existed (``pylon_data``: class names, size,
            channels, mean, std) the X-ray transform with cubic interpolation they were served with.

        Raises:
            ValueError: naming the file when neither entry is there or a field is missing.
        """
        model = metadata.get("model")
        record = metadata.get(METADATA_KEY)
        if record is not None:
            data = dict(_decoded(record))
            if data.get("model") is None and model is not None:
                data["model"] = model
            return cls.from_dict(data, source=f"{source}: '{METADATA_KEY}'")
        legacy = metadata.get(LEGACY_METADATA_KEY)
        if isinstance(legacy, str | dict):
            legacy = dict(_decoded(legacy))
            legacy.setdefault("transform", "xray")
            legacy.setdefault("interpolation", DEFAULT_INTERPOLATION[legacy["transform"]])
            legacy["model"] = model
            return cls.from_dict(legacy, source=f"{source}: '{LEGACY_METADATA_KEY}'")
        raise ValueError(
            f"{source}: no '{METADATA_KEY}' metadata (transform, input size, normalisation, "
            "class names); weights written by `pylon train` carry it, otherwise re-save them with "
            "pylon.save_weights(model, path, metadata=Preprocessing(...).to_metadata())"
        )

    @classmethod
    def read_run(cls, run_dir: str | Path) -> Preprocessing:
        """Read ``preprocessing.json`` of a run folder."""
        path = Path(run_dir) / RUN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (written by `pylon train`)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, source=str(path))

    def eval_transform(self):
        """The albumentations evaluation pipeline (resize + normalise) this record describes."""
        from pylon.data.transforms import build_transform

        return build_transform(
            self.transform,
            self.size,
            train=False,
            in_channels=self.in_channels,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
        )


def _decoded(value: str | Mapping[str, Any]) -> Mapping[str, Any]:
    return json.loads(value) if isinstance(value, str) else value


def make_preprocessing(
    transform: str,
    size: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    interpolation: str | None = None,
) -> Preprocessing:
    """Convenience constructor for datasets: ``interpolation`` defaults to the transform's."""
    return Preprocessing(
        transform=transform,
        interpolation=interpolation or DEFAULT_INTERPOLATION[transform],
        size=int(size),
        in_channels=int(in_channels),
        mean=tuple(mean),
        std=tuple(std),
        class_names=tuple(class_names),
    )
