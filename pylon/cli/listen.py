"""``pylon listen``: a DICOM storage node that predicts the radiographs it receives and sends the
findings (SR, SC) to a PACS."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

from pylon.cli.app import app, exit_on_user_error

console = Console(stderr=True)


def _check_ae_title(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > 16 or "\\" in value or not value.isprintable():
        raise ValueError(f"{what} {value!r}: expected an AE title of 1 to 16 printable characters")
    return value


@app.command("listen")
def listen_command(
    weights: Path = typer.Argument(..., help="Trained weights (.safetensors from pylon train)."),
    send_to: str = typer.Option(
        ..., "--send-to", help="Where the results go: AET@HOST:PORT (e.g. ORTHANC@pacs:4242)."
    ),
    ae_title: str = typer.Option("PYLON", "--ae-title", help="This node's AE title."),
    port: int = typer.Option(11112, "--port", min=1, max=65535, help="DICOM port to listen on."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on (default this machine only; 0.0.0.0: every interface).",
    ),
    calling_aets: str | None = typer.Option(
        None,
        "--calling-aets",
        help="Comma-separated AE titles allowed to send (default: any); others are rejected.",
    ),
    spool: Path = typer.Option(
        Path("pylon-spool"),
        "--spool",
        help="Folder where received images and unsent results wait (journal.jsonl in it); a "
        "restart processes what it holds.",
    ),
    threshold: float = typer.Option(
        0.5, min=0.0, max=1.0, help="Report findings at or above this probability."
    ),
    dicom_objects: str = typer.Option(
        "sr,sc",
        "--dicom-objects",
        help="Results to send, comma-separated: sr (structured report), sc (secondary capture "
        "overlay per finding), seg (fractional segmentation), pmap (parametric map; sources "
        "with a frame of reference only).",
    ),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    batch_wait: float = typer.Option(
        1.0,
        "--batch-wait",
        min=0.0,
        help="Seconds a batch waits for more images after its first (a full batch starts at once).",
    ),
    retry_max_wait: float = typer.Option(
        60.0,
        "--retry-max-wait",
        min=0.1,
        help="Longest wait in seconds between sends to a destination that is down (the wait "
        "starts at 1 s and doubles).",
    ),
    voi: str = typer.Option(
        "window", "--voi", help="How images are read: window (the radiology reading) or minmax."
    ),
    precision: str = typer.Option(
        "auto", help="auto (bf16 on capable CPUs, fp16 on GPU), fp32, bf16 or fp16."
    ),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Listen for radiographs (CR, DX, digital mammography, secondary capture) sent with
    C-STORE, predict them in batches and C-STORE the findings to --send-to.

    Each image is written to --spool before its C-STORE is acknowledged, and each image's
    results stay in the spool until the destination stored them: a destination that is down is
    retried (waits doubling up to --retry-max-wait), and a restart after a crash, a kill or
    SIGTERM predicts and sends what is left, sending nothing twice. Every outcome is a log line
    on stderr and a record in SPOOL/journal.jsonl. SIGTERM or Ctrl-C: stop accepting, finish
    the batch being predicted, exit 0.
    """
    from pylon.clinical import require
    from pylon.clinical.dimse import parse_peer
    from pylon.clinical.journal import configure_logging
    from pylon.clinical.objects import KINDS
    from pylon.data.dicom import check_voi
    from pylon.inference.inputs import PREDICT_VOI
    from pylon.inference.predictor import parse_device
    from pylon.models.precision import normalize_precision, resolve_execution

    with exit_on_user_error(console, code=2):  # the command line's own values
        ae_title = _check_ae_title(ae_title, "--ae-title")
        allowed = [
            _check_ae_title(a, "--calling-aets") for a in (calling_aets or "").split(",") if a
        ]
        parse_peer(send_to, "--send-to")
        kinds = tuple(k.strip().lower() for k in dicom_objects.split(",") if k.strip())
        if not kinds or any(k not in KINDS for k in kinds):
            raise ValueError(
                f"--dicom-objects {dicom_objects!r}: expected a comma-separated choice of "
                + ", ".join(KINDS)
            )
        check_voi(voi, PREDICT_VOI, what="--voi")
        normalize_precision(precision, field="--precision")
        resolve_execution(precision, parse_device(device))
    with exit_on_user_error(console):
        require("pynetdicom", "pylon listen")
        require("highdicom", "pylon listen")
    configure_logging()

    from pylon.clinical.node import NodeSettings, StorageNode
    from pylon.clinical.spool import Spool
    from pylon.inference import Predictor
    from pylon.locks import folder_lock

    settings = NodeSettings(
        ae_title=ae_title,
        host=host,
        port=port,
        send_to=send_to,
        calling_aets=allowed,
        kinds=kinds,
        threshold=threshold,
        batch_size=batch_size,
        batch_wait=batch_wait,
        retry_max_wait=retry_max_wait,
    )
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    with exit_on_user_error(console), folder_lock(spool, "pylon listen"):
        predictor = Predictor(
            weights,
            device=device,
            batch_size=batch_size,
            threshold=threshold,
            precision=precision,
            voi=voi,
        )
        node = StorageNode(predictor, Spool(spool), settings)
        try:
            node.start()
        except OSError as err:
            node.stop()
            raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        try:
            while not stop.wait(0.5):
                pass
        finally:
            node.stop()
