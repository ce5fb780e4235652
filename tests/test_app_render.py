"""The viewer's overlays: a case rendered at the original resolution equals the run's model map
computed here, with the boxes and the peak ring where the records and the box file put them;
the cache serves a second request without the model or the image; only the cache folder's
files count as servable; post-hoc maps; synthetic runs; uploads (16-bit PNG, DICOM)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
from viewer_runs import HEIGHT, WIDTH, copied_run, csv_run

from pylon.app.cases import CaseTable
from pylon.app.render import OverlayCache, predict_upload
from pylon.data import create_dataset
from pylon.models.weights import load_model
from pylon.overlay_draw import peak_radius

GREEN, WHITE = (0, 255, 0), (255, 255, 255)


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    paths = csv_run(root, "alpha")
    return root, paths, CaseTable.from_run(paths.root)


def model_map(root, weights, case) -> np.ndarray:
    """sigmoid(CAM) of the case's class: the weights loaded here, the dataset's own eval input."""
    dataset = create_dataset("csv", root / "data", "test", size=64, boxes="boxes.csv",
                             cache=False, progress=False)  # fmt: skip
    index = [r.image_id for r in dataset.records].index(case.image_id)
    model = load_model(weights).eval()
    with torch.no_grad():
        cam = model(dataset[index]["image"][None]).cam
    return torch.sigmoid(cam[0, dataset.class_names.index(case.class_name)]).numpy()


def test_a_case_is_the_model_map_over_the_original_with_boxes_and_peak(run, tmp_path):
    from pylon.evaluation.overlay import peak_overlay

    root, paths, table = run
    cache = OverlayCache(tmp_path / "cache")
    case = next(c for c in table.sort("image").page(1) if c.class_name == "Mass")
    path = cache.render(case, opacity=0.5, scale="absolute")
    assert cache.contains(path) and path.parent.parent == cache.folder
    got = read_rgb(path)
    assert got.shape == (HEIGHT, WIDTH, 3)  # the original resolution, not the 64 px input
    # the same overlay drawn from a map computed here on the original file
    grey = cv2.imread(str(root / "data" / case.image_id), cv2.IMREAD_GRAYSCALE)
    heat = model_map(root, paths.best, case)
    want = peak_overlay(grey, heat, case.peak, style="probability", max_side=None,
                        boxes=case.boxes, alpha=0.5)  # fmt: skip
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2
    # the box file's Mass box (0, 40, 60, 50) in green, the recorded peak ringed in white
    assert case.boxes == ((0.0, 40.0, 60.0, 50.0),)
    assert tuple(got[40, 30]) == GREEN and tuple(got[65, 60]) == GREEN
    x, y = case.peak
    r = peak_radius(got.shape)
    ring = [(x + dx, y + dy) for dx, dy in ((r, 0), (-r, 0), (0, r), (0, -r))]
    inside = [(px, py) for px, py in ring if 0 <= px < WIDTH and 0 <= py < HEIGHT]
    assert inside and all(tuple(got[py, px]) == WHITE for px, py in inside)
    # opacity 0 on the absolute scale: the image itself (stretched to its maximum, as
    # pytorch-grad-cam's blend does) away from the box and the ring
    bare = read_rgb(cache.render(case, opacity=0.0, scale="absolute"))
    far = np.ones((HEIGHT, WIDTH), bool)
    far[35:95, :] = False  # around the box
    far[max(0, y - r - 3) : y + r + 4, max(0, x - r - 3) : x + r + 4] = False
    image = 255.0 * grey[far] / grey.max()
    assert np.abs(bare[far].astype(float) - image[:, None]).max() <= 1.0
    # the per-image scale differs from the absolute one and is cached apart
    scaled = cache.render(case, opacity=0.5, scale="image")
    assert scaled != path and not np.array_equal(read_rgb(scaled), got)


def test_the_cache_answers_without_the_model_or_the_image(run, tmp_path):
    root, paths, _ = run
    copy = copied_run(tmp_path, paths, root / "data", "copy")
    data = tmp_path / "data"
    case = CaseTable.from_run(copy.root).page(1)[0]
    cache = OverlayCache(tmp_path / "cache")
    first = cache.render(case, opacity=0.4)
    stamp = first.stat().st_mtime_ns
    (data / case.image_id).unlink()  # the image is gone: only the caches can answer now
    assert cache.render(case, opacity=0.4) == first and first.stat().st_mtime_ns == stamp
    other = cache.render(case, opacity=0.8)  # a new opacity: the map kept in memory
    assert other != first and cache.contains(other)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        OverlayCache(tmp_path / "fresh").render(case, opacity=0.8)
    # retrained weights (a newer file) are never served from the old weights' cache
    os.utime(copy.best, ns=(stamp + 10**9, stamp + 10**9))
    with pytest.raises(FileNotFoundError, match="image file not found"):
        cache.render(case, opacity=0.4)
    with pytest.raises(ValueError, match="opacity"):
        cache.render(case, opacity=1.5)
    with pytest.raises(ValueError, match="scale='log'; expected one of image, absolute"):
        cache.render(case, scale="log")
    with pytest.raises(ValueError, match="method='nope'"):
        cache.render(case, method="nope")


def test_only_files_inside_the_cache_folder_count(run, tmp_path):
    _, paths, table = run
    cache = OverlayCache(tmp_path / "cache")
    rendered = cache.render(table.page(1)[0])
    assert cache.contains(rendered)
    assert not cache.contains(paths.best) and not cache.contains(paths.config)
    assert not cache.contains(cache.folder / ".." / "outside.txt")
    (tmp_path / "outside.txt").write_text("secret")
    assert not cache.contains(cache.folder / ".." / "outside.txt")
    link = cache.folder / "link.png"
    link.symlink_to(paths.config)
    assert not cache.contains(link) and not cache.contains("/etc/passwd")
    assert not cache.contains(cache.folder)  # a folder is not a file
    copy = cache.publish(paths.config)
    assert cache.contains(copy) and copy.read_bytes() == paths.config.read_bytes()
    assert oct(cache.folder.stat().st_mode & 0o777) == "0o700"


def test_a_page_renders_in_batches_as_one_by_one(run, tmp_path):
    _, _, table = run
    page = table.page(1, 4)
    batched = OverlayCache(tmp_path / "a").render_many(page, opacity=0.5, scale="image")
    single = [OverlayCache(tmp_path / "b").render(c, opacity=0.5, scale="image") for c in page]
    assert [p.name for p in batched] == [p.name for p in single]
    for a, b in zip(batched, single, strict=True):
        assert np.abs(read_rgb(a).astype(int) - read_rgb(b).astype(int)).max() <= 1


def test_a_posthoc_map_is_ringed_at_its_own_peak(run, tmp_path):
    _, _, table = run
    cache = OverlayCache(tmp_path / "cache")
    case = table.page(1)[0]
    path = cache.render(case, method="gradcam", scale="absolute")
    got = read_rgb(path)
    assert got.shape == (HEIGHT, WIDTH, 3)
    heat = cache.heatmap(case, method="gradcam")
    assert heat.shape == (64, 64) and 0 <= heat.min() and heat.max() <= 1
    row, col = divmod(int(np.argmax(heat)), 64)
    x = min(max(round((col + 0.5) * WIDTH / 64 - 0.5), 0), WIDTH - 1)
    y = min(max(round((row + 0.5) * HEIGHT / 64 - 0.5), 0), HEIGHT - 1)
    r = peak_radius(got.shape)
    ring = [(x + dx, y + dy) for dx, dy in ((r, 0), (-r, 0), (0, r), (0, -r))]
    inside = [(px, py) for px, py in ring if 0 <= px < WIDTH and 0 <= py < HEIGHT]
    assert inside and all(tuple(got[py, px]) == WHITE for px, py in inside)
    assert path != cache.render(case, scale="absolute")


def test_synthetic_runs_render_their_generated_images(tmp_path):
    from pylon import create_model, save_weights
    from pylon.evaluation.evaluate import evaluate_run
    from pylon.training.config import DataConfig, ModelConfig, TrainConfig
    from pylon.training.runs import RunPaths

    paths = RunPaths.of(tmp_path, "synth", 0)
    config = TrainConfig(
        experiment="synth", precision="fp32", progress=False,
        model=ModelConfig(name="cam", encoder="resnet18"),
        data=DataConfig(name="synthetic", size=64, batch_size=4, num_workers=0,
                        options={"num_images": 4}),
    )  # fmt: skip
    config.to_yaml(paths.config)
    dataset = create_dataset("synthetic", None, "test", size=64, num_images=4)
    model = create_model("cam", encoder="resnet18", num_classes=len(dataset.class_names))
    save_weights(model, paths.best, metadata=dataset.preprocessing.with_model(
        model.pylon_config).to_metadata())  # fmt: skip
    paths.mark_done("test")
    evaluate_run(paths.root, progress=False)
    table = CaseTable.from_run(paths.root)
    cases = table.page(1, 50)
    assert len(cases) == len(table) > 0
    by_id = {dataset[i]["image_id"]: dataset[i] for i in range(4)}
    for case in cases:
        sample = by_id[case.image_id]
        c = dataset.class_names.index(case.class_name)
        assert list(case.boxes) == [tuple(float(v) for v in b[:4]) for b in sample["boxes"]
                                    if int(b[4]) == c]  # fmt: skip
        assert case.image_path is None
    got = read_rgb(OverlayCache(tmp_path / "cache").render(cases[0], opacity=0.0,
                                                            scale="absolute"))  # fmt: skip
    assert got.shape == (64, 64, 3)
    x, y, w, h = (round(v) for v in cases[0].boxes[0])
    assert tuple(got[y, x + w // 2]) == GREEN


def test_uploads_go_through_pylons_readers(run, tmp_path):
    from dicom_files import write_dx

    _, paths, _ = run
    cache = OverlayCache(tmp_path / "cache")
    predictor = cache.predictor(paths.best)
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (80, 100), dtype=np.uint8)
    eight, sixteen = tmp_path / "eight.png", tmp_path / "sixteen.png"
    cv2.imwrite(str(eight), grey)
    cv2.imwrite(str(sixteen), grey.astype(np.uint16) * 257)  # the same image on 16 bits
    a = predict_upload(eight, predictor, 0.0, cache)
    b = predict_upload(sixteen, predictor, 0.0, cache)
    for name, p in a.probabilities.items():
        assert b.probabilities[name] == pytest.approx(p, abs=1e-5)
    assert a.selected == predictor.class_names == list(a.overlays)
    for path in a.overlays.values():
        assert cache.contains(path) and read_rgb(path).shape == (80, 100, 3)
    record = json.loads(a.json_path.read_text())
    assert cache.contains(a.json_path)
    assert record["threshold"] == 0.0 and record["selected"] == a.selected
    assert record["path"] == "eight.png" and record["height"] == 80
    # a threshold above every probability: nothing drawn, the same prediction (no new forward)
    top = max(a.probabilities.values())
    c = predict_upload(eight, predictor, min(1.0, top + 1e-3), cache)
    assert c.selected == [] and c.overlays == {} and c.prediction is a.prediction
    assert json.loads(c.json_path.read_text())["selected"] == []
    dicom = write_dx(tmp_path / "image.dcm", (grey.astype(np.uint16) * 16))
    d = predict_upload(dicom, predictor, 0.0, cache)
    assert json.loads(d.json_path.read_text())["pixel_spacing"] == [0.2, 0.2]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        predict_upload(text, predictor, 0.5, cache)
    with pytest.raises(ValueError, match="threshold"):
        predict_upload(eight, predictor, 1.5, cache)
