"""``pylon view``: the local web app over runs, experiments, benchmark and predict outputs."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.console import Console

from pylon.cli.app import app, exit_on_user_error, fail

console = Console()


@app.command("view")
def view_command(
    paths: list[Path] = typer.Argument(
        ...,
        help="Runs, experiment folders of seeds, `pylon benchmark` or `pylon predict` outputs.",
    ),
    port: int = typer.Option(7860, min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to bind: 127.0.0.1 (this machine only). 0.0.0.0 exposes the viewer to the "
        "network: give a login with $PYLON_VIEW_AUTH or --auth-file.",
    ),
    auth_file: Path | None = typer.Option(
        None,
        "--auth-file",
        help="File (mode 600) whose first line is user:password, asked at login (default: "
        "$PYLON_VIEW_AUTH=user:password; credentials never go on the command line).",
    ),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="Folder for rendered overlays, the only files the viewer serves (default: a new "
        "temporary folder, removed at exit). Must not lie inside a viewed folder.",
    ),
    device: str = typer.Option("cpu", help="torch device for rendering and new images."),
) -> None:
    """Browse cases (filters, sorting, overlays), compare runs side by side, read metric tables
    and predict new images in a browser, served on 127.0.0.1 unless --host says otherwise."""
    from pylon.app.security import exposure_warning, read_auth, require_gradio

    try:
        require_gradio(load=False)  # imported later, after the viewer has set its environment
    except ImportError as err:
        raise fail(console, err) from None
    with exit_on_user_error(console, code=2):
        auth = read_auth(auth_file)
    warning = exposure_warning(host, auth is not None)
    if warning:
        console.print(warning, style="bold yellow", soft_wrap=True, highlight=False, markup=False)
    from pylon.app.server import Viewer

    with exit_on_user_error(console, code=2):  # the paths and --cache given
        viewer = Viewer(paths, cache=cache, device=device)
    # SIGTERM (a service manager, a test) stops as Ctrl+C does: the cache folder is removed
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with exit_on_user_error(console):
            url = viewer.launch(host=host, port=port, auth=auth)
        console.print(f"pylon view: serving {url} (Ctrl+C stops)", soft_wrap=True, highlight=False)
        viewer.wait()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
