"""A tiny real training run: every file of the run folder, skip when finished, evaluation numbers
against a naive reference (scikit-learn AUROC and a per-pair point-localization loop)."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from pylon.data import collate, create_dataset
from pylon.data.preprocessing import Preprocessing
from pylon.evaluation.evaluate import evaluate_run, read_metrics, summarize_experiment
from pylon.models.weights import load_model, read_weights_metadata
from pylon.training.config import TrainConfig, apply_overrides
from pylon.training.fit import train

pytestmark = pytest.mark.slow  # one real (tiny) training run shared by the module

TINY = {
    "experiment": "tiny",
    "max_epochs": 2,
    "progress": False,
    "precision": "fp32",
    "model.name": "pylon",
    "model.encoder": "resnet18",
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {
        "train": {"num_images": 4},
        "val": {"num_images": 2},
        "test": {"num_images": 16},
    },
    "optim.lr": 1e-3,
    "optim.equivariance": 0.1,
    "model.head_prior": 0.01,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(2)
    runs = tmp_path_factory.mktemp("runs")
    config = apply_overrides(TrainConfig(), TINY)
    run_dir = train(config, runs_dir=runs)
    return config, runs, run_dir


def test_run_folder_has_every_file(tiny_run):
    config, runs, run_dir = tiny_run
    assert run_dir == runs / "tiny" / "0"
    for name in ("config.yaml", "checkpoints/best.safetensors", "checkpoints/last.ckpt", "DONE"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "logs/csv").glob("version_*/metrics.csv"))
    assert list((run_dir / "logs/tensorboard").glob("version_*/events.out.tfevents.*"))
    assert TrainConfig.from_yaml(run_dir / "config.yaml") == config

    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["epochs"] == 2 and summary["global_step"] == 4  # 4 images / batch 2 x 2 epochs
    metrics = pd.concat(pd.read_csv(p) for p in (run_dir / "logs/csv").glob("*/metrics.csv"))
    val = metrics["val_loss"].dropna().to_numpy()
    assert metrics["train_eq_loss_step"].dropna().ge(0).all()  # the equivariance term is on
    assert summary["best_val_loss"] == pytest.approx(val.min(), rel=1e-6)

    meta = read_weights_metadata(run_dir / "checkpoints/best.safetensors")
    assert meta["model"]["name"] == "pylon" and meta["model"]["encoder"] == "resnet18"
    record = Preprocessing.from_metadata(meta, "best")
    dataset = create_dataset("synthetic", split="test", num_images=1)
    assert record == dataset.preprocessing  # class names, size, channels, mean/std, transform
    assert record.model == meta["model"]
    assert Preprocessing.read_run(run_dir) == record

    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert {"optimizer_states", "pylon_rng", "pylon_plateau", "state_dict"} <= set(last)


def test_finished_run_is_not_retrained(tiny_run):
    config, runs, run_dir = tiny_run
    best = run_dir / "checkpoints/best.safetensors"
    before = best.stat().st_mtime_ns
    started = time.time()
    assert train(config, runs_dir=runs) == run_dir
    assert best.stat().st_mtime_ns == before and time.time() - started < 5


def test_resuming_with_another_config_is_refused(tiny_run):
    config, runs, _ = tiny_run
    changed = apply_overrides(config, {"optim.lr": 5e-4})
    with pytest.raises(ValueError, match=r"differs in: optim.*--retrain"):
        train(changed, runs_dir=runs)


def _reference_metrics(run_dir, config):
    """Naive evaluation straight from the spec, one (image, class) pair at a time."""
    model = load_model(run_dir / "checkpoints/best.safetensors").eval()
    dataset = create_dataset("synthetic", split="test", size=256, num_images=16)
    logits, labels, hits = [], [], {}
    with torch.no_grad():
        for start in range(0, len(dataset), config.data.batch_size):
            batch = collate([dataset[i] for i in range(start, start + config.data.batch_size)])
            out = model(batch["image"])
            logits.append(out.logits)
            labels.append(batch["labels"])
            for n, boxes in enumerate(batch["boxes"]):
                for c in sorted({b[4] for b in boxes}):
                    prob = torch.sigmoid(out.cam[n, c])[None, None]
                    up = F.interpolate(prob, size=(256, 256), mode="bilinear", align_corners=False)
                    row, col = divmod(int(up.flatten().argmax()), 256)
                    hit = any(
                        x <= col <= x + w and y <= row <= y + h for x, y, w, h, k in boxes if k == c
                    )
                    hits.setdefault(c, []).append(hit)
    logits, labels = torch.cat(logits).numpy(), torch.cat(labels).numpy()
    names = dataset.class_names
    auc = {
        f"auroc_{names[c]}": roc_auc_score(labels[:, c], logits[:, c])
        for c in range(len(names))
        if 0 < labels[:, c].sum() < len(labels)
    }
    pooled = [h for c in hits for h in hits[c]]
    loc = {"point_acc_weighted": float(np.mean(pooled))}
    loc.update({f"point_acc_{names[c]}": float(np.mean(v)) for c, v in hits.items()})
    loc["point_acc_macro"] = float(np.mean([np.mean(v) for v in hits.values()]))
    return auc, loc


def test_evaluate_matches_naive_reference(tiny_run):
    config, runs, run_dir = tiny_run
    results = evaluate_run(run_dir, progress=False)
    auc_ref, loc_ref = _reference_metrics(run_dir, config)
    assert read_metrics(run_dir / "eval_auc.csv") == pytest.approx(results["auc"], nan_ok=True)
    assert read_metrics(run_dir / "eval_loc.csv") == pytest.approx(results["loc"], nan_ok=True)
    assert results["auc"]["n_images_auc"] == 16
    for key, value in auc_ref.items():
        assert results["auc"][key] == pytest.approx(value, abs=1e-6), key
    for key, value in loc_ref.items():
        assert results["loc"][key] == pytest.approx(value, abs=1e-9), key

    # Seed summary: add a second "seed" with known values and compare with numpy.
    seed1 = runs / "tiny" / "1"
    seed1.mkdir()
    frame = pd.read_csv(run_dir / "eval_auc.csv")
    frame["value"] = frame["value"] * 0.5
    frame.to_csv(seed1 / "eval_auc.csv", index=False)
    summary = summarize_experiment(runs / "tiny")["auc"].set_index("metric")
    macro = results["auc"]["auroc_macro"]
    assert summary.loc["auroc_macro", "mean"] == pytest.approx(0.75 * macro)
    assert summary.loc["auroc_macro", "std"] == pytest.approx(np.std([macro, macro / 2], ddof=1))
    assert summary.loc["auroc_macro", "n"] == 2
    written = pd.read_csv(runs / "tiny" / "summary_auc.csv").set_index("metric")
    assert written.loc["auroc_macro", "n"] == 2
    assert (runs / "tiny" / "summary_loc.csv").is_file()


def test_heatmap_pages_all_and_picked(tiny_run, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from pylon.cli.main import app

    _, _, run_dir = tiny_run
    dataset = create_dataset("synthetic", split="test", size=256, num_images=16)
    samples = [dataset[i] for i in range(len(dataset))]
    val = create_dataset("synthetic", split="val", size=256, num_images=2)
    val_pairs = sum(len({b[4] for b in val[i]["boxes"]}) for i in range(len(val)))

    runner = CliRunner()
    args = ["heatmaps", str(run_dir), "--all", "--split", "val", "--out", str(tmp_path / "all")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    pages = sorted((tmp_path / "all").glob("*.png"))
    assert len(pages) == -(-val_pairs // 10)
    # default split (the run's loc split, test), 11 rows: a full page of 10 and one of 1
    args = ["heatmaps", str(run_dir), "--limit", "11", "--out", str(tmp_path / "some")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    pages = sorted((tmp_path / "some").glob("*.png"))
    assert [p.name for p in pages] == ["heatmaps_000.png", "heatmaps_001.png"]
    full, single = (Image.open(p).size for p in pages)
    assert full[0] == single[0] and full[1] > 5 * single[1]  # 10 rows versus 1

    # picked: two images, the first restricted to one of its classes
    first, second = [s for s in samples if s["boxes"]][:2]
    names = dataset.class_names
    picked = tmp_path / "picked.csv"
    picked.write_text(
        f"image_id,class\n{first['image_id']},{names[first['boxes'][0][4]]}\n{second['image_id']}\n"
    )
    from pylon.evaluation.heatmaps import heatmap_rows

    rows = list(heatmap_rows(run_dir, picked=picked))
    assert len(rows) == 1 + len({b[4] for b in second["boxes"]})
    assert rows[0].class_name == names[first["boxes"][0][4]]
    assert rows[0].image.shape[:2] == (256, 256)
    assert all(
        r.boxes and {int(b[4]) for b in r.boxes} == {names.index(r.class_name)} for r in rows
    )

    bad = tmp_path / "bad.csv"
    bad.write_text(f"{first['image_id']},NoSuchClass\n")
    result = runner.invoke(app, ["heatmaps", str(run_dir), "--picked", str(bad)])
    assert result.exit_code == 1 and "line 1: unknown class 'NoSuchClass'" in result.output


def test_cli_train_repeats_config_and_skips_finished(tiny_run):
    from typer.testing import CliRunner

    from pylon.cli.main import app

    _, runs, run_dir = tiny_run
    command = ["train", "--config", str(run_dir / "config.yaml"), "--runs-dir", str(runs)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert str(run_dir) in result.output.replace("\n", "")
