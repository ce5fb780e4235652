"""``pylon view`` in a real browser: the command runs in a subprocess on a tiny evaluated run and
headless Chromium (Debian's, through Playwright) loads the page, filters, opens a case and uploads
an image; what the page shows is compared with eval_pairs.csv read here with pandas, and every
request the page made must have gone to 127.0.0.1."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests
from browser import browser  # noqa: F401  (the module's Chromium context)
from viewer_runs import WIDTH, csv_run

# a server (and a browser) per module; the tests follow one another on one page (the case the
# third opens is the one the fourth compares): `make test` keeps a file on one worker, in order
pytestmark = pytest.mark.slow
N_IMAGES = 6
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``pylon view RUN --port P`` in a subprocess, up and answering; its log on failure."""
    root = tmp_path_factory.mktemp("viewer")
    paths = csv_run(root, n_images=N_IMAGES)
    port = free_port()
    log_path = root / "view.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pylon.cli.main", "view", str(paths.root), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYLON_VIEW_AUTH": ""},
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"pylon view exited {process.returncode}: {log_path.read_text()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"pylon view did not answer in 120 s: {log_path.read_text()}")
            time.sleep(0.3)
        yield url, paths, root
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def page(browser, served):  # noqa: F811
    """One page of the module's browser on the viewer, with every request URL it makes."""
    url, _, _ = served
    requested: list[str] = []
    tab = browser.new_page()
    tab.on("request", lambda request: requested.append(request.url))
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(url)
    tab.requested = requested
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def pairs(served) -> pd.DataFrame:
    _, paths, _ = served
    return pd.read_csv(paths.root / "eval_pairs.csv")


def case_count(page) -> int:
    text = page.inner_text("#case-count")
    match = re.fullmatch(r"\s*(\d+) cases?\s*", text)
    assert match, text
    return int(match[1])


def wait_for_count(page, expected: int) -> None:
    page.wait_for_function(
        "n => { const el = document.querySelector('#case-count');"
        " return el && el.innerText.trim().startsWith(n + ' case'); }",
        arg=expected,
    )


ROWS_JS = (
    "() => Array.from(document.querySelectorAll('#case-list div[role=row].virtual-row'))"
    ".map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))"
    ".filter(cells => cells.length && cells[0])"
)


def listed_rows(page, expected: int) -> list[list[str]]:
    """The table's rows once it shows ``expected`` of them (it renders after the count)."""
    page.wait_for_function(f"n => ({ROWS_JS})().length === n", arg=expected)
    return page.evaluate(ROWS_JS)


def test_the_page_lists_every_case(page, pairs):
    wait_for_count(page, len(pairs))
    assert case_count(page) == len(pairs)
    rows = listed_rows(page, len(pairs))
    # most confident first, as the data say
    shown = [float(r[2]) for r in rows]
    assert shown == sorted(shown, reverse=True)
    assert shown[0] == pytest.approx(pairs["probability"].max(), abs=1e-3)


def test_filtering_to_misses_lists_the_misses(page, pairs):
    misses = pairs[~pairs["point_hit"].astype(bool)]
    assert 0 < len(misses) < len(pairs)  # the filter changes what is listed
    page.click("#filter-result label:has-text('miss')")
    wait_for_count(page, len(misses))
    rows = listed_rows(page, len(misses))
    assert {r[3] for r in rows} == {"miss"}
    assert sorted((r[0], r[1]) for r in rows) == sorted(
        zip(misses["image_id"], misses["class"], strict=True)
    )


def test_opening_a_case_shows_its_probability_and_overlay(page, pairs, served):
    _, _, root = served
    misses = pairs[~pairs["point_hit"].astype(bool)]
    top = misses.sort_values("probability", ascending=False, kind="stable").iloc[0]
    page.click("#case-list [data-testid='cell-0-1']")
    page.wait_for_function(
        "t => { const el = document.querySelector('#case-details');"
        " return el && el.innerText.includes(t); }",
        arg=f"probability {top['probability']:.3f}",
    )
    details = page.inner_text("#case-details")
    assert top["image_id"] in details and top["class"] in details and "miss" in details
    page.wait_for_function(
        "() => { const img = document.querySelector('#case-overlay img');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    natural = page.eval_on_selector("#case-overlay img", "img => img.naturalWidth")
    assert natural == WIDTH  # the overlay at the image's original resolution
    src = page.eval_on_selector("#case-overlay img", "img => img.src")
    assert "/gradio_api/file=" in src and urlsplit(src).hostname == "127.0.0.1"
    assert "per image" in page.inner_text("#case-scale")
    # no button that would post the image to another site
    labels = page.eval_on_selector_all(
        "#case-overlay button", "bs => bs.map(b => (b.title + ' ' + b.ariaLabel).toLowerCase())"
    )
    assert labels and not [label for label in labels if "share" in label]
    page.screenshot(path=str(root / "case.png"), full_page=True)


def test_side_by_side_and_metrics_tabs_show_the_open_case_and_tables(page):
    page.click("button[role='tab']:has-text('Side by side')")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#side-by-side img'))"
        ".some(img => img.complete && img.naturalWidth > 0)"
    )
    page.click("button[role='tab']:has-text('Metrics')")
    page.wait_for_function(
        "() => { const el = document.querySelector('#metric-table');"
        " return el && el.innerText.includes('auroc_micro'); }"
    )


def test_an_uploaded_image_gets_probabilities(page, served):
    _, paths, root = served
    page.click("button[role='tab']:has-text('New image')")
    page.set_input_files("#upload input[type='file']", str(root / "data" / "img" / "1.png"))
    page.wait_for_function(
        "() => { const el = document.querySelector('#probabilities');"
        " return el && el.innerText.includes('Nodule') && el.innerText.includes('Mass'); }"
    )
    text = page.inner_text("#probabilities")
    assert re.search(r"\d+(\.\d+)?\s*%", text), text
    page.screenshot(path=str(root / "new-image.png"), full_page=True)
    assert (root / "new-image.png").stat().st_size > 0


def test_every_request_went_to_localhost(page):
    hosts = {urlsplit(url).hostname for url in page.requested if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}, sorted(page.requested)
