"""Training progress: plain train/validation lines in a log file, Lightning's bar in a terminal."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar

from pylon.training.config import TrainConfig, apply_overrides
from pylon.training.fit import progress_callbacks
from pylon.training.loop_progress import LoopProgress

TINY = {
    "experiment": "progress",
    "max_epochs": 2,
    "model.name": "pylon",
    "model.encoder": "resnet18",
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {"train": {"num_images": 6}, "val": {"num_images": 4}},
    "optim.lr": 1e-3,
}
RATE = r"\d+\.\d batch/s, elapsed \d+:\d\d"


@pytest.mark.slow
def test_train_command_prints_progress_lines_to_a_log_file(tmp_path):
    config_path = tmp_path / "tiny.yaml"
    apply_overrides(TrainConfig(), TINY).to_yaml(config_path)
    env = {k: v for k, v in os.environ.items() if k != "PYLON_PROGRESS"}
    env.update(OMP_NUM_THREADS="1", PYLON_PROGRESS_INTERVAL="0")  # a line after every batch
    log, err = tmp_path / "log.txt", tmp_path / "err.txt"
    command = [sys.executable, "-m", "pylon.cli.main", "train", "--config", str(config_path),
               "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    with open(log, "w") as out, open(err, "w") as errors:
        result = subprocess.run(command, stdout=out, stderr=errors, env=env)
    text = log.read_text()
    assert result.returncode == 0, err.read_text()[-3000:]
    assert "\x1b[" not in text  # no ANSI escapes: no bar drawn into the file
    lines = [line for line in text.splitlines() if re.match(r"(train|validate) epoch", line)]
    for epoch in (1, 2):
        train, val = f"train epoch {epoch}/2: ", f"validate epoch {epoch}/2: "
        # 3 train batches of 2 images, 2 validation batches: count, rate and ETA before the end
        assert re.fullmatch(rf"{train}1/3 \(33%\), {RATE}, ETA \d+:\d\d", lines.pop(0))
        assert re.fullmatch(rf"{train}2/3 \(67%\), {RATE}, ETA \d+:\d\d", lines.pop(0))
        assert re.fullmatch(rf"{train}3/3 \(100%\), {RATE}, train_loss \d+\.\d{{4}}", lines.pop(0))
        assert re.fullmatch(rf"{val}1/2 \(50%\), {RATE}, ETA \d+:\d\d", lines.pop(0))
        assert re.fullmatch(rf"{val}2/2 \(100%\), {RATE}, val_loss \d+\.\d{{4}}", lines.pop(0))
    assert lines == []  # nothing else, once each


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch["image"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch["image"]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callback: LoopProgress, epochs: int = 2) -> None:
    rows = [{"image": torch.randn(2), "labels": torch.zeros(1)} for _ in range(8)]
    loader = torch.utils.data.DataLoader(rows, batch_size=2)
    trainer = L.Trainer(
        max_epochs=epochs, callbacks=[callback], accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(_Tiny(), loader, loader)


def test_lines_at_the_interval_and_once_per_loop_end(monkeypatch):
    monkeypatch.delenv("PYLON_PROGRESS", raising=False)
    out = io.StringIO()  # not a TTY: plain lines
    _fit(LoopProgress(stream=out, interval=3600))  # interval never reached: loop ends only
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "train epoch 1/2", "validate epoch 1/2", "train epoch 2/2", "validate epoch 2/2",
    ]  # fmt: skip
    assert lines[0].startswith("train epoch 1/2: 4/4 (100%), ") and "train_loss " in lines[0]
    assert lines[1].startswith("validate epoch 1/2: 4/4 (100%), ") and "val_loss " in lines[1]


def test_disabled_prints_nothing(monkeypatch):
    monkeypatch.setenv("PYLON_PROGRESS", "lines")
    out = io.StringIO()
    _fit(LoopProgress(stream=out, interval=0, enabled=False), epochs=1)
    assert out.getvalue() == ""


def test_terminal_gets_lightnings_bar_a_file_gets_lines(monkeypatch, tmp_path):
    monkeypatch.delenv("PYLON_PROGRESS", raising=False)
    leader, follower = os.openpty()  # a real pseudo-terminal: isatty() is True
    with os.fdopen(follower, "w") as terminal, open(tmp_path / "log", "w") as log:
        assert terminal.isatty() and not log.isatty()
        [bar] = progress_callbacks(True, terminal)
        assert isinstance(bar, RichProgressBar)
        [lines] = progress_callbacks(True, log)
        assert isinstance(lines, LoopProgress) and lines.stream is log
        assert progress_callbacks(False, terminal) == progress_callbacks(False, log) == []
        monkeypatch.setenv("PYLON_PROGRESS", "lines")  # forced plain lines in a terminal
        [forced] = progress_callbacks(True, terminal)
        assert isinstance(forced, LoopProgress)
    os.close(leader)
