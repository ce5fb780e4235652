"""Post-hoc CAMs: scores equal a naive per-pair reference; `pylon evaluate-cam` writes its files."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from typer.testing import CliRunner

from pylon import create_model, save_weights
from pylon.cli.main import app
from pylon.data import create_dataset
from pylon.evaluation.posthoc import (
    METHODS,
    OWN_CAM,
    BoxedImages,
    evaluate_methods,
    evaluate_run_posthoc,
    last_encoder_stage,
    posthoc_maps,
)
from pylon.models import ModelOutput, register_model
from pylon.training.config import DataConfig, ModelConfig, TrainConfig
from pylon.training.runs import RunPaths


class TinyEncoder(nn.Module):
    """Strided convs at strides 4, 8, 16, 32, listing its stages the way smp encoders do."""

    def __init__(self, in_channels):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=4, padding=1), nn.ReLU())
        self.mid8 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.mid16 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.last = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())

    def get_stages(self):
        return {4: [self.stem], 32: [self.last]}

    def forward(self, x):
        return self.last(self.mid16(self.mid8(self.stem(x))))


@register_model("_test_tiny_cam")
class TinyCam(nn.Module):
    """A CAM backbone small enough that ScoreCAM (one forward per channel) takes a moment."""

    def __init__(self, encoder="tiny", in_channels=1, num_classes=4, encoder_weights=None):
        super().__init__()
        self.encoder = TinyEncoder(in_channels)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        cam = self.classifier(self.encoder(x))
        return ModelOutput(cam.amax(dim=(2, 3)), cam)


class Logits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def naive_point_accuracy(maps_per_pair, boxes_per_pair):
    """Hit if the first arg-max pixel (row, col) lies in any box of the pair's class."""
    hits = []
    for heatmap, boxes in zip(maps_per_pair, boxes_per_pair, strict=True):
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        hits.append(any(x <= col <= x + w and y <= row <= y + h for x, y, w, h, _ in boxes))
    return float(np.mean(hits))


def test_scores_match_a_naive_per_pair_reference():
    torch.manual_seed(0)
    dataset = create_dataset("synthetic", None, "test", size=64, num_images=6)
    data = BoxedImages.from_dataset(dataset, max_images=3)
    model = create_model("_test_tiny_cam", num_classes=len(dataset.class_names)).eval()
    results = evaluate_methods(model, data, dataset.class_names, ["gradcam"], batch_size=2)

    pairs = sorted({(i, b[4]) for i, bs in enumerate(data.boxes) for b in bs})
    boxes = [[b for b in data.boxes[i] if b[4] == c] for i, c in pairs]
    grad_maps = []
    cam = GradCAM(model=Logits(model), target_layers=[model.encoder.last])
    for i, c in pairs:  # one image and one target at a time
        grad_maps.append(cam(data.images[i : i + 1], [ClassifierOutputTarget(c)])[0])
    # the batched maps (several pairs per call) are the per-pair ones, in pair order
    batched = torch.cat([maps for _, maps in posthoc_maps(cam, data.images, pairs, 4)])
    np.testing.assert_allclose(batched.numpy(), np.stack(grad_maps), atol=1e-5)
    cam.activations_and_grads.release()
    with torch.no_grad():
        raw = model(data.images).cam
    up = F.interpolate(raw.sigmoid(), size=(64, 64), mode="bilinear", align_corners=False)
    own_maps = [up[i, c].numpy() for i, c in pairs]

    assert results["gradcam"]["n_pairs"] == len(pairs)
    assert results["gradcam"]["point_acc_weighted"] == pytest.approx(
        naive_point_accuracy(grad_maps, boxes)
    )
    assert results[OWN_CAM]["point_acc_weighted"] == pytest.approx(
        naive_point_accuracy(own_maps, boxes)
    )
    for k, name in enumerate(dataset.class_names):
        picked = [j for j, (_, c) in enumerate(pairs) if c == k]
        if picked:
            expected = naive_point_accuracy(
                [grad_maps[j] for j in picked], [boxes[j] for j in picked]
            )
            assert results["gradcam"][f"point_acc_{name}"] == pytest.approx(expected)


def test_last_encoder_stage_is_found():
    model = create_model("pylon", encoder="resnet18", num_classes=2)
    assert last_encoder_stage(model) is model.net.encoder.layer4
    model = create_model("cam", encoder="resnet18", num_classes=2)
    assert last_encoder_stage(model) is model.encoder.layer4
    tiny = TinyCam()
    assert last_encoder_stage(tiny) is tiny.encoder.last


