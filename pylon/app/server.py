"""The ``pylon view`` web app: a Gradio Blocks page over the viewer's data layer.

:class:`Viewer` opens the sources (:mod:`pylon.app.sources`), their case tables
(:mod:`pylon.app.cases`) and an :class:`pylon.app.render.OverlayCache` in the viewer's own cache
folder; its plain methods (:meth:`Viewer.list_cases`, :meth:`Viewer.open_case`,
:meth:`Viewer.compare`, :meth:`Viewer.metrics`, :meth:`Viewer.predict_file`) are what the page's
events call, and what the tests call without a browser.

Safety (:mod:`pylon.app.security`): the cache folder is Gradio's temporary folder too
(``GRADIO_TEMP_DIR``), so every file the page shows was rendered or copied there; the source
folders are Gradio's ``blocked_paths``; :class:`pylon.app.security.FileGuard` refuses any other
file; events take names and numbers from the page, never a path; no telemetry, no monitoring
endpoint, no share link, no run history, bound to 127.0.0.1 unless told otherwise.
"""

import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pylon.app.security import (
    FileGuard,
    prepare_environment,
    require_gradio,
    restore_environment,
)

PAGE_SIZE = 20
RESULTS = ("all", "hit", "miss")
SORT_CHOICES = [
    ("most confident first", "confidence"),
    ("confident and wrong first", "confident_wrong"),
    ("by image", "image"),
]
SCALE_CHOICES = [("per image", "image"), ("absolute (probability 0..1)", "absolute")]
MAX_UPLOAD = "256mb"
# no "share" button: it posts to Hugging Face Spaces discussions
BUTTONS = ["download", "fullscreen"]


def _fmt(value: float, digits: int = 3) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


