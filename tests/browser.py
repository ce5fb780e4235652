"""A real browser for the tests: Debian's Chromium, headless, driven by Playwright.

``browser`` (module scope) yields a Playwright browser context on a fresh user-data folder; a
test module imports it (``from browser import browser``). ``playwright install`` cannot
download here and is not needed: the context runs ``/usr/bin/chromium``. A missing Chromium
fails the test (never skips): ``make test`` installs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# No background traffic of the browser's own (updates, sync, field trials): what the page
# requests is what the app asked for.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium context (1400x1000 viewport) for the whole module."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium as root) "
            "or `sudo apt-get install -y chromium`"
        )
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()
