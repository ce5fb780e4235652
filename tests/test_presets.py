"""Each paper preset equals the reference run. The table below is written from the reference
implementation's run files (train_nih.py / train_nih_run.py, train_vin.py / train_vin_run.py,
train_voc.py / train_voc_run.py, utils/exp_base.py Config defaults), not from our presets."""

from __future__ import annotations

import pytest

from pylon.models.precision import resolve_execution
from pylon.training.presets import get_preset, list_presets

# Config defaults of the reference: Adam lr 1e-4, lr_term 1e-6, rop_patience 1, rop_factor 0.2,
# fp16 True, n_eval_ep_cycle 1; NIH14Config n_ep 40 bs 64; VinConfig n_ep 100, n_eval_ep_cycle 3,
# bs 64; VOCConfig n_ep 40 bs 64.
COMMON = {"lr": 1e-4, "lr_term": 1e-6, "patience": 1, "factor": 0.2, "batch": 64}
DATASETS = {
    "nih256": {"data": "nih14", "size": 256, "epochs": 40, "val_every": 1, "transform": "xray"},
    "nih512": {"data": "nih14", "size": 512, "epochs": 40, "val_every": 1, "transform": "xray"},
    "vindr": {"data": "vindr", "size": 256, "epochs": 100, "val_every": 3, "transform": "xray"},
    "voc": {"data": "voc", "size": 256, "epochs": 40, "val_every": 1, "transform": "voc"},
}
# model configs of the reference's experiment functions (nih_fpn: segment_block 'custom',
# use_norm 'batchnorm'; nih_pan: use_gap True; nih_unet n_dec_ch (256, 128, 64, 64, 64))
MODELS = {
    "pylon": ("pylon", {}),
    "cam": ("cam", {}),
    "li2018": ("li2018", {}),
    "fpn": ("fpn", {"norm": "batchnorm", "dropout": 0.0}),
    "unet": ("unet", {}),
    "deeplabv3plus": ("deeplabv3plus", {}),
    "pan": ("pan", {}),
    # variants the experiment functions offer by argument (nih_fpn use_norm='groupnorm',
    # nih_deeplabv3 aspp_mode='nogap', nih_pan use_gap=False)
    "fpn-gn": ("fpn", {"norm": "groupnorm", "dropout": 0.0}),
    "deeplabv3plus-nogap": ("deeplabv3plus", {"aspp_pooling": False}),
    "pan-nogap": ("pan", {"gap": False}),
}
# which runs each run file lists
RUNS = {
    "nih256": ["cam", "li2018", "unet", "fpn", "deeplabv3plus", "pan", "pylon"],
    "nih512": ["cam", "li2018", "fpn", "pylon"],
    "vindr": ["cam", "li2018", "fpn", "pylon"],
    "voc": ["cam", "li2018", "fpn"],
}
VARIANTS = ["fpn-gn", "deeplabv3plus-nogap", "pan-nogap"]  # at 256 px, as the NIH runs
PAPER = [(f"{d}-{m}", d, m) for d, models in RUNS.items() for m in models]
PAPER += [(f"nih256-{m}", "nih256", m) for m in VARIANTS]


@pytest.mark.parametrize(("preset", "dataset", "model"), PAPER)
def test_paper_preset_equals_the_reference_run(preset, dataset, model):
    config = get_preset(preset)
    want = DATASETS[dataset]
    name, options = MODELS[model]
    assert config.model.name == name
    for key, value in options.items():
        assert config.model.options.get(key) == value, key
    assert config.model.encoder == "resnet50" and config.model.encoder_weights == "imagenet"
    assert config.data.name == want["data"] and config.data.size == want["size"]
    assert config.data.batch_size == COMMON["batch"]
    assert config.max_epochs == want["epochs"] and config.val_every == want["val_every"]
    optim = config.optim
    assert (optim.lr, optim.lr_term, optim.patience, optim.factor) == (
        COMMON["lr"],
        COMMON["lr_term"],
        COMMON["patience"],
        COMMON["factor"],
    )
    assert optim.scheduler == "plateau" and optim.equivariance == 0
    assert config.model.head_prior is None and config.data.augment
    # fp16 autocast on the GPU, as the reference's amp trainer
    assert resolve_execution(config.precision, "cuda").precision == "fp16"
    # crops as sharp as the reference's crops of the original: cache >= 2x the input size
    assert config.data.options["cache_size"] >= min(2 * want["size"], 1024)
    # data/voc.py ID_TO_CLS: 'background' then the 20 classes (21 outputs)
    assert config.data.options.get("background_class", False) is (want["data"] == "voc")


def test_voc_pylon_and_vindr_two_phase_freeze_first_then_fine_tune():
    for name in ("voc-pylon-twophase", "vindr-pylon-twophase"):
        config = get_preset(name)
        assert config.model.name == "pylon"
        assert config.data.options.get("background_class", False) is name.startswith("voc")
        assert [p.get("model.freeze") for p in config.phases] == ["enc", None]
        assert "max_epochs" not in config.phases[0]  # each phase runs the full schedule


@pytest.mark.parametrize("model", ["cam", "pylon"])
def test_vindr_transfer_starts_from_the_same_seeds_nih256_run(model):
    config = get_preset(f"vindr-{model}-transfer")
    assert config.model.init_from == f"runs/nih256-{model}/{{seed}}/checkpoints/best.safetensors"
    assert config.data.size == 256


def test_every_reference_run_has_a_preset():
    names = set(list_presets())
    assert {p for p, _, _ in PAPER} <= names
    assert {"vindr-pylon-twophase", "voc-pylon-twophase", "vindr-cam-transfer"} <= names
