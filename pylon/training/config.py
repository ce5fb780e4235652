"""Typed training configuration: dataclasses, YAML round trip, ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pylon.io import write_text_atomic
from pylon.models.precision import normalize_precision
from pylon.training.names import check_experiment_name

SCHEDULERS = ("plateau", "onecycle", "cosine", "none")
LOC_SPLITS = ("test", "val", "bbox", "train")  # splits that carry ground-truth boxes


@dataclass
class ModelConfig:
    name: str = "pylon"
    encoder: str = "resnet50"
    encoder_weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # weights file; tensors matching by name and shape are loaded
    freeze: str | None = None  # "enc" turns the encoder's gradients off (as the reference)
    freeze_bn: bool = False  # with freeze: also keep the encoder's BatchNorm statistics fixed
    channels_last: bool | None = None  # None: on with mixed precision (pylon.models.precision)
    # start every class-map location at this probability (pylon.models.head_prior); None: off
    head_prior: float | None = None


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str | None = None
    size: int = 256
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int | None = None  # None: CPUs available (affinity, cgroup quota) - 1, 0..8
    persistent_workers: bool = False  # keep train and val worker pools alive between epochs
    cache_dir: str | None = None  # image caches (None: $PYLON_CACHE or ~/.cache/pylon)
    cache_size: int | None = None  # side of training caches (None: size; presets: 2 x size)
    augment: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # passed to create_dataset
    split_options: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per split, over options
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    loc_split: str = "test"  # split with ground-truth boxes for localization metrics


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: str = "plateau"
    patience: int = 1
    factor: float = 0.2
    warmup_frac: float = 0.0  # onecycle/cosine: fraction of all steps spent warming up
    lr_term: float = 1e-6  # stop once the learning rate is <= this (as the reference)
    # weight of the flip/rotation equivariance loss (pylon.training.equivariance); 0: off, as in
    # the paper. On, every training image is also seen as a flipped/rotated view (2x the compute).
    equivariance: float = 0.0


@dataclass
class TrainConfig:
    experiment: str = "default"
    seed: int = 0
    max_epochs: int = 40
    val_every: int = 1
    limit_train_batches: int | None = None  # cap on batches per epoch (quick runs)
    precision: str = "auto"  # auto, fp32, bf16, fp16 (pylon.models.precision)
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Multi-phase runs: each phase is a dict of dotted overrides applied on top of this config;
    # phase k > 1 starts from phase k-1's best weights.
    phases: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> TrainConfig:
        if self.optim.scheduler not in SCHEDULERS:
            raise ValueError(
                f"optim.scheduler={self.optim.scheduler!r}; expected one of {SCHEDULERS}"
            )
        self.precision = normalize_precision(self.precision)
        if self.optim.equivariance < 0:
            raise ValueError(f"optim.equivariance={self.optim.equivariance}; expected >= 0")
        prior = self.model.head_prior
        if prior is not None and not 0.0 < prior < 1.0:
            raise ValueError(
                f"model.head_prior={prior!r}; expected a probability in (0, 1), or null"
            )
        if self.model.freeze not in (None, "enc"):
            raise ValueError(f"model.freeze={self.model.freeze!r}; expected 'enc' or null")
        for key in ("max_epochs", "val_every", "num_nodes"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)}; expected an integer >= 1")
        if self.data.batch_size < 1 or self.data.size < 32 or self.data.size % 32:
            raise ValueError(
                f"data.batch_size={self.data.batch_size}, data.size={self.data.size}; "
                "expected batch_size >= 1 and size a multiple of 32 (>= 32)"
            )
        rules = [
            ("seed", self.seed, self.seed >= 0, "an integer >= 0"),
            ("optim.lr", self.optim.lr, self.optim.lr > 0, "> 0"),
            ("optim.factor", self.optim.factor, 0 < self.optim.factor < 1, "in (0, 1)"),
            ("optim.patience", self.optim.patience, self.optim.patience >= 0, "an integer >= 0"),
            ("optim.lr_term", self.optim.lr_term, self.optim.lr_term >= 0, ">= 0"),
            (
                "limit_train_batches",
                self.limit_train_batches,
                self.limit_train_batches is None or self.limit_train_batches >= 1,
                "an integer >= 1, or null",
            ),
            (
                "data.num_workers",
                self.data.num_workers,
                self.data.num_workers is None or self.data.num_workers >= 0,
                "an integer >= 0",
            ),
            (
                "data.loc_split",
                self.data.loc_split,
                self.data.loc_split in LOC_SPLITS,
                f"one of {', '.join(LOC_SPLITS)}",
            ),
        ]
        for key, value, ok, rule in rules:
            if not ok:
                raise ValueError(f"{key}={value!r}; expected {rule}")
        check_experiment_name(self.experiment)
        for i, phase in enumerate(self.phases):
            if not isinstance(phase, dict):
                raise ValueError(f"phases[{i}] must be a mapping of dotted keys to values")
            apply_overrides(dataclasses.replace(self, phases=[]), phase)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            write_text_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        data = dict(data)
        # configs written before the precision vocabulary: cpu_bf16=false meant fp32 on the CPU
        if data.pop("cpu_bf16", True) is False and data.get("precision", "auto") == "auto":
            data["precision"] = "fp32"
        return _build(cls, data, prefix="", source=source).validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a mapping at the top level, got {type(data).__name__}"
            )
        return cls.from_dict(data, source=str(path))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: dict[str, Any], *, prefix: str, source: str):
    if not isinstance(data, dict):
        raise ValueError(f"{source}: '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ValueError(
            f"{source}: unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"expected one of {', '.join(prefix + k for k in types_)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(types_[name], value, f"{prefix}{name}", source)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=key + ".", source=source)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{source}: {key} must be a list, got {value!r}")
        return list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str | int):
        return str(value)
    raise ValueError(f"{source}: {key} must be {tp.__name__}, got {value!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ``("optim.lr", 0.0003)``; values are parsed as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r}: expected key=value, e.g. optim.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return a new config with dotted ``overrides`` applied (and validated)."""
    data = config.to_dict()
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"override {key}: '{part}' is not a config section")
            node = node[part]
        node[parts[-1]] = value
    return TrainConfig.from_dict(data, source="overrides")