class Viewer:
    """The viewer of some runs, experiments, benchmark and prediction outputs.

    Args:
        paths: what ``pylon view`` was given (:func:`pylon.app.sources.open_sources`).
        cache: the viewer's own folder for rendered overlays, published plots and uploads, the
            only files it serves (default: a new temporary folder, removed by :meth:`close`). It
            must not lie inside a viewed folder, nor hold one.
        device: torch device of the models that render overlays and new images.
        prefetch: render the rest of a listed page's overlays in the background, so opening
            the next case is a file lookup.

    Raises:
        ValueError: a path that is not something the viewer opens, a bad cache folder, or
            nothing to show.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        cache: str | os.PathLike | None = None,
        device: str = "cpu",
        prefetch: bool = True,
    ):
        from pylon.app.cases import CaseTable
        from pylon.app.render import LRU, OverlayCache
        from pylon.app.sources import open_sources

        self.sources = open_sources(paths)
        self._owns_cache = cache is None
        if cache is None:
            self.cache = Path(tempfile.mkdtemp(prefix="pylon-view-")).resolve()
        else:
            self.cache = Path(cache).resolve()
            self._check_cache()
        self.cache.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cache, 0o700)
        self._environment = prepare_environment(self.cache)
        self.overlays = OverlayCache(self.cache / "overlays", device=device)
        self.tables: dict[str, CaseTable] = {}
        self.notes: dict[str, str] = {}
        for source in self.sources:
            if source.kind == "predict":  # its findings are cases too
                from pylon.app.predict_cases import prediction_note

                table = CaseTable.from_source(source)
                if len(table):
                    self.tables[source.name] = table
                self.notes[source.name] = prediction_note(source, len(table))
                continue
            if source.kind != "run":
                continue
            if source.pairs is None:
                self.notes[source.name] = (
                    f"not evaluated: no cases (run `pylon evaluate {source.path}`)"
                )
                continue
            self.tables[source.name] = CaseTable.from_source(source)
        self.benchmarks = [s for s in self.sources if s.kind == "benchmark"]
        self.models = {s.name: s.weights for s in self.sources if s.weights is not None}
        self.prefetch = prefetch
        self._views = LRU(64)  # filtered and sorted tables by their query
        self._views_lock = threading.Lock()
        self._prefetching = threading.Lock()
        self.blocks = None
        self.app = None
        self.url: str | None = None

    # ----------------------------------------------------------------------------- checks
    def _check_cache(self) -> None:
        for source in self.sources:
            for folder in {source.path.resolve(), source.given.resolve()}:
                if self.cache == folder or folder in self.cache.parents:
                    raise ValueError(
                        f"--cache {self.cache} lies inside {folder}, a viewed folder: the viewer "
                        "serves its cache, and must never serve a run's files; choose a folder "
                        "outside it"
                    )
                if self.cache in folder.parents:
                    raise ValueError(
                        f"--cache {self.cache} holds {folder}, a viewed folder: choose a "
                        "folder that holds no run"
                    )

    def blocked_paths(self) -> list[str]:
        """Folders Gradio must never serve from: each source folder, the folder it was given
        as (an experiment), and the folder of every weights file."""
        blocked = set()
        for source in self.sources:
            blocked.add(source.path.resolve())
            blocked.add(source.given.resolve())
            if source.weights is not None:
                blocked.add(source.weights.resolve().parent)
        return sorted(str(p) for p in blocked)

    # ----------------------------------------------------------------------------- cases
    @property
    def runs(self) -> list[str]:
        """Names of the runs that have cases."""
        return list(self.tables)

    def _table(self, run: str):
        try:
            return self.tables[run]
        except KeyError:
            raise ValueError(
                f"run {run!r} has no cases; runs with cases: {', '.join(self.tables) or 'none'}"
            ) from None

    def view(
        self,
        run: str,
        classes: Sequence[str] | None = None,
        result: str = "all",
        low: float = 0.0,
        high: float = 1.0,
        buckets: Sequence[str] | None = None,
        sort: str = "confidence",
    ):
        """The run's :class:`pylon.app.cases.CaseTable` filtered and sorted (kept for reuse).

        Args:
            run: a run name of :attr:`runs`.
            classes: keep these classes (empty: all).
            result: ``"all"``, ``"hit"`` or ``"miss"``.
            low, high: the probability range, both included.
            buckets: keep these lesion-size buckets (empty: all).
            sort: ``"confidence"``, ``"confident_wrong"`` or ``"image"``.

        Raises:
            ValueError: an unknown run, class, result, bucket or sort, or a bad range.
        """
        if result not in RESULTS:
            raise ValueError(f"result {result!r}; expected one of {', '.join(RESULTS)}")
        key = (
            run,
            tuple(classes or ()),
            result,
            float(low),
            float(high),
            tuple(buckets or ()),
            sort,
        )
        with self._views_lock:
            cached = self._views.get(key)
        if cached is not None:
            return cached
        table = self._table(run).filter(
            classes=classes or None,
            hit=None if result == "all" else result,
            prob_range=(float(low), float(high)),
            size_buckets=buckets or None,
        )
        table = table.sort(sort)
        with self._views_lock:
            self._views.put(key, table)
        return table

    def list_cases(self, run, classes, result, low, high, buckets, sort, page=1):
        """One page of the filtered cases.

        Returns:
            ``(count_text, page_frame, page_text, page)``: ``"N cases"`` (what the filters
            keep), the page as a display table, ``"page P of K"`` and the page number, clamped
            to the pages there are.
        """
        table = self.view(run, classes, result, low, high, buckets, sort)
        pages = table.page_count(PAGE_SIZE)
        page = min(max(1, int(page or 1)), pages)
        start = (page - 1) * PAGE_SIZE
        frame = table.as_dataframe().iloc[start : start + PAGE_SIZE]
        shown = pd.DataFrame(
            {
                "image_id": frame["image_id"],
                "class": frame["class"],
                "probability": frame["probability"].round(3),
                "result": frame["result"],
                "size": frame["size_bucket"],
                "iobb": frame["iobb"].round(3),
            }
        ).reset_index(drop=True)
        n = len(table)
        count = f"{n} case{'s' if n != 1 else ''}"
        if self.prefetch and n:
            self._prefetch(table, page)
        return count, shown, f"page {page} of {pages}", page

    def _prefetch(self, table, page: int) -> None:
        """Render the page's overlays in the background (default opacity and scale), one page
        at a time; a page asked for while one renders is skipped."""
        if not self._prefetching.acquire(blocking=False):
            return

        def work():
            try:
                cases = [c for c in table.page(page, PAGE_SIZE) if c.weights is not None]
                self.overlays.render_many(cases)
            except Exception:  # noqa: BLE001  (best effort: opening a case says what is wrong)
                pass
            finally:
                self._prefetching.release()

        threading.Thread(target=work, name="pylon-view-prefetch", daemon=True).start()

    def case(self, run: str, image_id: str, class_name: str):
        """The :class:`pylon.app.cases.Case` of ``(image_id, class_name)`` in ``run``.

        Raises:
            ValueError: the run has no such case.
        """
        found = self._table(run).case(str(image_id), str(class_name))
        if found is None:
            raise ValueError(f"{run}: no case ({image_id!r}, {class_name!r})")
        return found

    def open_case(self, run, image_id, class_name, opacity=0.5, scale="image"):
        """A case's overlay and what the page says about it.

        Returns:
            ``(png_path, details, scale_text)``: the overlay inside the cache folder, a Markdown
            summary (class, image, probability, hit/miss, peak, boxes, size) and the colour
            scale in words.
        """
        from pylon.app.render import SCALE_TITLES

        case = self.case(run, image_id, class_name)
        path = self.overlays.render(case, opacity=float(opacity), scale=scale)
        return path, case_details(case), SCALE_TITLES[scale].capitalize()

    def compare(self, run, image_id, class_name, opacity=0.5, scale="image"):
        """The same case in every run that has it and under each benchmarked method.

        Returns:
            ``(gallery, table)``: ``[(png_path, caption), ...]`` in one row, and the values per
            panel (probability, hit, benchmark per-pair metrics).
        """
        from pylon.app.cases import side_by_side

        case = self.case(run, image_id, class_name)
        entries = side_by_side(case, list(self.tables.values()), self.benchmarks)
        gallery, rows = [], []
        for entry in entries:
            shown = entry.case
            hit = None if shown is None else shown.hit
            caption = f"{entry.run} · {entry.method}"
            if shown is not None and not math.isnan(shown.probability):
                caption += f" · p={shown.probability:.3f}"
            if hit is not None:
                caption += f" · {'hit' if hit else 'miss'}"
            if shown is not None and shown.weights is not None:
                path = self.overlays.render(
                    shown, opacity=float(opacity), scale=scale, method=entry.method
                )
                gallery.append((str(path), caption))
            rows.append(
                {
                    "run": entry.run,
                    "method": entry.method,
                    "probability": None if shown is None else round(shown.probability, 3),
                    "result": None if hit is None else ("hit" if hit else "miss"),
                    **{k: round(v, 3) for k, v in entry.values.items()},
                }
            )
        return gallery, pd.DataFrame(rows)

    # ----------------------------------------------------------------------------- metrics
    def metric_titles(self, source_name: str) -> list[str]:
        """Titles of the metric tables a source holds."""
        from pylon.app.sources import metric_tables

        return list(metric_tables(self._source(source_name)))

    def metrics(self, source_name: str, title: str | None = None):
        """One metric table of a source and its plots copied into the cache.

        Returns:
            ``(titles, title, table, plots)``: every table title, the one shown (the first
            when ``title`` is not one), the table, and ``[(png_path, name), ...]``.
        """
        from pylon.app.sources import metric_plots, metric_tables

        source = self._source(source_name)
        tables = metric_tables(source)
        titles = list(tables)
        if title not in tables:
            title = titles[0] if titles else None
        table = tables[title] if title is not None else pd.DataFrame()
        plots = [
            (str(self.overlays.publish(path)), name) for name, path in metric_plots(source).items()
        ]
        return titles, title, _rounded(table), plots

    def _source(self, name: str):
        for source in self.sources:
            if source.name == name:
                return source
        raise ValueError(f"no source {name!r}; sources: {', '.join(s.name for s in self.sources)}")

    # ----------------------------------------------------------------------------- new image
    def predict_file(self, path, model, threshold=0.5, opacity=0.5, scale="absolute"):
        """Predict an uploaded file with a model of the viewed runs.

        Returns:
            ``(probabilities, gallery, downloads, note)``: class -> probability, the overlays
            of the classes at or above ``threshold`` as ``[(png_path, caption), ...]``, the
            files to download (overlay PNGs and the prediction JSON) and a one-line summary.
        """
        from pylon.app.render import predict_upload

        if model not in self.models:
            raise ValueError(
                f"model {model!r}: expected one of {', '.join(self.models) or 'none (no weights)'}"
            )
        predictor = self.overlays.predictor(self.models[model])
        result = predict_upload(
            path, predictor, float(threshold), self.overlays, opacity=float(opacity), scale=scale
        )
        gallery = [
            (str(p), f"{name} p={result.probabilities[name]:.3f}")
            for name, p in result.overlays.items()
        ]
        downloads = [str(p) for p in result.overlays.values()] + [str(result.json_path)]
        if result.selected:
            note = f"{len(result.selected)} class(es) at or above {float(threshold):g}"
        else:
            note = f"no class at or above {float(threshold):g}: lower the threshold to see maps"
        return result.probabilities, gallery, downloads, note

    # ----------------------------------------------------------------------------- serving
    def build(self):
        """The Gradio Blocks page (built once)."""
        if self.blocks is None:
            self.blocks = build_blocks(self)
        return self.blocks

    def launch(
        self,
        host: str = "127.0.0.1",
        port: int = 7860,
        auth: tuple[str, str] | None = None,
        *,
        quiet: bool = True,
    ) -> str:
        """Start serving (in background threads) and return the page's URL.

        Raises:
            OSError: the port is taken.
        """
        from starlette.middleware import Middleware

        blocks = self.build()
        blocks.queue(default_concurrency_limit=1)
        self.app, url, _ = blocks.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            share=False,
            inbrowser=False,
            prevent_thread_lock=True,
            quiet=quiet,
            show_error=True,
            enable_monitoring=False,
            allowed_paths=[],
            blocked_paths=self.blocked_paths(),
            max_file_size=MAX_UPLOAD,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            run_history=False,
            footer_links=[],
            app_kwargs={"middleware": [Middleware(FileGuard, roots=[self.cache])]},
        )
        self.url = url
        return url

    def wait(self) -> None:
        """Block until interrupted (Ctrl+C)."""
        while True:
            time.sleep(0.5)

    def close(self) -> None:
        """Stop the server; remove the cache folder when the viewer made it."""
        if self.blocks is not None:
            self.blocks.close()
        # a page's background rendering finishes first: no forward pass runs at exit
        if self._prefetching.acquire(timeout=60):
            self._prefetching.release()
        restore_environment(self._environment)
        if self._owns_cache:
            shutil.rmtree(self.cache, ignore_errors=True)


def case_details(case) -> str:
    """Markdown about a case: class, image, probability, hit/miss, peak, boxes, size."""
    hit = "n/a" if case.hit is None else ("hit" if case.hit else "miss")
    peak = "n/a" if case.peak is None else f"x={case.peak[0]}, y={case.peak[1]}"
    boxes = (
        ", ".join("(" + ", ".join(f"{v:g}" for v in box[:4]) + ")" for box in case.boxes) or "none"
    )
    return (
        f"**{case.class_name}** in `{case.image_id}` ({case.run})  \n"
        f"probability **{_fmt(case.probability)}** · **{hit}** · peak {peak} · "
        f"IoBB {_fmt(case.iobb)} · size {case.size_bucket} "
        f"({_fmt(100 * case.box_share, 2)} % of the image)  \n"
        f"boxes (x, y, w, h): {boxes}"
    )


def _rounded(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(4)
    return out


def _errors(fn):
    """Run ``fn``; our user errors become a Gradio error the page shows as a message."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, KeyError, OSError) as err:
            from pylon.messages import message_of

            raise gr.Error(message_of(err)) from None

    return wrapped


