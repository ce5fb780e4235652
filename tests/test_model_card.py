"""The model card of `pylon export-model`: its model-index (read back with huggingface_hub's
ModelCard.load from the local file) holds the run's `pylon evaluate` values and the `pylon
benchmark` figures with their intervals; stale or foreign results are left out or refused."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from torch import nn
from typer.testing import CliRunner

from pylon import create_model, save_weights
from pylon.cli.main import app
from pylon.data import create_dataset
from pylon.evaluation.evaluate import evaluate_run, read_metrics
from pylon.models import ModelOutput, register_model
from pylon.training.config import DataConfig, ModelConfig, TrainConfig
from pylon.training.runs import RunPaths

SIZE = 64
IMAGES = 6


@register_model("_test_card_cam")
class CardCam(nn.Module):
    """A CAM model with a map at 1/8: a run, its evaluation and benchmark in seconds."""

    def __init__(self, encoder="tiny", in_channels=1, num_classes=4, encoder_weights=None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=8, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        cam = self.classifier(self.stem(x))
        return ModelOutput(cam.amax(dim=(2, 3)), cam)


def tiny_run(root, name="cardrun", seed=0):
    """A finished run folder (config, best weights with the preprocessing record, DONE)."""
    paths = RunPaths.of(root, name, seed)
    config = TrainConfig(
        experiment=name,
        seed=seed,
        model=ModelConfig(name="_test_card_cam", encoder="tiny"),
        data=DataConfig(name="synthetic", size=SIZE, num_workers=0, options={"num_images": IMAGES}),
    )
    config.to_yaml(paths.config)
    dataset = create_dataset("synthetic", None, "test", size=SIZE, num_images=IMAGES)
    torch.manual_seed(seed)
    model = create_model("_test_card_cam", encoder="tiny", num_classes=len(dataset.class_names))
    record = dataset.preprocessing.with_model(model.pylon_config)
    save_weights(model, paths.best, metadata=record.to_metadata())
    paths.mark_done()
    return paths


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("card")
    paths = tiny_run(root / "runs")
    evaluate_run(paths.root, progress=False)
    bench = root / "bench"
    args = [
        "benchmark", str(paths.root), "--out", str(bench), "--methods", "own",
        "--max-images", str(IMAGES), "--resamples", "50", "--faithfulness-images", "0",
        "--threshold-split", "none", "--no-progress",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = root / "model"
    args = ["export-model", str(paths.root), str(out), "--benchmark", str(bench)]
    result = CliRunner().invoke(app, [*args, "--repo-id", "pylon-test/card-cam"])
    assert result.exit_code == 0, result.output
    return paths, bench, out


def _model_index(out):
    loaded = ModelCard.load(out / "README.md")  # a local path: no network
    return loaded, list(loaded.data.eval_results or [])


def test_model_index_holds_the_evaluation_csv_values(card):
    paths, _, out = card
    loaded, results = _model_index(out)
    expected = {}
    for kind, split in (("auc", "test"), ("loc", "test")):
        for metric, value in read_metrics(paths.root / f"eval_{kind}.csv").items():
            if not metric.startswith("n_"):
                expected[metric] = (value, split)
    got = {
        r.metric_type: (r.metric_value, r.dataset_split)
        for r in results
        if "/" not in r.metric_type
    }
    assert got == expected
    assert {r.dataset_type for r in results} == {"synthetic"}
    assert loaded.data.library_name == "pylon"
    # the YAML header itself, parsed independently of huggingface_hub
    header = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    metrics = [m for entry in header["model-index"][0]["results"] for m in entry["metrics"]]
    assert {m["type"]: m["value"] for m in metrics if "/" not in m["type"]} == {
        k: v for k, (v, _) in expected.items()
    }


def test_model_index_and_table_hold_the_benchmark_with_intervals(card):
    _, bench, out = card
    _, results = _model_index(out)
    table = pd.read_csv(bench / "benchmark.csv")
    head = table[(table["size_bucket"] == "all") & table["class"].isin(["all", "macro"])]
    assert len(head) > 0
    by_type = {r.metric_type: r for r in results if "/" in r.metric_type}
    assert len(by_type) == len(head)
    text = (out / "README.md").read_text()
    for row in head.itertuples():
        entry = by_type[f"{row.method}/{row.metric}/{row._5}"]
        assert entry.metric_value == pytest.approx(row.value, abs=0, rel=1e-15)
        assert entry.metric_args["ci_low"] == pytest.approx(row.ci_low, rel=1e-15)
        assert entry.metric_args["ci_high"] == pytest.approx(row.ci_high, rel=1e-15)
        assert entry.metric_args["n"] == row.n
        assert f"[{row.ci_low:.4f}, {row.ci_high:.4f}]" in text


def test_card_says_data_recipe_use_and_citation(card):
    _, _, out = card
    text = (out / "README.md").read_text()
    for needed in (
        "pylon synthetic",  # the dataset
        "| `optim.lr` | 0.0001 |",  # the recipe, from the run's config
        "Research use only. This is not a medical device",
        "Preechakul",
        "iScience",
        "103933",
        "pylon.from_pretrained(folder)",
        'resolve_source("hf-hub:pylon-test/card-cam")',
    ):
        assert needed in text, needed


def test_stale_evaluation_is_left_out_and_foreign_benchmark_refused(card, tmp_path):
    paths, bench, _ = card
    # the run's weights rewritten after its evaluation and benchmark: both describe old weights
    other = tiny_run(tmp_path / "runs", name="cardrun", seed=0)
    for kind in ("auc", "loc"):
        csv = other.root / f"eval_{kind}.csv"
        csv.write_text((paths.root / f"eval_{kind}.csv").read_text())
        os.utime(csv, ns=(1, 1))  # older than the weights
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["export-model", str(other.root), str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "README.md").read_text()
    assert "`eval_auc.csv` left out: it scored earlier weights" in text
    assert not [r for r in _model_index(out)[1] if r.metric_type.startswith("auroc")]
    args = ["export-model", str(other.root), str(tmp_path / "m2"), "--benchmark", str(bench)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "scored other weights" in result.output, result.output
    stranger = tiny_run(tmp_path / "runs", name="stranger")
    args = ["export-model", str(stranger.root), str(tmp_path / "m3"), "--benchmark", str(bench)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "no row of run stranger/0" in result.output, result.output
