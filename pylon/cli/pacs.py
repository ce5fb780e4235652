"""``pylon pacs echo|find``: check a DICOM connection (C-ECHO) and look up studies or series
(C-FIND) on a PACS, with a clear line for a refused association, an unreachable host or a
timeout."""

from __future__ import annotations

import typer
from rich.console import Console

from pylon.cli.app import app, exit_on_user_error

pacs_app = typer.Typer(
    help="Check a DICOM peer: C-ECHO, and C-FIND by patient or study (AET@HOST:PORT).",
    no_args_is_help=True,
)
app.add_typer(pacs_app, name="pacs")

_PEER_HELP = "The peer as AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242."
_CALLING_HELP = "Our AE title (the calling AE title the peer must know)."
# the columns of pylon pacs find's lines
STUDY_COLUMNS = (
    "StudyInstanceUID",
    "StudyDate",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "StudyDescription",
)
SERIES_COLUMNS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "SeriesDescription",
)
_TIMEOUT_HELP = "Seconds to wait for the connection, the association and each answer."


@pacs_app.command("echo")
def pacs_echo_command(
    peer: str = typer.Argument(..., help=_PEER_HELP),
    calling_aet: str = typer.Option("PYLON", "--calling-aet", help=_CALLING_HELP),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help=_TIMEOUT_HELP),
) -> None:
    """C-ECHO the peer: exit 0 and the round trip if it answers, else one line saying why."""
    from pylon.clinical.dimse import echo, parse_peer

    console = Console()
    with exit_on_user_error(console, code=2):
        target = parse_peer(peer, what="peer")
    with exit_on_user_error(console):
        seconds = echo(target, calling_aet=calling_aet, timeout=timeout)
    console.print(
        f"{target} answered C-ECHO from {calling_aet} in {seconds * 1000:.0f} ms",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


def _value(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


@pacs_app.command("find")
def pacs_find_command(
    peer: str = typer.Argument(..., help=_PEER_HELP),
    patient: str | None = typer.Option(None, "--patient", help="List this PatientID's studies."),
    study: str | None = typer.Option(None, "--study", help="List this StudyInstanceUID's series."),
    calling_aet: str = typer.Option("PYLON", "--calling-aet", help=_CALLING_HELP),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help=_TIMEOUT_HELP),
) -> None:
    """C-FIND (Study Root): one tab-separated line per study of --patient (study UID, date,
    modalities, series, instances, description) or per series of --study (series UID, modality,
    number, instances, description), then a count."""
    from pylon.clinical.dimse import find, parse_peer

    console = Console()
    with exit_on_user_error(console, code=2):
        target = parse_peer(peer, what="peer")
        if (patient is None) == (study is None):
            raise ValueError("give exactly one of --patient ID and --study UID")
    with exit_on_user_error(console):
        matches = find(
            target, patient_id=patient, study_uid=study, calling_aet=calling_aet, timeout=timeout
        )
    if patient is not None:
        keys = STUDY_COLUMNS
        what = f"study(ies) of patient {patient}"
    else:
        keys = SERIES_COLUMNS
        what = f"series of study {study}"
    for ds in matches:
        typer.echo("\t".join(_value(ds, key) for key in keys))  # rich would expand the tabs
    console.print(
        f"{len(matches)} {what} on {target}", soft_wrap=True, markup=False, highlight=False
    )
