"""``pylon demo`` end to end in tiny mode, through the real CLI, checking every file it writes."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.evaluation.demo import SUMMARY_COLUMNS, DemoConfig, images_for_minutes, train_config


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        ["demo", "--out", str(out), "--images", "64", "--test-images", "24", "--batch-size", "16"]
        + ["--val-images", "16", "--benchmark-images", "6", "--faithfulness-images", "0"]
        + ["--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "pylon" in result.output and "cam" in result.output

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["model"]) == ["pylon", "cam"]
    for column in ("auroc_macro", "point_acc_weighted", "point_acc_macro"):
        assert summary[column].between(0, 1).all(), column
    assert (summary["seconds"] > 0).all()

    per_class = pd.read_csv(out / "point_acc_per_class.csv")
    assert list(per_class["model"]) == ["pylon", "cam"]
    assert {"nodule", "consolidation"} <= set(per_class.columns)

    for model in ("pylon", "cam"):
        run = out / "runs" / model / "0"
        assert (run / "checkpoints" / "best.safetensors").stat().st_size > 0
        assert (run / "eval_loc.csv").is_file() and (run / "eval_auc.csv").is_file()
        pages = sorted((out / "heatmaps" / model).glob("*.png"))
        assert pages and all(p.stat().st_size > 0 for p in pages)
    bench = pd.read_csv(out / "benchmark" / "benchmark.csv")
    pairs = set(zip(bench["run"], bench["method"], strict=True))
    assert pairs == {
        ("pylon/0", "own"),
        ("cam/0", "own"),
        ("cam/0", "gradcam"),
        ("cam/0", "layercam"),
    }
    assert "maxboxacc_v2" in set(bench["metric"])  # threshold chosen on the validation split
    assert (out / "benchmark" / "by_size.png").stat().st_size > 0
    assert "point: " in result.output
    assert not list(out.glob("**/*.tmp"))


def test_recipe_is_identical_for_both_models():
    demo = DemoConfig(images=640)
    pylon_cfg, cam_cfg = train_config(demo, "pylon", 640), train_config(demo, "cam", 640)
    assert pylon_cfg.model.name == "pylon" and cam_cfg.model.name == "cam"
    # everything but the model name (and the experiment named after it) is shared
    assert pylon_cfg.data == cam_cfg.data and pylon_cfg.optim == cam_cfg.optim
    assert pylon_cfg.model.head_prior == cam_cfg.model.head_prior == 0.01  # same init for both
    assert pylon_cfg.optim.equivariance > 0  # and the same equivariance loss (optim is shared)
    assert pylon_cfg.data.split_options["train"]["num_images"] == 640
    assert pylon_cfg.max_epochs == 1  # each training image is seen once


def test_bad_demo_options():
    with pytest.raises(ValueError, match="images"):
        DemoConfig(images=8, batch_size=32)
    with pytest.raises(ValueError, match="minutes"):
        DemoConfig(minutes=0)
    result = CliRunner().invoke(app, ["demo", "--images", "64", "--minutes", "1"])
    assert result.exit_code != 0 and "not both" in result.output


@pytest.mark.slow
def test_minutes_budget_is_sized_from_a_probe():
    demo = DemoConfig(minutes=60, batch_size=4, images=4)
    images = images_for_minutes(demo)
    # an hour on any machine fits far more than one batch, and whole batches only
    assert images > 4 * demo.batch_size and images % demo.batch_size == 0
