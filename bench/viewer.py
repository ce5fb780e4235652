"""Benchmark ``pylon view`` on a synthetic run of 1,000 cases on the CPU.

The run (``tests/viewer_runs.many_cases_run``): 667 small PNGs (96 x 128) of a CSV dataset, an
untrained resnet18 CAM's weights, and an ``eval_pairs.csv`` of 1,000 (image, class) cases
written by hand (no evaluation run). Prints:

- start-up: open the sources and their case table, build the Gradio Blocks page, launch the
  server (the import of gradio and torch is printed apart);
- per page of 20 cases: the listing (filter + sort + page), the page's overlays rendered
  (each image through the model, once per page in a batch) and the same page again from the
  cache, as medians over ``--pages`` pages.

Run: ``.venv/bin/python bench/viewer.py [--images 667 --pages 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=667, help="images (1.5 cases each)")
    parser.add_argument("--pages", type=int, default=5, help="pages of 20 cases timed")
    args = parser.parse_args()

    start = time.perf_counter()
    import torch  # noqa: F401
    from viewer_runs import many_cases_run

    with tempfile.TemporaryDirectory(prefix="pylon-bench-view-") as tmp:
        paths = many_cases_run(Path(tmp) / "runs", n_images=args.images)
        imported = time.perf_counter()
        from pylon.app import server  # noqa: F401  (pylon's modules; gradio comes at build)

        t0 = time.perf_counter()
        viewer = server.Viewer([paths.root], prefetch=False)
        opened = time.perf_counter()
        viewer.build()
        built = time.perf_counter()
        url = viewer.launch(port=_free_port())
        launched = time.perf_counter()
        import requests

        assert requests.get(url, timeout=30).status_code == 200
        answered = time.perf_counter()
        try:
            run = viewer.runs[0]
            n_cases = len(viewer.tables[run])
            print(f"synthetic run: {n_cases} cases of {args.images} images; torch + data "
                  f"{imported - start:.1f} s")  # fmt: skip
            print(
                f"start-up {launched - t0:.2f} s: open sources {opened - t0:.2f} s, build Blocks "
                f"(imports gradio) {built - opened:.2f} s, launch {launched - built:.2f} s; "
                f"first page request answered {answered - launched:.2f} s later"
            )
            listing, rendered, cached = [], [], []
            for number in range(1, args.pages + 1):
                t = time.perf_counter()
                viewer.list_cases(run, [], "all", 0, 1, [], "confident_wrong", page=number)
                listing.append(time.perf_counter() - t)
                table = viewer.view(run, [], "all", 0, 1, [], "confident_wrong")
                cases = table.page(number, server.PAGE_SIZE)
                t = time.perf_counter()
                viewer.overlays.render_many(cases)
                rendered.append(time.perf_counter() - t)
                t = time.perf_counter()
                viewer.overlays.render_many(cases)
                cached.append(time.perf_counter() - t)
            ms = 1000
            print(
                f"per page of {server.PAGE_SIZE} cases (median of {args.pages}): listing "
                f"{statistics.median(listing) * ms:.1f} ms, overlays rendered "
                f"{statistics.median(rendered) * ms:.0f} ms, cached "
                f"{statistics.median(cached) * ms:.1f} ms"
            )
        finally:
            viewer.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
