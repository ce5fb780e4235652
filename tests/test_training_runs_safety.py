"""Run folders stay inside --runs-dir, --retrain deletes only pylon runs, stale temp files go,
and a run that failed before its first checkpoint does not block a corrected config."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.training.config import TrainConfig, apply_overrides
from pylon.training.fit import prepare_run, train
from pylon.training.runs import RunPaths


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "/abs", "a\\b", "-x", " x"])
def test_unsafe_experiment_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="run folder name must be"):
        apply_overrides(TrainConfig(), {"experiment": name})
    with pytest.raises(ValueError, match="run folder name must be"):
        RunPaths.of(tmp_path / "runs", name, 0)


def test_negative_seed_is_refused(tmp_path):
    with pytest.raises(ValueError, match="seed=-1"):
        RunPaths.of(tmp_path, "x", -1)


def test_retrain_with_escaping_name_touches_nothing_beside_the_runs_dir(tmp_path):
    sentinel = tmp_path / "x" / "0" / "keep.txt"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_text("precious")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "synthetic-cam",
            "--set",
            "experiment=..",
            "--retrain",
            "--runs-dir",
            str(tmp_path / "x" / "runs"),
        ],
    )
    assert result.exit_code != 0
    assert "run folder name must be" in result.output
    assert sentinel.read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "x" / "0").iterdir()) == ["keep.txt"]


def test_retrain_refuses_a_folder_that_is_not_a_run(tmp_path):
    config = apply_overrides(TrainConfig(), {"experiment": "e"})
    paths = RunPaths.of(tmp_path, "e", 0)
    paths.root.mkdir(parents=True)
    (paths.root / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a pylon run"):
        prepare_run(config, paths, retrain=True)
    assert (paths.root / "notes.txt").is_file()


def test_stale_checkpoint_temp_files_are_removed_on_start(tmp_path):
    config = apply_overrides(TrainConfig(), {"experiment": "e"})
    paths = RunPaths.of(tmp_path, "e", 0)
    paths.checkpoints.mkdir(parents=True)
    stale = paths.checkpoints / ".last.ckpt.k2j3.tmp"
    stale.write_bytes(b"\0" * 100)
    prepare_run(config, paths, retrain=False)
    assert not stale.exists()


def test_failed_before_first_checkpoint_does_not_block_a_corrected_config(tmp_path):
    first = apply_overrides(TrainConfig(), {"experiment": "e", "optim.lr": 1.0})
    paths = RunPaths.of(tmp_path, "e", 0)
    prepare_run(first, paths, retrain=False)  # wrote config.yaml, then (say) crashed
    corrected = apply_overrides(first, {"optim.lr": 1e-4})
    prepare_run(corrected, paths, retrain=False)
    assert TrainConfig.from_yaml(paths.config) == corrected
    # once a checkpoint exists, a different config is refused
    paths.checkpoints.mkdir(parents=True)
    paths.last.write_bytes(b"ckpt")
    with pytest.raises(ValueError, match="different config"):
        prepare_run(first, paths, retrain=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"data.size": 250}, "data.size=250"),
        ({"data.num_workers": -1}, "data.num_workers=-1"),
        ({"optim.lr": 0.0}, "optim.lr=0.0"),
        ({"optim.factor": 1.5}, r"optim.factor=1.5; expected a number in \(0, 1\)"),
        ({"optim.patience": -1}, "optim.patience=-1"),
        ({"limit_train_batches": 0}, "limit_train_batches=0"),
        ({"seed": -2}, "seed=-2"),
        ({"data.loc_split": "tset"}, "data.loc_split='tset'"),
    ],
)
def test_values_that_cannot_work_are_refused_when_the_config_is_built(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(TrainConfig(), override)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model.name": "nosuch"}, "model.name='nosuch'; expected one of"),
        ({"model.encoder": "resnet9000"}, "model.encoder='resnet9000'"),
        ({"data.size": 128}, "at least 256 px"),
    ],
)
def test_models_that_cannot_be_built_are_refused_before_a_run_folder(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):  # when the config is built, or by train
        config = apply_overrides(TrainConfig(), {"experiment": "e", **override})
        train(config, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


_TINY_RUN = {
    "max_epochs": 1,
    "progress": False,
    "model.name": "pylon",
    "model.encoder": "resnet18",
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {"train": {"num_images": 2}, "val": {"num_images": 2}},
}


def _resume_with_foreign_checkpoint(tmp_path, foreign: dict, *, strip_fingerprint: bool):
    import shutil

    import torch

    config = apply_overrides(TrainConfig(), {**_TINY_RUN, "experiment": "mine"})
    other = apply_overrides(TrainConfig(), {**_TINY_RUN, "experiment": "other", **foreign})
    runs = tmp_path / "runs"
    mine, theirs = train(config, runs_dir=runs), train(other, runs_dir=runs)
    # "mine" is interrupted (not DONE) and someone copied the other run's last.ckpt into it
    (mine / "DONE").unlink()
    foreign_ckpt = mine / "checkpoints" / "last.ckpt"
    shutil.copyfile(theirs / "checkpoints" / "last.ckpt", foreign_ckpt)
    if strip_fingerprint:  # a checkpoint written before runs carried their fingerprint
        state = torch.load(foreign_ckpt, weights_only=True)
        del state["pylon_run"]
        torch.save(state, foreign_ckpt)
    with pytest.raises(ValueError) as caught:
        train(config, runs_dir=runs)
    return str(caught.value), foreign_ckpt


@pytest.mark.slow
def test_last_checkpoint_of_another_run_is_refused_with_a_clear_message(tmp_path):
    message, path = _resume_with_foreign_checkpoint(
        tmp_path, {"optim.lr": 1e-2}, strip_fingerprint=False
    )
    assert f"resume checkpoint {path} belongs to another run" in message
    assert "--retrain" in message


@pytest.mark.slow
def test_old_checkpoint_of_another_model_is_refused_by_its_shapes(tmp_path):
    message, path = _resume_with_foreign_checkpoint(
        tmp_path, {"model.name": "cam"}, strip_fingerprint=True
    )
    assert f"resume checkpoint {path} holds the weights of another model" in message