def build_blocks(viewer: Viewer):
    """The page: tabs Cases, Side by side, Metrics, New image."""
    gr = require_gradio()

    runs = viewer.runs
    first = viewer.tables[runs[0]] if runs else None
    source_names = [s.name for s in viewer.sources]
    lines = [f"- `{s.name}` ({s.kind}) {viewer.notes.get(s.name, '')}" for s in viewer.sources]

    with gr.Blocks(title="pylon view", analytics_enabled=False) as blocks:
        gr.Markdown("## pylon view\n" + "\n".join(lines))
        current = gr.State(None)  # (run, image_id, class) of the open case

        with gr.Tabs():
            # ------------------------------------------------------------------ cases
            with gr.Tab("Cases", id="cases"):
                with gr.Row():
                    run = gr.Dropdown(runs, value=runs[0] if runs else None, label="run")
                    classes = gr.Dropdown(
                        first.classes if first else [],
                        value=[],
                        multiselect=True,
                        label="classes (none: all)",
                        elem_id="filter-classes",
                    )
                    result = gr.Radio(
                        list(RESULTS), value="all", label="result", elem_id="filter-result"
                    )
                    sort = gr.Radio(SORT_CHOICES, value="confidence", label="sort", elem_id="sort")
                with gr.Row():
                    low = gr.Slider(0, 1, value=0, step=0.01, label="probability from")
                    high = gr.Slider(0, 1, value=1, step=0.01, label="probability to")
                    buckets = gr.CheckboxGroup(
                        first.size_buckets if first else [],
                        value=[],
                        label="lesion size (none: all)",
                        elem_id="filter-size",
                    )
                with gr.Row():
                    with gr.Column(scale=1):
                        count = gr.Markdown(elem_id="case-count")
                        with gr.Row():
                            prev = gr.Button("previous page", size="sm")
                            page_text = gr.Markdown(elem_id="page-text")
                            nxt = gr.Button("next page", size="sm")
                        page = gr.Number(1, precision=0, minimum=1, label="page", visible=False)
                        listing = gr.Dataframe(
                            interactive=False,
                            label="cases (click a row to open it)",
                            elem_id="case-list",
                            max_height=720,
                        )
                    with gr.Column(scale=1):
                        overlay = gr.Image(
                            type="filepath",
                            format="png",
                            interactive=False,
                            label="overlay (boxes green, peak white ring)",
                            elem_id="case-overlay",
                            height=480,
                            buttons=BUTTONS,
                        )
                        scale_text = gr.Markdown(elem_id="case-scale")
                        details = gr.Markdown("Click a case in the list.", elem_id="case-details")
                        with gr.Row():
                            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="opacity")
                            scale = gr.Radio(
                                SCALE_CHOICES,
                                value="image",
                                label="colour scale",
                                elem_id="case-scale-choice",
                            )

            # ------------------------------------------------------------------ side by side
            with gr.Tab("Side by side", id="side") as side_tab:
                side_note = gr.Markdown("Open a case in the Cases tab first.")
                side = gr.Gallery(
                    format="png",
                    columns=4,
                    rows=1,
                    object_fit="contain",
                    label="same case: runs and post-hoc methods",
                    elem_id="side-by-side",
                    buttons=BUTTONS,
                )
                side_table = gr.Dataframe(interactive=False, label="per-panel values")

            # ------------------------------------------------------------------ metrics
            with gr.Tab("Metrics", id="metrics") as metrics_tab:
                with gr.Row():
                    metric_source = gr.Dropdown(
                        source_names, value=source_names[0] if source_names else None,
                        label="source",
                    )  # fmt: skip
                    metric_title = gr.Dropdown([], label="table")
                metric_table = gr.Dataframe(interactive=False, elem_id="metric-table")
                plots = gr.Gallery(
                    format="png", columns=2, label="plots", elem_id="metric-plots", buttons=BUTTONS
                )

            # ------------------------------------------------------------------ new image
            with gr.Tab("New image", id="new"):
                models = list(viewer.models)
                with gr.Row():
                    with gr.Column():
                        model = gr.Dropdown(
                            models, value=models[0] if models else None, label="model"
                        )
                        upload = gr.File(
                            label="PNG, JPEG or DICOM (read as `pylon predict` reads it)",
                            type="filepath",
                            file_count="single",
                            elem_id="upload",
                        )
                        threshold = gr.Slider(
                            0, 1, value=0.5, step=0.01, label="threshold (maps drawn at or above)"
                        )
                        new_opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="opacity")
                        new_scale = gr.Radio(SCALE_CHOICES, value="absolute", label="colour scale")
                    with gr.Column():
                        probabilities = gr.Label(
                            label="probabilities", num_top_classes=None, elem_id="probabilities"
                        )
                        new_note = gr.Markdown(elem_id="new-note")
                        heatmaps = gr.Gallery(
                            format="png",
                            columns=2,
                            label="heatmaps",
                            elem_id="heatmaps",
                            buttons=BUTTONS,
                        )
                        downloads = gr.File(
                            label="download: overlay PNGs and prediction JSON",
                            file_count="multiple",
                            interactive=False,
                            elem_id="downloads",
                        )

        # ---------------------------------------------------------------------- events
        filters = [run, classes, result, low, high, buckets, sort]
        listed = [count, listing, page_text, page]

        @_errors
        def on_run(name):
            table = viewer._table(name)
            return (
                gr.update(choices=table.classes, value=[]),
                gr.update(choices=table.size_buckets, value=[]),
            )

        @_errors
        def on_filter(*values):
            return viewer.list_cases(*values, page=1)

        def on_page(step):
            @_errors
            def go(*values):
                *filters_, number = values
                return viewer.list_cases(*filters_, page=int(number or 1) + step)

            return go

        @_errors
        def open_row(run_name, row, opacity_, scale_):
            if not row:
                raise ValueError("no case at that row")
            image_id, class_name = str(row[0]), str(row[1])
            path, text, scale_words = viewer.open_case(
                run_name, image_id, class_name, opacity_, scale_
            )
            return str(path), text, scale_words, (run_name, image_id, class_name)

        # not wrapped: Gradio finds the event argument by this function's own annotation
        def on_select(run_name, opacity_, scale_, evt: gr.SelectData):
            return open_row(run_name, evt.row_value, opacity_, scale_)

        @_errors
        def on_style(state, opacity_, scale_):
            if state is None:
                return gr.update(), gr.update(), gr.update()
            path, text, scale_words = viewer.open_case(*state, opacity_, scale_)
            return str(path), text, scale_words

        @_errors
        def on_side(state, opacity_, scale_):
            if state is None:
                return "Open a case in the Cases tab first.", [], pd.DataFrame()
            gallery, table = viewer.compare(*state, opacity_, scale_)
            run_name, image_id, class_name = state
            note = f"**{class_name}** in `{image_id}`: {len(table)} panel(s)"
            return note, gr.update(value=gallery, columns=max(1, len(gallery))), table

        @_errors
        def on_metrics(name, title):
            titles, title, table, plot_list = viewer.metrics(name, title)
            return gr.update(choices=titles, value=title), table, plot_list

        @_errors
        def on_upload(path, model_name, threshold_, opacity_, scale_):
            if not path:
                return {}, [], None, ""
            probs, gallery, files, note = viewer.predict_file(
                path, model_name, threshold_, opacity_, scale_
            )
            return probs, gallery, files, note

        private = {"api_visibility": "private"}
        if runs:
            run.change(on_run, run, [classes, buckets], **private).then(
                on_filter, filters, listed, **private
            )
            for component in (classes, result, sort, buckets):
                component.change(on_filter, filters, listed, **private)
            for component in (low, high):
                component.release(on_filter, filters, listed, **private)
            prev.click(on_page(-1), [*filters, page], listed, **private)
            nxt.click(on_page(+1), [*filters, page], listed, **private)
            listing.select(
                on_select, [run, opacity, scale], [overlay, details, scale_text, current],
                **private,
            )  # fmt: skip
            opacity.release(
                on_style, [current, opacity, scale], [overlay, details, scale_text], **private
            )
            scale.change(
                on_style, [current, opacity, scale], [overlay, details, scale_text], **private
            )
            blocks.load(on_filter, filters, listed, **private)
        side_tab.select(
            on_side, [current, opacity, scale], [side_note, side, side_table], **private
        )
        metric_inputs = [metric_source, metric_title]
        metric_outputs = [metric_title, metric_table, plots]
        metrics_tab.select(on_metrics, metric_inputs, metric_outputs, **private)
        metric_source.change(
            lambda name: on_metrics(name, None), metric_source, metric_outputs, **private
        )
        metric_title.input(on_metrics, metric_inputs, metric_outputs, **private)
        new_inputs = [upload, model, threshold, new_opacity, new_scale]
        new_outputs = [probabilities, heatmaps, downloads, new_note]
        upload.change(on_upload, new_inputs, new_outputs, **private)
        for component in (threshold, new_opacity):
            component.release(on_upload, new_inputs, new_outputs, **private)
        for component in (model, new_scale):
            component.change(on_upload, new_inputs, new_outputs, **private)
    return blocks


def make_viewer(paths, **options) -> Viewer:
    """:class:`Viewer` with gradio checked first (one line naming the ``[app]`` extra)."""
    require_gradio()
    return Viewer(paths, **options)
