"""``pylon view``'s server: the page's functions on a tiny evaluated run (compared with
eval_pairs.csv read here with pandas, the PNG read back, ``pylon predict``'s own output), and the
file-refusal rules over real HTTP against a launched server (``/etc/passwd``, ``..`` and
``%2e%2e`` traversals, a run's weights and config, symlinks, URLs), plus the command line's
refusals."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner
from viewer_runs import HEIGHT, WIDTH, csv_run

from pylon.app.security import (
    APP_EXTRA_HINT,
    AUTH_ENV,
    FileGuard,
    exposure_warning,
    read_auth,
    require_gradio,
)
from pylon.cli.main import app

pytestmark = pytest.mark.slow  # a server (and a browser) per module
N_IMAGES = 6
SECRET = "top secret, outside every viewed folder\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    """A launched viewer of one tiny evaluated run (a symlink in the run points at a secret
    file outside it), with the pairs read here."""
    from pylon.app.server import Viewer

    root = tmp_path_factory.mktemp("served")
    paths = csv_run(root, n_images=N_IMAGES)
    secret = root / "secret.txt"
    secret.write_text(SECRET)
    (paths.root / "link.txt").symlink_to(secret)
    served = Viewer([paths.root], prefetch=False)
    served.launch(port=free_port())
    served.run_dir = paths.root
    served.root = root
    served.pairs = pd.read_csv(paths.root / "eval_pairs.csv")
    yield served
    served.close()
    assert not served.cache.exists()  # the temporary cache goes with the viewer


def get(viewer, raw_path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of ``..`` or ``%2e``)."""
    host, port = viewer.url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", raw_path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------- the page's functions
def test_case_list_filters_and_sorts_as_the_pairs_say(viewer):
    pairs = viewer.pairs
    run = viewer.runs[0]
    count, frame, page_text, page = viewer.list_cases(run, [], "all", 0, 1, [], "confidence")
    assert count == f"{len(pairs)} cases" and page == 1 and page_text == "page 1 of 1"
    assert frame["probability"].tolist() == sorted(pairs["probability"].round(3), reverse=True)

    hits = pairs["point_hit"].astype(bool)
    for result, want in (("hit", hits), ("miss", ~hits)):
        count, frame, _, _ = viewer.list_cases(run, [], result, 0, 1, [], "confidence")
        assert count.split()[0] == str(int(want.sum()))
        assert set(frame["result"]) <= {result}

    mass = pairs[pairs["class"] == "Mass"]
    count, frame, _, _ = viewer.list_cases(run, ["Mass"], "all", 0, 1, [], "confidence")
    assert int(count.split()[0]) == len(mass) > 0
    assert sorted(frame["image_id"]) == sorted(mass["image_id"])

    low, high = 0.3, float(pairs["probability"].median())
    inside = pairs[(pairs["probability"] >= low) & (pairs["probability"] <= high)]
    count, _, _, _ = viewer.list_cases(run, [], "all", low, high, [], "confidence")
    assert int(count.split()[0]) == len(inside)

    bucket = pairs["size_bucket"].iloc[0]
    count, _, _, _ = viewer.list_cases(run, [], "all", 0, 1, [bucket], "confidence")
    assert int(count.split()[0]) == int((pairs["size_bucket"] == bucket).sum())

    # confident and wrong: misses first, most confident first, then hits
    _, frame, _, _ = viewer.list_cases(run, [], "all", 0, 1, [], "confident_wrong")
    want = pairs.assign(h=hits).sort_values(["h", "probability"], ascending=[True, False])
    assert frame["image_id"].tolist() == want["image_id"].tolist()
    assert frame["class"].tolist() == want["class"].tolist()

    # a page past the last is clamped to the last
    _, _, page_text, page = viewer.list_cases(run, [], "all", 0, 1, [], "confidence", page=9)
    assert (page, page_text) == (1, "page 1 of 1")
    with pytest.raises(ValueError, match="unknown class"):
        viewer.list_cases(run, ["Nope"], "all", 0, 1, [], "confidence")
    with pytest.raises(ValueError, match="result"):
        viewer.list_cases(run, [], "maybe", 0, 1, [], "confidence")


