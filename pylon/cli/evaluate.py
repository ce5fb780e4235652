"""``pylon evaluate RUN`` and ``pylon heatmaps RUN``: metrics and heatmap pages of a trained run."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pylon.cli.app import app

console = Console()


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


@app.command("evaluate")
def evaluate_command(
    run: Path = typer.Argument(..., help="Run folder, e.g. runs/nih256-pylon/0."),
    devices: str | None = typer.Option(None, help="Lightning devices for evaluation."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Evaluate the run's best weights on the test split; write eval_*.csv and seed summaries."""
    from pylon.training.evaluate import evaluate_run, summarize_experiment

    try:
        results = evaluate_run(run, devices=devices, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    summary = summarize_experiment(Path(run).parent)
    for kind, title in (("auc", "AUROC"), ("loc", "Localization")):
        table = Table("metric", "this run", "mean over seeds", "std", "n", title=f"{title}: {run}")
        frame = summary.get(kind)
        stats = {r.metric: r for r in frame.itertuples()} if frame is not None else {}
        for metric, value in results[kind].items():
            row = stats.get(metric)
            table.add_row(
                metric,
                _fmt(value),
                _fmt(row.mean) if row else "",
                _fmt(row.std) if row else "",
                str(row.n) if row else "",
            )
        console.print(table)
