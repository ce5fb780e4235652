"""Typed training configuration: dataclasses, YAML round trip, ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pylon.data.registry import check_dataset_options, check_dataset_split, list_datasets
from pylon.io import write_text_atomic
from pylon.models.encoder import check_encoder_weights
from pylon.models.precision import normalize_precision
from pylon.models.registry import check_model_options, list_models
from pylon.training.names import check_experiment_name

SCHEDULERS = ("plateau", "onecycle", "cosine", "none")
LOC_SPLITS = ("test", "val", "bbox", "train")  # splits that carry ground-truth boxes
# Lightning accelerators pylon runs on ("gpu" and "cuda" are the same); whether the machine has
# one is checked before a run starts (pylon.training.runnable)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


class ConfigError(ValueError):
    """A config value that is wrong on any machine: an unknown key, a wrong type, a number out of
    its range, a name outside its vocabulary. The message is one line naming the key and what it
    accepts; the CLI exits with status 2 (a wrong command line, as click's own checks)."""

    exit_code = 2


def _optional(check):
    return lambda v: v is None or check(v)


# Every numeric key with its valid range (a test checks that none is missing); floats must also
# be finite.
RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32 - 1]"),
    "max_epochs": (lambda v: v >= 1, "an integer >= 1"),
    "val_every": (lambda v: v >= 1, "an integer >= 1"),
    "limit_train_batches": (_optional(lambda v: v >= 1), "an integer >= 1, or null"),
    "num_nodes": (lambda v: v >= 1, "an integer >= 1"),
    "log_images_count": (lambda v: 1 <= v <= 64, "an integer in [1, 64]"),
    "model.head_prior": (_optional(lambda v: 0 < v < 1), "a probability in (0, 1), or null"),
    "data.size": (lambda v: v >= 32 and v % 32 == 0, "a multiple of 32, >= 32"),
    "data.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "data.eval_batch_size": (_optional(lambda v: v >= 1), "an integer >= 1, or null"),
    "data.num_workers": (_optional(lambda v: v >= 0), "an integer >= 0, or null (auto)"),
    "data.cache_size": (_optional(lambda v: v >= 32), "an integer >= 32, or null"),
    "optim.lr": (lambda v: v > 0, "a finite number > 0"),
    "optim.weight_decay": (lambda v: v >= 0, "a finite number >= 0"),
    "optim.patience": (lambda v: v >= 0, "an integer >= 0"),
    "optim.factor": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "optim.warmup_frac": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.lr_term": (lambda v: v >= 0, "a finite number >= 0"),
    "optim.equivariance": (lambda v: v >= 0, "a finite number >= 0"),
}


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
    # overlays of a few fixed validation cases in TensorBoard's images tab, once per validation
    # epoch (pylon.training.image_logging)
    log_images: bool = True
    log_images_count: int = 4
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Multi-phase runs: each phase is a dict of dotted overrides applied on top of this config;
    # phase k > 1 starts from phase k-1's best weights.
    phases: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> TrainConfig:
        """Check every key: numbers within their range (and finite), names within their
        vocabulary, dataset and model options against the dataset's and model's parameters,
        the split names against the dataset's, the phases' overrides. Nothing here depends on
        the machine or opens a file (that is :func:`pylon.training.runnable.check_runnable`).

        Returns:
            ``self`` (``precision`` normalised to its vocabulary).

        Raises:
            ConfigError: one line naming the first bad key and what it accepts.
        """
        try:
            self._check()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return self

    def _check(self) -> None:
        self.precision = normalize_precision(self.precision)
        for key, (ok, rule) in RANGES.items():
            value = _get(self, key)
            finite = not isinstance(value, float) or math.isfinite(value)
            if not (finite and ok(value)):
                raise ValueError(f"{key}={value!r}; expected {rule}")
        choices = [
            ("optim.scheduler", SCHEDULERS),
            ("model.freeze", (None, "enc")),
            ("data.loc_split", LOC_SPLITS),
            ("accelerator", ACCELERATORS),
            ("strategy", _strategies()),
            ("data.name", list_datasets()),
            ("model.name", list_models()),
        ]
        for key, allowed in choices:
            value = _get(self, key)
            if value not in allowed:
                raise ValueError(f"{key}={value!r}; expected one of {_shown(allowed)}")
        check_experiment_name(self.experiment)
        self._check_data()
        check_model_options(self.model.name, self.model.options, where="model.options")
        check_encoder_weights(
            self.model.encoder, self.model.encoder_weights, where="model.encoder_weights"
        )
        for i, phase in enumerate(self.phases):
            if not isinstance(phase, dict):
                raise ValueError(f"phases[{i}] must be a mapping of dotted keys to values")
            try:
                apply_overrides(dataclasses.replace(self, phases=[]), phase)
            except ValueError as err:
                raise ValueError(f"phases[{i}]: {err}") from None

    def _check_data(self) -> None:
        data = self.data
        for key in ("train_split", "val_split", "test_split", "loc_split"):
            check_dataset_split(data.name, getattr(data, key), where=f"data.{key}")
        check_dataset_options(data.name, data.options, where="data.options")
        for split, options in data.split_options.items():
            where = f"data.split_options.{split}"
            check_dataset_split(data.name, split, where=where)
            check_dataset_options(data.name, options, where=where)

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
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        if data is None:  # not the defaults: they would silently train or evaluate another config
            raise ValueError(
                f"{path}: the config file is empty; expected a mapping of config keys (as the "
                "config.yaml that pylon train writes into each run folder)"
            )
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a mapping at the top level, got {type(data).__name__}"
            )
        return cls.from_dict(data, source=str(path))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _get(config: TrainConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _strategies() -> tuple[str, ...]:
    """Lightning's strategy names, less the TPU ones (pylon has no TPU accelerator)."""
    from lightning.pytorch.strategies import StrategyRegistry

    names = StrategyRegistry.available_strategies()
    return ("auto", *(n for n in names if "xla" not in n and "tpu" not in n))


def _shown(allowed: tuple) -> str:
    """The accepted values for a message; Lightning's strategy variants (``ddp_find_unused_*``,
    ``deepspeed_stage_*``, ``*_offload``) summed up by their families."""
    variants = ("find_unused", "stage", "offload")
    shown = ["null" if a is None else str(a) for a in allowed]
    short = [s for s in shown if not any(v in s for v in variants)]
    if len(short) == len(shown):
        return ", ".join(shown)
    example = next(s for s in shown if s not in short)
    return f"{', '.join(short)}, or a Lightning variant of these (e.g. {example})"


def _build(cls: type, data: dict[str, Any], *, prefix: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
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
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
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
    raise ConfigError(f"{source}: {key} must be {tp.__name__}, got {value!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ``("optim.lr", 0.0003)``; values are parsed as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=3e-4")
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
                raise ConfigError(f"override {key}: '{part}' is not a config section")
            node = node[part]
        node[parts[-1]] = value
    return TrainConfig.from_dict(data, source="overrides")
