"""The evaluation layer's shared pieces: the network-to-original mapping and peaks (against loops
written from the definition), bounded overlays, the fast path, progress lines in log files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pylon import create_model, save_weights
from pylon.data import create_dataset
from pylon.evaluation.coordinates import input_to_original, peak_in_original, peaks_in_original
from pylon.evaluation.overlay import DISPLAY_MAX_SIDE, overlay_image, peak_overlay
from pylon.training.config import DataConfig, ModelConfig, TrainConfig
from pylon.training.runs import RunPaths


def test_input_to_original_by_hand():
    # 4 input pixels from 10 original ones: centre i sits at (i + 0.5) * 2.5 - 0.5
    # = 0.75, 3.25, 5.75, 8.25 -> 1, 3, 6, 8
    got = input_to_original(torch.arange(4), 4, 10)
    assert got.tolist() == [1, 3, 6, 8]
    # up-sampling 4 -> 2: centres at -0.25 and 0.75 -> clamped to 0, then 1 (and 0.25, 1.25)
    assert input_to_original(torch.arange(4), 4, 2).tolist() == [0, 0, 1, 1]
    assert input_to_original(torch.arange(5), 5, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="sizes"):
        input_to_original(torch.arange(2), 0, 5)


def naive_peaks(cams, size):
    """Per map: sigmoid, one F.interpolate, flat argmax (first maximum in row-major order)."""
    out = []
    for image in cams:
        row = []
        for cam in image:
            up = F.interpolate(
                cam[None, None].float().sigmoid(), size=size, mode="bilinear", align_corners=False
            )[0, 0]
            flat = int(up.flatten().argmax())
            row.append(divmod(flat, size[1]))
        out.append(row)
    return out


def test_peaks_in_original_equal_a_per_map_loop_including_plateaus():
    torch.manual_seed(0)
    cams = torch.randn(3, 2, 8, 8) * 3
    cams[1, 0] = 40.0  # saturated plateau: every pixel ties, the first one wins
    cams[2, 1, 2:5, 3:6] = 30.0
    originals = [(300, 200), (64, 64), (1024, 777)]
    got = peaks_in_original(cams, 64, originals)
    for i, per_class in enumerate(naive_peaks(cams, (64, 64))):
        height, width = originals[i]
        for c, (row, col) in enumerate(per_class):
            x = min(max(round((col + 0.5) * width / 64 - 0.5), 0), width - 1)
            y = min(max(round((row + 0.5) * height / 64 - 0.5), 0), height - 1)
            assert got[i][c] == (x, y), (i, c)
            assert peak_in_original(row, col, 64, (height, width)) == (y, x)
    assert got[1][0] == (0, 0)
    with pytest.raises(ValueError, match="original sizes"):
        peaks_in_original(cams, 64, originals[:2])


def test_huge_images_are_drawn_at_a_bounded_size():
    image = np.zeros((3000, 1500), np.uint8)
    heat = np.zeros((16, 16), np.float32)
    heat[0, 0] = 1.0
    out = overlay_image(image, heat, boxes=[(1000, 2000, 200, 400, 0)], style="probability")
    assert out.shape == (DISPLAY_MAX_SIDE, 1024, 3)
    # the box is drawn at the display scale (2048 / 3000): top-left corner (683, 1365)
    assert tuple(out[1365, 700]) == (0, 255, 0)
    assert overlay_image(image, heat, max_side=None).shape == (3000, 1500, 3)
    ring = peak_overlay(image, heat, (1000, 300))  # (x, y) in original pixels
    radius = max(3, round(1024 / 40))
    centre_x, centre_y = round(1000 * 2048 / 3000), round(300 * 2048 / 3000)
    assert tuple(ring[centre_y, centre_x + radius]) == (255, 255, 255)


def test_pages_keep_original_coordinates_for_huge_images():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pylon.evaluation.pages import HeatmapRow, draw_heatmap_row

    row = HeatmapRow(np.zeros((4096, 3000), np.uint8), np.full((4, 4), 0.5), [], "mass", 0.5)
    fig, axes = plt.subplots(1, 2)
    draw_heatmap_row(axes, row)
    for ax in axes:
        picture = ax.images[0]
        assert max(picture.get_array().shape[:2]) == DISPLAY_MAX_SIDE
        assert picture.get_extent() == [-0.5, 2999.5, 4095.5, -0.5]
    plt.close(fig)


def tiny_run(root, *, precision="fp32", size=64):
    """A finished run folder as `pylon train` leaves it: config, untrained CAM (resnet18) weights
    and DONE."""
    paths = RunPaths.of(root, "tiny", 0)
    config = TrainConfig(
        experiment="tiny",
        precision=precision,
        progress=False,
        model=ModelConfig(name="cam", encoder="resnet18"),
        data=DataConfig(
            name="synthetic", size=size, batch_size=2, num_workers=0, options={"num_images": 4}
        ),
    )
    config.to_yaml(paths.config)
    dataset = create_dataset("synthetic", None, "test", size=size, num_images=4)
    model = create_model("cam", encoder="resnet18", num_classes=len(dataset.class_names))
    record = dataset.preprocessing.with_model(model.pylon_config)
    save_weights(model, paths.best, metadata=record.to_metadata())
    paths.mark_done("test")
    return paths, config


def test_evaluation_loads_models_on_the_training_fast_path(tmp_path):
    from pylon.evaluation.execution import load_run_model, run_execution

    paths, config = tiny_run(tmp_path, precision="bf16")
    model, execution, device = load_run_model(paths, config, "cpu")
    assert execution.precision == "bf16" and execution.channels_last and device.type == "cpu"
    weight = model.encoder.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not model.training
    # a run trained in fp16 (CUDA only) is evaluated on the CPU with the CPU's auto choice
    config.precision = "fp16"
    assert run_execution(config, "cpu").precision in ("bf16", "fp32")


def test_progress_lines_in_log_files(tmp_path):
    """evaluate, heatmaps and evaluate-cam print count/rate lines when output goes to a file."""
    paths, _ = tiny_run(tmp_path)
    script = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from pylon.evaluation.evaluate import evaluate_run
        from pylon.evaluation.heatmaps import write_run_heatmaps
        from pylon.evaluation.posthoc import evaluate_run_posthoc
        run = {str(paths.root)!r}
        evaluate_run(run)
        write_run_heatmaps(run, limit=2)
        evaluate_run_posthoc(run, ["gradcam"], max_images=2)
        """
    )
    log = tmp_path / "log.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYLON_PROGRESS"}
    with open(log, "w") as out:
        result = subprocess.run(
            [sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    text = log.read_text()
    assert result.returncode == 0, text
    assert "evaluate test: 4/4 (100%)" in text
    assert "heatmaps test: 2/2 (100%)" in text
    assert "evaluate-cam test (gradcam): " in text and " img/s" in text
    assert "Tip" not in text  # Lightning's advertising is quiet, as in training
    assert (paths.root / "eval_loc.csv").is_file()
    assert (paths.root / "posthoc_comparison.csv").is_file()


def test_picked_images_without_boxes_are_skipped_and_unknown_ones_refused(tmp_path):
    from pylon.evaluation.heatmaps import heatmap_rows

    paths, _ = tiny_run(tmp_path)
    dataset = create_dataset("synthetic", None, "test", size=64, num_images=4)
    samples = [dataset[i] for i in range(len(dataset))]
    boxed = next(s for s in samples if s["boxes"])
    names = dataset.class_names
    other = next(
        (s, c)
        for s in samples
        for c in range(len(names))
        if c not in {b[4] for b in s["boxes"]} and s is not boxed
    )
    picked = tmp_path / "picked.csv"
    picked.write_text(
        f"image_id,class\n{boxed['image_id']}\n{other[0]['image_id']},{names[other[1]]}\n"
    )
    with pytest.warns(UserWarning, match="1 picked image"):
        rows = list(heatmap_rows(paths.root, picked=picked, progress=False))
    assert len(rows) == len({b[4] for b in boxed["boxes"]})
    picked.write_text("image_id\nno-such-image\n")
    with pytest.raises(ValueError, match="not in split 'test'"):
        list(heatmap_rows(paths.root, picked=picked, progress=False))


def test_evaluate_cam_scores_the_whole_split_by_default(tmp_path):
    from pylon.evaluation.posthoc import OWN_CAM, evaluate_run_posthoc

    paths, _ = tiny_run(tmp_path)
    dataset = create_dataset("synthetic", None, "test", size=64, num_images=4)
    pairs = sum(len({b[4] for b in dataset[i]["boxes"]}) for i in range(len(dataset)))
    table = evaluate_run_posthoc(paths.root, ["gradcam"], progress=False).set_index("method")
    assert table.loc[OWN_CAM, "n_pairs"] == table.loc["gradcam", "n_pairs"] == pairs
    one = evaluate_run_posthoc(paths.root, ["gradcam"], max_images=1, progress=False)
    first = next(dataset[i] for i in range(len(dataset)) if dataset[i]["boxes"])
    assert set(one["n_pairs"]) == {len({b[4] for b in first["boxes"]})} and pairs > 2
    assert one["n_pairs"].iloc[0] < pairs  # the default went past the first image


def csv_run(root, size=64):
    """A run on a CSV dataset of 96 x 128 images with boxes (originals larger than the input)."""
    from PIL import Image

    data = root / "data"
    (data / "img").mkdir(parents=True)
    rng = np.random.default_rng(3)
    rows, boxes = ["image,split,Nodule,Mass"], ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (96, 128), dtype=np.uint8)).save(data / f"img/{i}.png")
        rows.append(f"img/{i}.png,test,1,{i % 2}")
        boxes.append(f"{i}.png,Nodule,{10 + 20 * i},{5 + 10 * i},30,24,,,")
        if i % 2:
            boxes.append(f"{i}.png,Mass,0,40,60,50,,,")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    (data / "boxes.csv").write_text("\n".join(boxes) + "\n")
    paths = RunPaths.of(root, "csv", 0)
    options = {"boxes": "boxes.csv", "cache": False, "progress": False}
    config = TrainConfig(
        experiment="csv",
        precision="fp32",
        progress=False,
        model=ModelConfig(name="cam", encoder="resnet18"),
        data=DataConfig(
            name="csv", root=str(data), size=size, batch_size=2, num_workers=0, options=options
        ),
    )
    config.data.loc_split = "test"
    config.to_yaml(paths.config)
    dataset = create_dataset("csv", data, "test", size=size, **options)
    torch.manual_seed(0)
    model = create_model("cam", encoder="resnet18", num_classes=2)
    record = dataset.preprocessing.with_model(model.pylon_config)
    save_weights(model, paths.best, metadata=record.to_metadata())
    return paths


