"""``pylon evaluate RUN``, ``pylon heatmaps RUN`` and ``pylon summarize EXPERIMENTS``: metrics,
heatmap pages and the paper-style table of trained runs."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pylon.cli.app import app, exit_on_user_error, fail

console = Console()


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def _warn_stale(experiment_dir: Path) -> None:
    from pylon.evaluation.evaluate import stale_evaluations

    if experiment_dir.is_dir():
        for line in stale_evaluations(experiment_dir):
            console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


@app.command("evaluate")
def evaluate_command(
    run: Path = typer.Argument(..., help="Run folder, e.g. runs/nih256-pylon/0."),
    devices: str | None = typer.Option(None, help="Lightning devices for evaluation."),
    strategy: str | None = typer.Option(None, help="Lightning strategy, e.g. ddp."),
    progress: bool = typer.Option(
        True, help="Report progress (a bar in a terminal, plain lines in log files)."
    ),
    allow_unfinished: bool = typer.Option(
        False,
        help="Evaluate a run without DONE (intermediate weights) into unfinished_eval_*.csv, "
        "which seed summaries and sweeps never count.",
    ),
) -> None:
    """Evaluate the run's best weights on the test split; write eval_*.csv and seed summaries."""
    from pylon.evaluation.evaluate import evaluate_run, summarize_experiment
    from pylon.training.fit import is_rank_zero_process
    from pylon.training.runs import RunPaths

    with exit_on_user_error(console):
        results = evaluate_run(
            run,
            devices=devices,
            strategy=strategy,
            progress=progress,
            allow_unfinished=allow_unfinished,
        )
    if not is_rank_zero_process():
        return
    if not RunPaths(run).is_done():
        console.print(
            f"{run} is not finished: wrote unfinished_eval_auc.csv and unfinished_eval_loc.csv "
            "(not counted in seed summaries)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    _warn_stale(Path(run).parent)
    summary = summarize_experiment(Path(run).parent)
    for kind, title in (("auc", "AUROC"), ("loc", "Localization")):
        table = Table("metric", "this run", "mean over seeds", "std", "n", title=f"{title}: {run}")
        frame = summary.get(kind)
        stats = {r.metric: r for r in frame.itertuples()} if frame is not None else {}
        for metric, value in results[kind].items():
            if metric.startswith(("iobb", "iou")) and not metric.endswith(("_weighted", "_macro")):
                continue  # per-class IoBB/IoU: see the CSV
            row = stats.get(metric)
            table.add_row(
                metric,
                _fmt(value),
                _fmt(row.mean) if row else "",
                _fmt(row.std) if row else "",
                str(row.n) if row else "",
            )
        console.print(table)


@app.command("heatmaps")
def heatmaps_command(
    run: Path = typer.Argument(..., help="Run folder, e.g. runs/nih256-pylon/0."),
    picked: Path | None = typer.Option(
        None, help="image_id[,class_name] per line, or the reference's picked.csv."
    ),
    all_pairs: bool = typer.Option(False, "--all", help="Every (image, class) pair with boxes."),
    split: str | None = typer.Option(None, help="Split with boxes (default: the run's loc split)."),
    limit: int = typer.Option(50, help="At most this many rows unless --all or --picked."),
    out: Path | None = typer.Option(None, help="Output folder (default RUN/heatmaps/<split>)."),
    style: str = typer.Option(
        "reference",
        help="reference (each map min-max scaled per image, heat + 0.5 x image, as the paper's "
        "figures) or probability (absolute values).",
    ),
    device: str | None = typer.Option(
        None, help="torch device (default: where the run trains, e.g. cuda when available)."
    ),
    progress: bool = typer.Option(
        True, help="Report progress (a bar in a terminal, plain lines in log files)."
    ),
) -> None:
    """Pages (PNG, 10 rows) of original image | heatmap overlay with ground-truth boxes."""
    from pylon.evaluation.heatmaps import write_run_heatmaps
    from pylon.evaluation.overlay import STYLES

    if picked and all_pairs:
        raise typer.BadParameter("give --picked FILE or --all, not both")
    if style not in STYLES:
        raise fail(console, f"--style {style!r}; expected one of {', '.join(STYLES)}", code=2)
    if limit < 1:
        raise fail(console, f"--limit must be >= 1 (or use --all), got {limit}", code=2)
    with exit_on_user_error(console):
        pages = write_run_heatmaps(
            run,
            out,
            split=split,
            picked=picked,
            limit=None if picked or all_pairs else limit,
            style=style,
            device=device,
            progress=progress,
        )
    if not pages:
        console.print("no (image, class) pair with ground-truth boxes: nothing written")
        raise typer.Exit(1)
    console.print(f"{len(pages)} page(s) in {pages[0].parent}")


@app.command("summarize")
def summarize_command(
    experiments: list[Path] = typer.Argument(..., help="Experiment folders, e.g. runs/nih256-*."),
    out: Path | None = typer.Option(None, help="Also write the table to this CSV."),
) -> None:
    """Paper-style table: AUROC macro / weighted and point localization, mean +- std over seeds,
    with the published values beside ours where they are known."""
    from pylon.evaluation.paper import COLUMNS, paper_table
    from pylon.io import write_csv_atomic

    for folder in experiments:
        _warn_stale(folder)
    with exit_on_user_error(console):
        frame = paper_table(experiments)
    table = Table("experiment", "n", *COLUMNS, title="mean +- std over seeds (published)")
    for row in frame.to_dict("records"):
        cells = []
        for metric in COLUMNS:
            cell = f"{_fmt(row[metric + '_mean'])} +- {_fmt(row[metric + '_std'])}"
            if not math.isnan(row[metric + "_published"]):
                cell += f" ({row[metric + '_published']:.3f})"
            cells.append(cell)
        table.add_row(row["experiment"], str(row["n"]), *cells)
    console.print(table)
    if out is not None:
        write_csv_atomic(frame, out)
        console.print(f"wrote {out}")
