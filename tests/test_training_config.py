"""TrainConfig: YAML round trip, overrides, clear errors; presets all build; seed parsing."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from pylon.evaluation.sweep import parse_seeds
from pylon.models import create_model
from pylon.training.config import (
    RANGES,
    ConfigError,
    TrainConfig,
    apply_overrides,
    parse_override,
)
from pylon.training.presets import PRESETS, get_preset, list_presets


def test_yaml_round_trip(tmp_path):
    config = apply_overrides(
        TrainConfig(),
        {
            "optim.lr": 3e-4,
            "model.options": {"n_up": 2},
            "data.split_options": {"val": {"num_images": 3}},
        },
    )
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    assert TrainConfig.from_yaml(path) == config


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-4 as a string; the config must still get a float.
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n")
    assert TrainConfig.from_yaml(path).optim.lr == pytest.approx(1e-4)


def test_unknown_key_names_the_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*optim\.lrr.*optim\.lr"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.scheduler=steps", "optim.scheduler"),
        ("max_epochs=zero", "max_epochs must be int"),
        ("progress=maybe", "progress must be true or false"),
        ("nosuch.key=1", "'nosuch' is not a config section"),
        ("model.freeze=decoder", "model.freeze"),
    ],
)
def test_bad_overrides_raise_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(TrainConfig(), dict([parse_override(override)]))


def test_parse_override_values():
    assert parse_override("optim.lr=3e-4")[0] == "optim.lr"
    assert apply_overrides(TrainConfig(), dict([parse_override("optim.lr=3e-4")])).optim.lr == 3e-4
    assert parse_override("model.init_from=null") == ("model.init_from", None)
    assert parse_override("data.batch_size=8") == ("data.batch_size", 8)
    with pytest.raises(ValueError, match="key=value"):
        parse_override("optim.lr")


def test_every_preset_builds_a_valid_config():
    names = list_presets()
    assert len(names) == len(PRESETS) >= 25
    for name in names:
        config = get_preset(name)
        assert config.experiment == name
        for phase in config.phases:  # phase overrides must apply cleanly too
            apply_overrides(dataclasses.replace(config, phases=[]), phase)
    # the paper's experiments are all there
    for required in (
        "nih256-pylon",
        "nih256-deeplabv3plus-nogap",
        "nih256-pan-nogap",
        "nih256-fpn-gn",
        "nih512-li2018",
        "vindr-pylon-twophase",
        "vindr-cam-transfer",
        "voc-pylon-twophase",
    ):
        assert required in names


@pytest.mark.parametrize(
    "name", ["nih256-fpn-gn", "nih256-deeplabv3plus-nogap", "voc-li2018", "nih256-pan"]
)
def test_preset_models_construct(name):
    config = get_preset(name).model
    in_channels = 3 if name.startswith("voc") else 1
    model = create_model(
        config.name, encoder="resnet18", in_channels=in_channels, num_classes=4, **config.options
    )
    assert model.pylon_config["options"].items() >= config.options.items()


def test_unknown_preset():
    with pytest.raises(ValueError, match="pylon presets"):
        get_preset("nih256-nosuch")


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("1,3,5-6") == [1, 3, 5, 6]
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("a-b")


def _numeric_keys(cls, prefix=""):
    """Dotted names of every int or float field of the config dataclasses."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += _numeric_keys(hint, f"{prefix}{f.name}.")
        elif {int, float} & set(typing.get_args(hint) or (hint,)) and hint is not bool:
            keys.append(prefix + f.name)
    return keys


def test_every_numeric_key_has_a_range():
    assert sorted(_numeric_keys(TrainConfig)) == sorted(RANGES)


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_numeric_key_refuses_out_of_range_and_non_finite_values(key):
    config = TrainConfig()
    hint = typing.get_type_hints(type(_parent(config, key)))[key.rsplit(".", 1)[-1]]
    bad = [-1]
    if float in (typing.get_args(hint) or (hint,)):
        bad += [float("inf"), float("nan")]
    for value in bad:
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.*; expected .*\d"):
            apply_overrides(config, {key: value})


def _parent(config, key):
    node = config
    for part in key.split(".")[:-1]:
        node = getattr(node, part)
    return node


def test_empty_config_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match=r"config\.yaml: the config file is empty"):
        TrainConfig.from_yaml(path)


def test_dataset_and_model_options_are_checked_against_their_signatures():
    # a forwarded BoxDataset option and the dataset's own one are accepted
    config = apply_overrides(
        TrainConfig(),
        {"data.name": "nih14", "data.options": {"cache_workers": 2, "val_fraction": 0.2}},
    )
    assert config.data.options == {"cache_workers": 2, "val_fraction": 0.2}
    with pytest.raises(ConfigError, match=r"data\.options\.val_fraction='x': expected float"):
        apply_overrides(config, {"data.options.val_fraction": "x"})
    with pytest.raises(ConfigError, match=r"data\.options\.size: not a dataset option.*data\.size"):
        apply_overrides(config, {"data.options.size": 64})
    with pytest.raises(ConfigError, match=r"data\.split_options\.trainval: .*'nih14' has no split"):
        apply_overrides(config, {"data.split_options": {"trainval": {}}})
    with pytest.raises(ConfigError, match=r"model\.options\.n_up='3': expected int"):
        apply_overrides(TrainConfig(), {"model.options": {"n_up": "3"}})


def test_encoder_weights_values():
    ok = apply_overrides(TrainConfig(), {"model.encoder_weights": "ssl"})  # resnet50 has ssl
    assert ok.model.encoder_weights == "ssl"
    with pytest.raises(ConfigError, match=r"'advprop'.*'resnet50' has no such.*imagenet, ssl"):
        apply_overrides(TrainConfig(), {"model.encoder_weights": "advprop"})
    with pytest.raises(ConfigError, match=r"'w\.txt': not a weights file, and no such file"):
        apply_overrides(TrainConfig(), {"model.encoder_weights": "w.txt"})