def test_an_opened_case_is_a_png_in_the_cache_at_the_original_size(viewer):
    row = viewer.pairs.iloc[0]
    path, details, scale_text = viewer.open_case(viewer.runs[0], row["image_id"], row["class"])
    assert viewer.cache in path.resolve().parents
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (WIDTH, HEIGHT)
    assert f"probability **{row['probability']:.3f}**" in details
    assert ("**hit**" if row["point_hit"] else "**miss**") in details
    assert f"x={row['peak_col_original']}, y={row['peak_row_original']}" in details
    assert "per image" in scale_text
    other, _, absolute = viewer.open_case(
        viewer.runs[0], row["image_id"], row["class"], opacity=0.9, scale="absolute"
    )
    assert other != path and "absolute" in absolute.lower()
    with Image.open(path) as a, Image.open(other) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="no case"):
        viewer.open_case(viewer.runs[0], "img/none.png", "Mass")


def test_side_by_side_and_metrics(viewer):
    row = viewer.pairs.iloc[0]
    gallery, table = viewer.compare(viewer.runs[0], row["image_id"], row["class"])
    assert len(gallery) == len(table) == 1  # one run, no benchmark
    assert table["probability"].iloc[0] == pytest.approx(row["probability"], abs=1e-3)
    titles, title, frame, plots = viewer.metrics(viewer.sources[0].name)
    assert title == titles[0] and "localization" in titles and plots == []
    _, _, loc, _ = viewer.metrics(viewer.sources[0].name, "localization")
    assert "metric" in loc.columns and len(loc) > 0


def test_a_new_image_gets_what_pylon_predict_gives(viewer, tmp_path):
    image = viewer.root / "data" / "img" / "1.png"
    model = viewer.runs[0]
    probs, gallery, downloads, note = viewer.predict_file(str(image), model, threshold=0.0)
    weights = viewer.run_dir / "checkpoints" / "best.safetensors"
    out = tmp_path / "predicted"
    args = ["predict", str(weights), str(image), "--out", str(out), "--precision", "fp32"]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert probs == pytest.approx(record["probabilities"], abs=1e-5)
    assert len(gallery) == len(probs)  # threshold 0: every class drawn
    for path in downloads:
        assert viewer.cache in Path(path).resolve().parents
    saved = json.loads(open(downloads[-1]).read())
    assert saved["probabilities"] == pytest.approx(record["probabilities"], abs=1e-5)
    probs, gallery, _, note = viewer.predict_file(str(image), model, threshold=1.0)
    assert gallery == [] and "no class" in note