def fake_run(root, size=64):
    """A run folder as `pylon train` leaves it, with untrained tiny CAM-backbone weights."""
    paths = RunPaths.of(root, "tiny", 0)
    config = TrainConfig(
        experiment="tiny",
        model=ModelConfig(name="_test_tiny_cam", encoder="tiny"),
        data=DataConfig(name="synthetic", size=size, options={"num_images": 4}),
    )
    config.to_yaml(paths.config)
    dataset = create_dataset("synthetic", None, "test", size=size, num_images=4)
    model = create_model("_test_tiny_cam", encoder="tiny", num_classes=len(dataset.class_names))
    info = {"class_names": dataset.class_names, "size": size, "in_channels": 1}
    save_weights(model, paths.best, metadata={"pylon_data": info})
    return paths.root


# the methods the reference's eval_cam.py runs (scorecam is commented out there)
REFERENCE_METHODS = ["gradcam", "gradcam++", "xgradcam", "eigencam"]


def test_evaluate_cam_defaults_to_the_reference_methods(tmp_path):
    run = fake_run(tmp_path)
    result = CliRunner().invoke(app, ["evaluate-cam", str(run), "--max-images", "1"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(run / "posthoc_comparison.csv")
    assert list(table["method"]) == [OWN_CAM, *REFERENCE_METHODS]


def test_evaluate_cam_writes_every_method_file(tmp_path):
    run = fake_run(tmp_path)
    result = CliRunner().invoke(
        app,
        ["evaluate-cam", str(run), "--max-images", "2", "--batch-size", "4",
         "--methods", ",".join(METHODS)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for method in METHODS:
        frame = pd.read_csv(run / f"posthoc_{method}.csv")
        assert list(frame.columns) == ["metric", "value"]
        assert "point_acc_weighted" in set(frame["metric"])
    table = pd.read_csv(run / "posthoc_comparison.csv")
    assert list(table["method"]) == [OWN_CAM, *METHODS]
    assert table["n_pairs"].nunique() == 1 and table["n_pairs"].iloc[0] >= 1
    assert table["point_acc_weighted"].between(0, 1).all()
    assert "scorecam" in result.output


def test_evaluate_cam_rejects_bad_input(tmp_path):
    result = CliRunner().invoke(app, ["evaluate-cam", str(tmp_path), "--methods", "gradcam"])
    assert result.exit_code == 1 and "config.yaml" in result.output  # failed work
    result = CliRunner().invoke(app, ["evaluate-cam", str(tmp_path), "--methods", "magic"])
    assert result.exit_code == 2 and "magic" in result.output


def test_evaluate_cam_progress_counts_the_images_scored_per_method(tmp_path, capsys, monkeypatch):
    """`--max-images 2` of a split of 8 counts to 2/2 (100 %), once per method: scorecam is far
    slower per image than the own CAM, so each method gets its own count (and honest ETA)."""
    run = fake_run(tmp_path)
    config = TrainConfig.from_yaml(run / "config.yaml")
    config.data.options["num_images"] = 8
    config.to_yaml(run / "config.yaml")
    monkeypatch.setenv("PYLON_PROGRESS", "lines")
    evaluate_run_posthoc(run, ["gradcam", "scorecam"], max_images=2, batch_size=1)
    err = capsys.readouterr().err
    for name in (OWN_CAM, "gradcam", "scorecam"):
        assert f"evaluate-cam test ({name}): 2/2 (100%)" in err, err
    assert "/8" not in err
    table = pd.read_csv(run / "posthoc_comparison.csv")
    assert table["n_pairs"].nunique() == 1


def test_every_method_maps_a_real_encoder_and_multi_layer_reads_three_stages():
    from pylon.evaluation.benchmark_scoring import SigmoidTarget
    from pylon.evaluation.posthoc import encoder_stages, make_method

    model = create_model("cam", encoder="resnet18", num_classes=3).eval()
    stages = encoder_stages(model, (8, 16, 32))
    names = {id(m): n for n, m in model.named_modules()}
    assert [names[id(m)] for m in stages] == ["encoder.layer2", "encoder.layer3", "encoder.layer4"]
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    for name in METHODS:
        if name == "scorecam":  # one forward per channel: covered by the tiny model above
            continue
        cam = make_method(name, model)
        try:
            maps = cam(input_tensor=x, targets=[SigmoidTarget(0), SigmoidTarget(2)])
        finally:
            cam.activations_and_grads.release()
        assert maps.shape == (2, 64, 64), name
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1, name
    multi = make_method("layercam-multi", model)
    assert [names[id(m)] for m in multi.target_layers] == [
        "encoder.layer2", "encoder.layer3", "encoder.layer4",
    ]  # fmt: skip
    multi.activations_and_grads.release()
    logits = torch.tensor([[0.5, -2.0, 3.0]])
    assert torch.allclose(SigmoidTarget(1)(logits[0]), torch.sigmoid(torch.tensor(-2.0)))
    assert torch.allclose(SigmoidTarget(2)(logits), torch.sigmoid(logits[:, 2]))
