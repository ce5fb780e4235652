"""`pylon benchmark` end to end on tiny runs: every file, figures equal to independent
computations of the same metrics, and a rerun that reuses the finished (run, method) pairs."""

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from pylon import create_model, save_weights
from pylon.cli.main import app
from pylon.data import create_dataset
from pylon.metrics import localization_accuracy
from pylon.metrics.maxboxacc import max_box_acc
from pylon.models import ModelOutput, register_model
from pylon.training.config import DataConfig, ModelConfig, TrainConfig
from pylon.training.runs import RunPaths

SIZE = 64
IMAGES = 5


class Stages(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=4, padding=1), nn.ReLU())
        self.last = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def get_stages(self):
        return {4: [self.stem], 8: [self.last]}

    def forward(self, x):
        return self.last(self.stem(x))


@register_model("_test_bench_cam")
class BenchCam(nn.Module):
    """A CAM model with a map at 1/8: small enough for a benchmark in seconds."""

    def __init__(self, encoder="tiny", in_channels=1, num_classes=4, encoder_weights=None):
        super().__init__()
        self.encoder = Stages(in_channels)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        cam = self.classifier(self.encoder(x))
        return ModelOutput(cam.amax(dim=(2, 3)), cam)


def tiny_run(root, name, seed=0):
    paths = RunPaths.of(root, name, seed)
    config = TrainConfig(
        experiment=name,
        seed=seed,
        model=ModelConfig(name="_test_bench_cam", encoder="tiny"),
        data=DataConfig(name="synthetic", size=SIZE, options={"num_images": IMAGES}),
    )
    config.to_yaml(paths.config)
    dataset = create_dataset("synthetic", None, "test", size=SIZE, num_images=IMAGES)
    torch.manual_seed(seed + len(name))
    model = create_model("_test_bench_cam", encoder="tiny", num_classes=len(dataset.class_names))
    info = {"class_names": dataset.class_names, "size": SIZE, "in_channels": 1}
    save_weights(model, paths.best, metadata={"pylon_data": info})
    paths.mark_done()
    return paths.root, model.eval(), dataset


ARGS = [
    "--methods", "own,gradcam", "--max-images", str(IMAGES), "--resamples", "50",
    "--faithfulness-images", "1", "--cam-interval", "0.01", "--threshold-split", "none",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def benchmarked(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    a, model_a, dataset = tiny_run(root / "runs", "alpha")
    b, _, _ = tiny_run(root / "runs", "beta")
    out = root / "out"
    result = CliRunner().invoke(app, ["benchmark", str(a), str(b), "--out", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    return root, out, (a, b), model_a, dataset, result.output


def test_benchmark_writes_every_file(benchmarked):
    _, out, _, _, _, output = benchmarked
    for name in ("benchmark.csv", "comparisons.csv", "seeds.csv", "benchmark.md"):
        assert (out / name).stat().st_size > 0
    for name in ("by_size.png", "faithfulness.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "benchmark.csv")
    assert list(table.columns) == [
        "run", "method", "metric", "size_bucket", "class", "value", "ci_low", "ci_high", "n",
    ]  # fmt: skip
    assert set(table["run"]) == {"alpha/0", "beta/0"}
    assert set(table["method"]) == {"own", "gradcam"}
    assert {"point", "pointing_game", "energy_pg", "hit_rate", "seg_iou", "iobb0.5",
            "maxboxacc_v2_oracle", "deletion_auc", "insertion_auc", "average_drop",
            "road_combined"} <= set(
        table["metric"])  # fmt: skip
    head = table[(table["class"] == "all") & (table["size_bucket"] == "all")]
    assert (
        (head["ci_low"] <= head["value"] + 1e-12) & (head["value"] <= head["ci_high"] + 1e-12)
    ).all()
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert set(comparisons["reference"]) == {"alpha/0 own"}
    assert len(comparisons) == 3 * comparisons["metric"].nunique()
    assert "beats" in output or "ties with" in output


def test_benchmark_figures_equal_the_metrics_computed_directly(benchmarked):
    _, out, _, model, dataset, _ = benchmarked
    samples = [dataset[i] for i in range(IMAGES)]
    samples = [s for s in samples if s["boxes"]]
    images = torch.stack([s["image"] for s in samples])
    boxes = [[tuple(b) for b in s["boxes"]] for s in samples]
    with torch.no_grad():
        cam = model(images).cam
    table = pd.read_csv(out / "benchmark.csv")
    own = table[(table["run"] == "alpha/0") & (table["method"] == "own")]
    own = own[own["size_bucket"] == "all"].set_index(["metric", "class"])["value"]
    direct = localization_accuracy(cam, boxes, (SIZE, SIZE), class_names=dataset.class_names)
    assert own[("point", "all")] == pytest.approx(direct["point_acc_weighted"])
    assert own[("point", "macro")] == pytest.approx(direct["point_acc_macro"])
    assert own[("iobb0.5", "all")] == pytest.approx(direct["iobb0.5_weighted"])
    boxacc = max_box_acc(
        torch.sigmoid(cam),
        boxes,
        (SIZE, SIZE),
        cam_thresholds=torch.arange(0, 1, 0.01).double().numpy(),
    )
    assert own[("maxboxacc_v2_oracle", "all")] == pytest.approx(boxacc.mean)


def test_benchmark_rerun_reuses_finished_pairs(benchmarked):
    root, out, (a, b), _, _, _ = benchmarked
    records = sorted((out / "records").rglob("*.safetensors"))
    assert len(records) == 4
    before = {p: p.stat().st_mtime_ns for p in records}
    result = CliRunner().invoke(app, ["benchmark", str(a), str(b), "--out", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    assert "reused 4" in result.output
    assert {p: p.stat().st_mtime_ns for p in records} == before
    # new weights: that run's records are recomputed, the other's reused
    paths = RunPaths(b)
    paths.best.write_bytes(paths.best.read_bytes())
    result = CliRunner().invoke(app, ["benchmark", str(a), str(b), "--out", str(out), *ARGS])
    assert "reused 2" in result.output


def test_benchmark_refuses_bad_input(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["benchmark", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "not a run folder" in result.output
    run, _, _ = tiny_run(tmp_path / "runs", "gamma")
    result = runner.invoke(
        app,
        [
            "benchmark",
            str(run),
            "--methods",
            "own,nope",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1 and "unknown method 'nope'" in result.output
    result = runner.invoke(app, ["benchmark", str(run), "--max-images", "0"])
    assert result.exit_code == 2