def test_reference_style_peaks_come_from_the_map_at_the_original_size(tmp_path):
    """As the reference's figures: the map (sigmoid) up-sampled bilinearly to the original image,
    its first arg-max, and a hit when it lies in a box of the class, edges included."""
    from pylon.evaluation.heatmaps import heatmap_rows

    paths = csv_run(tmp_path)
    rows = list(heatmap_rows(paths.root, peak_at="original", progress=False))
    metric_rows = list(heatmap_rows(paths.root, peak_at="input", progress=False))
    assert len(rows) == len(metric_rows) == 6  # 4 nodules, 2 masses
    moved = 0
    for row, metric_row in zip(rows, metric_rows, strict=True):
        assert row.image.shape[:2] == (96, 128)
        heat = torch.from_numpy(row.heatmap)[None, None]
        up = F.interpolate(heat, size=(96, 128), mode="bilinear", align_corners=False)[0, 0]
        index = int(torch.argmax(up))  # the first maximum in row-major order
        want = (index // 128, index % 128)
        assert row.peak == want
        hit = any(x <= want[1] <= x + w and y <= want[0] <= y + h for x, y, w, h, _ in row.boxes)
        assert row.hit == hit
        moved += metric_row.peak != row.peak
    assert moved > 0  # the two rules differ here, so the test tells them apart


def test_eval_pairs_are_the_per_pair_records_written_from_the_definition(tmp_path):
    """eval_pairs.csv: one row per (image, class) with a box; probability, peak, hit, IoBB and the
    original-pixel peak equal a per-pair computation written here from the definitions."""
    import torch.nn.functional as F

    from pylon.evaluation.evaluate import evaluate_run
    from pylon.models.weights import load_model

    paths = csv_run(tmp_path)
    paths.mark_done("test")
    results = evaluate_run(paths.root, progress=False)
    import pandas as pd

    pairs = pd.read_csv(paths.root / "eval_pairs.csv")
    dataset = create_dataset("csv", tmp_path / "data", "test", size=64, boxes="boxes.csv",
                             cache=False, progress=False)  # fmt: skip
    model = load_model(paths.best).eval()
    expected = []
    for i in range(len(dataset)):
        sample = dataset[i]
        with torch.no_grad():
            out = model(sample["image"][None])
        for c in sorted({int(b[4]) for b in sample["boxes"]}):
            up = F.interpolate(torch.sigmoid(out.cam[:, c : c + 1].float()), size=(64, 64),
                               mode="bilinear", align_corners=False)[0, 0]  # fmt: skip
            flat = int(torch.argmax(up.reshape(-1)))
            row, col = divmod(flat, 64)
            own = [b for b in sample["boxes"] if int(b[4]) == c]
            hit = any(x <= col <= x + w and y <= row <= y + h for x, y, w, h, _ in own)
            gt = torch.zeros(64, 64, dtype=torch.bool)
            for x, y, w, h, _ in own:
                gt[int(y) : int(y) + int(h), int(x) : int(x) + int(w)] = True
            mask = up / up.max() > 0.5
            iobb = int((mask & gt).sum()) / int(mask.sum())
            # original images are 96 x 128: pixel centres scale back, rounded to the nearest
            orig_row = min(95, max(0, round((row + 0.5) * 96 / 64 - 0.5)))
            orig_col = min(127, max(0, round((col + 0.5) * 128 / 64 - 0.5)))
            share = int(gt.sum()) / 64**2
            bucket = "small" if share < 0.01 else "medium" if share < 0.1 else "large"
            expected.append(
                (sample["image_id"], dataset.class_names[c],
                 float(torch.sigmoid(out.logits[0, c])), row, col, orig_row, orig_col, hit,
                 iobb, int(gt.sum()), bucket)
            )  # fmt: skip
    got = pairs[["image_id", "class", "probability", "peak_row", "peak_col",
                 "peak_row_original", "peak_col_original", "point_hit", "iobb", "box_area",
                 "size_bucket"]]  # fmt: skip
    assert len(got) == len(expected) == 6
    for row, want in zip(got.itertuples(index=False), expected, strict=True):
        assert (row.image_id, row[1]) == want[:2]
        assert row.probability == pytest.approx(want[2], abs=1e-6)
        assert tuple(row[3:8]) == want[3:8]
        assert row.iobb == pytest.approx(want[8], abs=1e-9)
        assert (row.box_area, row.size_bucket) == want[9:]
    assert pairs["point_hit"].mean() == pytest.approx(results["loc"]["point_acc_weighted"])
