"""``pylon train`` refuses a config that cannot run before any run folder exists: one line naming
the key, exit 2 for a value wrong on any machine (ConfigError), exit 1 for what this machine or
its files cannot provide (issue 23 items 9, 13-18)."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch
from typer.testing import CliRunner

from pylon.cli.main import app

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")

# (arguments after `train synthetic-cam`, exit code, texts the one line must contain)
CASES = {
    "eval batch 0": (["--set", "data.eval_batch_size=0"], 2, ["data.eval_batch_size=0", ">= 1"]),
    "warmup 2": (["--set", "optim.warmup_frac=2"], 2, ["optim.warmup_frac=2.0", "[0, 1)"]),
    "cache size -1": (["--set", "data.cache_size=-1"], 2, ["data.cache_size=-1", ">= 32"]),
    "lr inf": (["--set", "optim.lr=inf"], 2, ["optim.lr=inf", "finite number > 0"]),
    "lr nan": (["--set", "optim.lr=.nan"], 2, ["optim.lr=nan", "finite"]),
    "weight decay -1": (["--set", "optim.weight_decay=-1"], 2, ["optim.weight_decay", ">= 0"]),
    "accelerator tpu": (["--accelerator", "tpu"], 2, ["accelerator='tpu'", "cpu, gpu"]),
    "strategy": (["--strategy", "ddpp"], 2, ["strategy='ddpp'", "ddp"]),
    "dataset name": (["--set", "data.name=nosuch"], 2, ["data.name='nosuch'", "synthetic"]),
    "train split": (["--set", "data.train_split=trian"], 2, ["data.train_split", "'trian'"]),
    "preset options into csv": (
        ["--set", "data.name=csv"],
        2,
        ["data.split_options.train", "'num_images'", "dataset 'csv'", "image_column"],
    ),
    "data option key": (
        ["--set", "data.options.num_image=3"],
        2,
        ["data.options", "'num_image'", "dataset 'synthetic'", "num_images"],
    ),
    "data option value": (
        ["--set", "data.split_options.val.num_images=many"],
        2,
        ["data.split_options.val.num_images='many'", "int"],
    ),
    "model option key": (
        ["--set", "model.options.pooling=avg"],
        2,
        ["model.options", "'pooling'", "model 'cam'", "pool='max'"],
    ),
    "model option value": (["--set", "model.options.pool=3"], 2, ["model.options.pool=3", "str"]),
    "model name": (["--set", "model.name=nosuch"], 2, ["model.name='nosuch'", "pylon"]),
    "weights name": (
        ["--set", "model.encoder_weights=imagenet22k"],
        2,
        ["model.encoder_weights='imagenet22k'", "imagenet", "local weights file"],
    ),
    "weights not a weights file": (
        ["--set", "model.encoder_weights={d}/notes.txt"],
        2,
        ["model.encoder_weights", "not a weights file", "null", "'imagenet'"],
    ),
    "weights file missing": (
        ["--set", "model.encoder_weights={d}/evil.ckpt"],
        1,
        ["model.encoder_weights", "evil.ckpt", "does not exist", "null", "'imagenet'"],
    ),
    "weights file unreadable": (
        ["--set", "model.encoder_weights={d}/junk.ckpt"],
        1,
        ["model.encoder_weights", "not a weights file", "junk.ckpt"],
    ),
    "init_from missing": (
        ["--set", "model.init_from={d}/missing.safetensors"],
        1,
        ["model.init_from", "missing.safetensors", "not found"],
    ),
    "empty split": (
        ["--set", "data.split_options.train.num_images=0"],
        1,
        ["data.train_split='train'", "num_images"],
    ),
    "batch larger than split": (
        ["--set", "data.split_options.train.num_images=3"],
        1,
        ["data.batch_size=16", "3 images"],
    ),
    "override without =": (["--set", "optim.lr"], 2, ["optim.lr", "key=value"]),
    "phase value": (
        ["--set", "phases=[{{optim.lr: -1}}]"],
        2,
        ["phases[0]", "optim.lr=-1.0"],
    ),
}


def one_line_error(result, code: int) -> str:
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not weights")
    (tmp_path / "junk.ckpt").write_text("hello, not a pickle\n")
    return tmp_path


def train(folder, *args):
    command = ["train", "synthetic-cam", "--runs-dir", str(folder / "runs"), *args]
    return CliRunner().invoke(app, command)


@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_the_run_folder_exists(folder, case):
    args, code, texts = CASES[case]
    line = one_line_error(train(folder, *(a.format(d=folder) for a in args)), code)
    for text in texts:
        assert text in line
    assert not (folder / "runs").exists()


@NO_GPU
def test_fp16_on_the_cpu_is_refused_before_the_run_folder(folder):
    line = one_line_error(train(folder, "--precision", "fp16", "--accelerator", "cpu"), 2)
    assert "precision='fp16'" in line and "bf16" in line
    assert not (folder / "runs").exists()


def test_imagenet_weights_offline_are_refused_before_the_run_folder(folder, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder / "hub"))
    line = one_line_error(train(folder, "--set", "model.encoder_weights=imagenet"), 1)
    assert "model.encoder_weights='imagenet'" in line and "'resnet18'" in line
    assert "encoder_weights=None" in line and "local" in line
    assert not (folder / "runs").exists()


def test_config_file_errors(folder):
    empty = folder / "config.yaml"
    empty.write_text("\n")
    line = one_line_error(CliRunner().invoke(app, ["train", "--config", str(empty)]), 1)
    assert str(empty) in line and "empty" in line
    bad = folder / "bad.yaml"
    bad.write_text("data:\n  eval_batch_size: 0\n")
    args = ["train", "--config", str(bad), "--runs-dir", str(folder / "runs")]
    line = one_line_error(CliRunner().invoke(app, args), 2)
    assert "data.eval_batch_size=0" in line
    assert not (folder / "runs").exists()