def test_dicom_and_16_bit_uploads_are_read_as_pylon_predict_reads_them(viewer, tmp_path):
    """The New image tab takes files, not decoded images: a DICOM (windowed) and a 16-bit PNG
    give the probabilities ``pylon predict`` gives for the same files."""
    import cv2
    from dicom_files import write_dx

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 4000, (HEIGHT, WIDTH), dtype=np.uint16)
    pixels[20:50, 30:70] = 3900
    folder = tmp_path / "in"
    folder.mkdir()
    dicom = write_dx(folder / "x.dcm", pixels, WindowCenter=2000, WindowWidth=4000)
    png16 = folder / "x16.png"
    cv2.imwrite(str(png16), pixels * 16)
    weights = viewer.run_dir / "checkpoints" / "best.safetensors"
    out = tmp_path / "predicted"
    args = ["predict", str(weights), str(folder), "--out", str(out), "--precision", "fp32"]
    result = CliRunner().invoke(app, [*args, "--no-progress", "--no-overlays"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_name = {Path(r["path"]).name: r["probabilities"] for r in records}
    for path in (dicom, png16):
        probs, _, _, _ = viewer.predict_file(str(path), viewer.runs[0], threshold=0.5)
        assert probs == pytest.approx(by_name[path.name], abs=1e-5), path.name


# ---------------------------------------------------------------------------- HTTP: what is served
def test_a_rendered_overlay_is_served(viewer):
    row = viewer.pairs.iloc[0]
    path, _, _ = viewer.open_case(viewer.runs[0], row["image_id"], row["class"])
    status, body = get(viewer, f"/gradio_api/file={path}")
    assert status == 200 and body == path.read_bytes() and body[:8] == b"\x89PNG\r\n\x1a\n"


def refused_paths(viewer) -> list[str]:
    run, cache = viewer.run_dir, viewer.cache
    up = "/".join([".."] * len(cache.parts))
    encoded = "/".join(["%2e%2e"] * len(cache.parts))
    return [
        "/gradio_api/file=/etc/passwd",
        "/file=/etc/passwd",
        "/gradio_api/file/etc/passwd",
        f"/gradio_api/file={cache}/{up}/etc/passwd",
        f"/gradio_api/file={cache}/{encoded}/etc/passwd",
        f"/gradio_api/file={cache}/%2e%2e%2f%2e%2e%2f{up}/etc/passwd",
        f"/gradio_api/file={run}/checkpoints/best.safetensors",
        f"/gradio_api/file={run}/config.yaml",
        f"/gradio_api/file={run}/eval_pairs.csv",
        f"/gradio_api/file={run}/link.txt",
        f"/gradio_api/file={cache}/{encoded}{run}/config.yaml",
        "/gradio_api/file=http://example.com/x.png",
        "/gradio_api/proxy=https://example.hf.space/x",
    ]


def test_every_other_file_is_refused(viewer):
    for raw in refused_paths(viewer):
        status, body = get(viewer, raw)
        assert status in (403, 404), (raw, status, body[:200])
        assert b"root:" not in body and SECRET.encode() not in body, raw


def test_a_symlink_in_the_cache_to_a_run_file_is_refused(viewer):
    link = viewer.cache / "overlays" / "planted.png"
    link.symlink_to(viewer.run_dir / "checkpoints" / "best.safetensors")
    try:
        status, _ = get(viewer, f"/gradio_api/file={link}")
        assert status in (403, 404)
    finally:
        link.unlink()


def test_monitoring_is_off_and_telemetry_disabled(viewer):
    status, _ = get(viewer, "/monitoring")
    assert status in (403, 404)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    status, body = get(viewer, "/config")
    assert status == 200 and json.loads(body)["analytics_enabled"] is False
    assert viewer.url.startswith("http://127.0.0.1:")
    assert str(viewer.run_dir.resolve()) in viewer.blocked_paths()


def test_file_guard_rule():
    guard = FileGuard(None, roots=["/srv/cache"])
    assert guard.allows("/config") and guard.allows("/assets/index.js")
    assert not guard.allows("/gradio_api/file=/srv/cache/../etc/passwd")
    assert not guard.allows("/gradio_api/file=/srv/cachex/a.png")
    assert not guard.allows("/gradio_api/file=https://example.com/a.png")
    assert not guard.allows("/gradio_api/file=")
    assert not guard.allows("/gradio_api/proxy=https://a.hf.space/")


def test_a_login_guards_the_files(tmp_path, viewer):
    """With a login, even a cached overlay needs it."""
    from pylon.app.server import Viewer

    row = viewer.pairs.iloc[0]
    guarded = Viewer([viewer.run_dir], prefetch=False)
    try:
        guarded.launch(port=free_port(), auth=("ann", "s3cret:pw"))
        path, _, _ = guarded.open_case(guarded.runs[0], row["image_id"], row["class"])
        status, _ = get(guarded, f"/gradio_api/file={path}")
        assert status in (401, 403)
    finally:
        guarded.close()


# ---------------------------------------------------------------------------- credentials, CLI
def test_credentials_come_from_a_private_file_or_the_environment(tmp_path):
    file = tmp_path / "auth"
    file.write_text("\nann:pa:ss\n")
    file.chmod(0o600)
    assert read_auth(file, environ={}) == ("ann", "pa:ss")
    file.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_auth(file, environ={})
    assert read_auth(None, environ={AUTH_ENV: "bob:pw"}) == ("bob", "pw")
    assert read_auth(None, environ={}) is None
    with pytest.raises(ValueError, match=AUTH_ENV) as err:
        read_auth(None, environ={AUTH_ENV: "no-colon"})
    assert "no-colon" not in str(err.value)  # the value is never echoed
    assert exposure_warning("127.0.0.1", False) is None
    assert exposure_warning("0.0.0.0", True) is None
    assert "WITHOUT a login" in exposure_warning("0.0.0.0", False)


def test_command_line_refusals(tmp_path, viewer, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(app, ["view", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not found" in result.output
    cache = viewer.run_dir / "viewer-cache"
    result = runner.invoke(app, ["view", str(viewer.run_dir), "--cache", str(cache)])
    assert result.exit_code == 2 and "inside" in result.output and not cache.exists()
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(ImportError, match=r"pip install 'pylon-localization\[app\]'"):
        require_gradio()
    result = runner.invoke(app, ["view", str(viewer.run_dir)])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {APP_EXTRA_HINT}"
