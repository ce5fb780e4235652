"""Model folders: `pylon export-model` of a tiny real run and of reference-format released
weights, loaded back by `pylon.from_pretrained`, `Predictor` and `pylon predict` with identical
outputs; strict loading; the Hub source failing at once offline."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_models_pylon import released_state_dict
from typer.testing import CliRunner

import pylon
from pylon.cli.main import app
from pylon.data.preprocessing import Preprocessing
from pylon.models.weights import load_model
from pylon.training.config import TrainConfig, apply_overrides
from pylon.training.fit import train

pytestmark = pytest.mark.slow  # one tiny real training run shared by the module

TINY = {
    "experiment": "tiny",
    "max_epochs": 1,
    "progress": False,
    "precision": "fp32",
    "model.name": "pylon",
    "model.encoder": "resnet18",
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {
        "train": {"num_images": 4},
        "val": {"num_images": 2},
        "test": {"num_images": 6},
    },
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("folder")
    run_dir = train(apply_overrides(TrainConfig(), TINY), runs_dir=root / "runs")
    out = root / "model"
    result = CliRunner().invoke(app, ["export-model", str(run_dir), str(out)])
    assert result.exit_code == 0, result.output
    return run_dir, out


def test_folder_holds_weights_config_and_card(exported):
    run_dir, out = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((out / "config.json").read_text())
    record = Preprocessing.read_run(run_dir)  # what training wrote into the run folder
    assert config["format"] == "pylon-model-folder"
    assert config["pylon_version"] == pylon.__version__
    assert config["model"] == record.model
    assert Preprocessing.from_dict(config["preprocessing"]) == record
    assert config["source"] == {
        "kind": "run",
        "experiment": "tiny",
        "seed": 0,
        "epoch": 0,
        "val_loss": config["source"]["val_loss"],
    }
    # the weights carry the same records, read with safetensors itself
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["pylon_model"]) == record.model
    assert Preprocessing.from_dict(json.loads(metadata["pylon_preprocessing"])) == record


def test_from_pretrained_equals_the_run_weights(exported):
    run_dir, out = exported
    model = pylon.from_pretrained(out)
    assert not model.training
    reference = load_model(run_dir / "checkpoints" / "best.safetensors").eval()
    original = load_file(str(run_dir / "checkpoints" / "best.safetensors"))
    state = model.state_dict()
    assert state.keys() == original.keys()
    assert all(torch.equal(state[k], original[k]) for k in original)
    x = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert torch.equal(got.logits, want.logits) and torch.equal(got.cam, want.cam)
    assert model.pylon_preprocessing == Preprocessing.read_run(run_dir)
    assert list(model.pylon_preprocessing.class_names) == [
        "nodule",
        "cavity",
        "mass",
        "consolidation",
    ]


def _tampered(out: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "tampered"
    shutil.copytree(out, folder)
    path = folder / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata=metadata)
    return folder


@pytest.mark.parametrize("kind", ["extra", "missing"])
def test_a_tampered_folder_is_refused_naming_the_tensor(exported, tmp_path, kind):
    _, out = exported
    if kind == "extra":
        name = "net.extra_head.weight"
        folder = _tampered(out, tmp_path, lambda s: s.__setitem__(name, torch.zeros(3)))
    else:
        name = "net.segmentation_head.0.bias"
        folder = _tampered(out, tmp_path, lambda s: s.pop(name))
    with pytest.raises(
        ValueError, match=rf"{'unexpected' if kind == 'extra' else 'missing'}.*{name}"
    ):
        pylon.from_pretrained(folder)
    with pytest.raises(ValueError, match=name):
        pylon.Predictor(folder)


def test_a_config_json_that_disagrees_with_the_weights_is_refused(exported, tmp_path):
    _, out = exported
    folder = tmp_path / "edited"
    shutil.copytree(out, folder)
    config = json.loads((folder / "config.json").read_text())
    config["preprocessing"]["class_names"][0] = "tumour"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"preprocessing\.class_names.*disagree"):
        pylon.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"preprocessing\.class_names"):
        pylon.Predictor(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        pylon.from_pretrained(folder)


def test_predictor_and_pylon_predict_take_the_folder(exported, tmp_path):
    run_dir, out = exported
    rng = np.random.default_rng(0)
    image = (rng.random((300, 280)) * 255).astype(np.uint8)
    cv2.rectangle(image, (60, 80), (120, 150), 255, -1)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    best = run_dir / "checkpoints" / "best.safetensors"
    want = pylon.Predictor(best, precision="fp32").predict(tmp_path / "img.png")
    got = pylon.Predictor(out, precision="fp32").predict(tmp_path / "img.png")
    assert got.probabilities == want.probabilities
    assert got.peaks == want.peaks
    result = CliRunner().invoke(
        app,
        ["predict", str(out), str(tmp_path / "img.png"), "--out", str(tmp_path / "pred")]
        + ["--precision", "fp32", "--no-overlays", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["probabilities"] == pytest.approx(want.probabilities, rel=1e-6)


def test_export_refuses_to_replace_another_folder(exported, tmp_path):
    run_dir, out = exported
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["export-model", str(run_dir), str(other)])
    assert result.exit_code == 2 and "not a pylon model folder" in result.output
    assert (other / "keep.txt").read_text() == "mine"
    result = CliRunner().invoke(app, ["export-model", str(run_dir), str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = CliRunner().invoke(app, ["export-model", str(run_dir), str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_reference_released_pkl_becomes_a_folder(tmp_path):
    released = released_state_dict()
    pkl = tmp_path / "pylon,nih,256.pkl"
    torch.save(released, pkl)
    out = tmp_path / "nih"
    args = ["export-model", "--weights", str(pkl), "--preset", "nih256-pylon", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    model = pylon.from_pretrained(out)
    state = model.state_dict()
    assert state.keys() == released.keys()
    assert all(torch.equal(state[k], released[k]) for k in released)
    record = model.pylon_preprocessing
    assert (record.size, record.in_channels, len(record.class_names)) == (256, 1, 14)
    assert record.class_names[0] == "Atelectasis" and record.class_names[-1] == "Hernia"
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["preset"] == "nih256-pylon"
    assert config["model"]["encoder"] == "resnet50"
    card = (out / "README.md").read_text()
    assert "pylon,nih,256.pkl" in card and "not a medical device" in card
    assert str(tmp_path) not in card  # no local path of this machine in a shared card


def test_export_weights_refuses_a_pickled_object_and_bad_command_lines(tmp_path):
    pkl = tmp_path / "evil.pkl"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(a=1)}, pkl)
    args = ["export-model", "--weights", str(pkl), "--preset", "nih256-pylon", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "refused for safety" in result.output
    assert not (tmp_path / "o").exists()
    for bad in (
        ["export-model", "--weights", str(pkl), str(tmp_path / "o")],  # no --preset
        ["export-model", str(tmp_path / "o")],  # RUN missing
        ["export-model", "--weights", str(pkl), "--preset", "nosuch", str(tmp_path / "o")],
    ):
        result = CliRunner().invoke(app, bad)
        assert result.exit_code == 2, (bad, result.output)


HUB_CALL = textwrap.dedent(
    """
    import time, pylon
    start = time.perf_counter()
    try:
        pylon.from_pretrained("hf-hub:pylon-test/no-such-model")
    except FileNotFoundError as err:
        print(f"{time.perf_counter() - start:.2f}", err)
    """
)


@pytest.mark.parametrize("network", ["HF_HUB_OFFLINE", "refused", "default"])
def test_hub_source_without_network_fails_at_once(tmp_path, network):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_ENDPOINT", None)
    offline = network == "HF_HUB_OFFLINE"
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    elif network == "refused":  # no network, whether or not this machine has internet
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    # "default": the real endpoint (this test machine has no internet; with it: no such repo)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", HUB_CALL], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    elapsed, message = done.stdout.split(" ", 1)
    assert float(elapsed) < 10, done.stdout  # a retry loop takes ~20 s
    assert time.perf_counter() - start < 60
    assert "hf-hub:pylon-test/no-such-model" in message
    assert "local folder" in message
    assert ("HF_HUB_OFFLINE" in message) == offline
