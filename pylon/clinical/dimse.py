"""DICOM network (DIMSE) client helpers through pynetdicom: one association helper that turns
every way of failing into one clear line, C-ECHO and C-FIND for checking a connection, and
C-STORE with retries for sending results to a PACS.

A peer is written ``AET@HOST:PORT`` (``ORTHANC@127.0.0.1:4242``), as on ``pylon pacs`` and
``pylon listen --send-to``. Errors are :class:`PeerError` (an ``OSError``, so the command line
prints it as ``error: ...`` and exits 1); a peer that refuses a stored object gives
:class:`StoreRefused` (not retried: sending it again would be refused again).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pylon.clinical import require

log = logging.getLogger(__name__)

DEFAULT_CALLING_AET = "PYLON"
DEFAULT_TIMEOUT = 30.0  # seconds for the connection, the association and each DIMSE answer
# C-STORE statuses that mean "stored" (0x0000) or "stored, with a warning" (PS3.4 B.2.3)
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
_PEER = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@\[\]]+):(?P<port>\d{1,5})$")


class PeerError(ConnectionError):
    """A DICOM peer could not be reached, refused the association, did not answer in time or
    aborted; the message names the peer and what happened (exit 1 on the command line)."""

    exit_code = 1


class ContextsRefused(PeerError):
    """The peer accepted the association but none of the SOP classes asked for (or not one
    needed): asking again would give the same answer."""


class StoreRefused(PeerError):
    """The peer answered a C-STORE with a failure status, or does not take the object's SOP
    class: not worth retrying.

    Attributes:
        status: the DIMSE status (e.g. ``0xA900``); None for a SOP class refused in the
            association negotiation.
        sop_instance_uid: the refused object's SOP Instance UID.
    """

    def __init__(self, message: str, status: int | None, sop_instance_uid: str):
        super().__init__(message)
        self.status = status
        self.sop_instance_uid = sop_instance_uid


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity on the network.

    Attributes:
        ae_title: its AE title (called AE title of our requests).
        host: host name or IP address.
        port: its DICOM port.
    """

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str | Peer, what: str = "peer") -> Peer:
    """Read ``AET@HOST:PORT`` (an IPv6 host in brackets: ``AET@[::1]:104``).

    Args:
        text: the peer as written, or a :class:`Peer` (returned as is).
        what: how the message names the value (an option, e.g. ``"--send-to"``).

    Returns:
        The :class:`Peer`.

    Raises:
        ValueError: not of that form, an AE title longer than 16 characters or a port out of
            range.
    """
    if isinstance(text, Peer):
        return text
    match = _PEER.match(text.strip())
    port = int(match["port"]) if match else 0
    if not match or not 1 <= port <= 65535 or not match["aet"].strip():
        raise ValueError(
            f"{what} {text!r}: expected AET@HOST:PORT (an AE title of at most 16 characters, "
            "e.g. ORTHANC@127.0.0.1:4242)"
        )
    return Peer(match["aet"].strip(), match["host"].strip("[]"), port)


def _application_entity(calling_aet: str, timeout: float):
    pynetdicom = require("pynetdicom", "DICOM networking")
    ae = pynetdicom.AE(ae_title=calling_aet)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    return ae


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return uid if name == uid else f"{name} ({uid})"


def _why_not_established(assoc, peer: Peer, calling_aet: str, timeout: float) -> str:
    """What went wrong with an association that was not established, in words."""
    answer = getattr(assoc.acceptor, "primitive", None)
    if answer is not None and answer.result == 0x00 and not assoc.accepted_contexts:
        refused = sorted({_sop_class_name(cx.abstract_syntax) for cx in assoc.rejected_contexts})
        raise ContextsRefused(
            f"{peer} accepts none of the SOP classes asked for: {', '.join(refused)}"
        )
    if assoc.is_rejected:
        reason = ""
        if answer is not None:
            reason = f": {answer.reason_str} ({answer.result_str}, source: {answer.source_str})"
        hint = (
            f"; check that it knows the calling AE title {calling_aet!r} and that "
            f"{peer.ae_title!r} is its AE title"
        )
        return f"{peer} rejected the association{reason}{hint}"
    try:  # was the TCP connection itself the problem?
        with socket.create_connection((peer.host, peer.port), timeout=min(timeout, 10.0)):
            pass
    except OSError as err:
        text = err.strerror or str(err) or type(err).__name__
        return f"cannot connect to {peer} ({peer.host} port {peer.port}): {text}"
    return (
        f"{peer} did not accept the association within {timeout:g} s (no answer, or it aborted): "
        "is it a DICOM port?"
    )


@contextlib.contextmanager
def associate(
    peer: str | Peer,
    contexts: Sequence[tuple[str, Sequence[str] | None]],
    *,
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator:
    """An established association with ``peer``, released at the end of the block (aborted if
    the block raises).

    Args:
        peer: ``AET@HOST:PORT`` or a :class:`Peer`.
        contexts: presentation contexts to request: (abstract syntax UID, transfer syntax UIDs
            or None for pynetdicom's defaults).
        calling_aet: our AE title.
        timeout: seconds for the TCP connection, the association answer and each DIMSE
            message.

    Yields:
        The pynetdicom ``Association``.

    Raises:
        ContextsRefused: the peer accepted none of ``contexts``.
        PeerError: not reachable, rejected, no answer in time, or aborted.
    """
    peer = parse_peer(peer)
    ae = _application_entity(calling_aet, timeout)
    for abstract, transfer in contexts:
        if transfer:
            ae.add_requested_context(abstract, list(transfer))
        else:
            ae.add_requested_context(abstract)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        raise PeerError(_why_not_established(assoc, peer, calling_aet, timeout))
    try:
        yield assoc
    except BaseException:
        assoc.abort()
        raise
    else:
        assoc.release()


def _check_alive(assoc, peer: Peer, what: str) -> None:
    if not assoc.is_established:
        raise PeerError(f"{peer} ended the association during {what} (aborted or timed out)")


def echo(
    peer: str | Peer, *, calling_aet: str = DEFAULT_CALLING_AET, timeout: float = DEFAULT_TIMEOUT
) -> float:
    """C-ECHO ``peer``: the DICOM "ping".

    Returns:
        The round trip in seconds (association, echo and release).

    Raises:
        PeerError: unreachable, rejected, timed out, or a non-success echo status.
    """
    from pynetdicom.sop_class import Verification

    peer = parse_peer(peer)
    start = time.perf_counter()
    with associate(peer, [(Verification, None)], calling_aet=calling_aet, timeout=timeout) as a:
        status = a.send_c_echo()
        _check_alive(a, peer, "C-ECHO")
        if not status or status.Status != 0x0000:
            code = f"0x{status.Status:04X}" if status else "none"
            raise PeerError(f"{peer} answered C-ECHO with status {code}")
    return time.perf_counter() - start


# Return keys of a study-level and a series-level C-FIND (empty: "send me this attribute")
STUDY_KEYS = (
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "StudyDate",
    "StudyDescription",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)


def find(
    peer: str | Peer,
    *,
    patient_id: str | None = None,
    study_uid: str | None = None,
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = DEFAULT_TIMEOUT,
) -> list:
    """C-FIND in the Study Root model: the studies of a patient, or the series of a study.

    Args:
        peer: ``AET@HOST:PORT`` or a :class:`Peer`.
        patient_id: list this patient's studies (keys :data:`STUDY_KEYS`).
        study_uid: list this study's series (keys :data:`SERIES_KEYS`); exactly one of the two.
        calling_aet: our AE title.
        timeout: seconds, as for :func:`associate`.

    Returns:
        The matches, pydicom ``Dataset`` objects, in the peer's order.

    Raises:
        ValueError: neither or both of ``patient_id`` and ``study_uid``.
        PeerError: unreachable, rejected, timed out, or a failure status (named).
    """
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyRootFind

    if (patient_id is None) == (study_uid is None):
        raise ValueError("find: give exactly one of a patient ID and a study UID")
    peer = parse_peer(peer)
    query = Dataset()
    if patient_id is not None:
        query.QueryRetrieveLevel = "STUDY"
        for key in STUDY_KEYS:
            setattr(query, key, "")
        query.PatientID = patient_id
    else:
        query.QueryRetrieveLevel = "SERIES"
        for key in SERIES_KEYS:
            setattr(query, key, "")
        query.StudyInstanceUID = study_uid
    matches = []
    with associate(peer, [(StudyRootFind, None)], calling_aet=calling_aet, timeout=timeout) as a:
        for status, identifier in a.send_c_find(query, StudyRootFind):
            _check_alive(a, peer, "C-FIND")
            if not status:
                raise PeerError(f"{peer} did not answer the C-FIND within {timeout:g} s")
            if status.Status in (0xFF00, 0xFF01):  # pending: one match
                if identifier is not None:
                    matches.append(identifier)
            elif status.Status != 0x0000:
                comment = getattr(status, "ErrorComment", "")
                raise PeerError(
                    f"{peer} answered C-FIND with status 0x{status.Status:04X}"
                    + (f": {comment}" if comment else "")
                )
    return matches


@dataclass(frozen=True)
class Sent:
    """One object stored on the peer.

    Attributes:
        sop_instance_uid: the object's SOP Instance UID.
        sop_class_uid: its SOP Class UID.
        status: the C-STORE status (0x0000, or a warning such as 0xB000).
    """

    sop_instance_uid: str
    sop_class_uid: str
    status: int


def _store_contexts(datasets: Sequence) -> list[tuple[str, list[str]]]:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    wanted: dict[str, list[str]] = {}
    for ds in datasets:
        syntaxes = wanted.setdefault(str(ds.SOPClassUID), [])
        meta = getattr(ds, "file_meta", None)
        syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
        for uid in (syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if uid is not None and str(uid) not in syntaxes:
                syntaxes.append(str(uid))
    if len(wanted) > 128:
        raise ValueError(f"{len(wanted)} SOP classes in one send: at most 128 per association")
    return list(wanted.items())


def send_datasets(
    datasets: Sequence,
    destination: str | Peer,
    *,
    calling_aet: str = DEFAULT_CALLING_AET,
    retries: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    timeout: float = DEFAULT_TIMEOUT,
    on_retry: Callable[[int, float, PeerError], None] | None = None,
) -> list[Sent]:
    """C-STORE ``datasets`` to ``destination``, retrying with exponential backoff while it is
    unreachable, busy or drops the association; objects stored before a failure are not sent
    again.

    Args:
        datasets: pydicom datasets (e.g. highdicom SR/SC/SEG objects), sent in order.
        destination: ``AET@HOST:PORT`` or a :class:`Peer`.
        calling_aet: our AE title (the destination may only accept the ones it knows).
        retries: further attempts after the first failed one (0: no retry).
        backoff: seconds before the first retry; doubled each time, at most ``max_backoff``.
        max_backoff: the longest wait between attempts.
        timeout: seconds, as for :func:`associate`.
        on_retry: called as ``on_retry(attempt, wait_seconds, error)`` before each wait (for a
            log line); default: a warning on this module's logger.

    Returns:
        One :class:`Sent` per dataset, in order.

    Raises:
        StoreRefused: the destination answered a failure status or does not take a SOP class
            (not retried; the earlier objects are stored).
        PeerError: still failing after the retries (the message says how many were stored).
        ValueError: a dataset without SOPClassUID/SOPInstanceUID, or too many SOP classes.
    """
    destination = parse_peer(destination)
    for index, ds in enumerate(datasets):
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise ValueError(f"dataset {index}: no SOPClassUID/SOPInstanceUID, cannot be stored")
    contexts = _store_contexts(datasets)
    sent: list[Sent] = []
    attempt = 0
    while len(sent) < len(datasets):
        try:
            with associate(
                destination, contexts, calling_aet=calling_aet, timeout=timeout
            ) as assoc:
                accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
                for ds in datasets[len(sent) :]:
                    uid = str(ds.SOPInstanceUID)
                    if str(ds.SOPClassUID) not in accepted:
                        raise StoreRefused(
                            f"{destination} does not accept the SOP class "
                            f"{_sop_class_name(str(ds.SOPClassUID))} of {uid}",
                            None,
                            uid,
                        )
                    status = assoc.send_c_store(ds)
                    if not status:  # no answer: timed out or aborted, maybe not stored
                        raise PeerError(f"{destination} did not answer the C-STORE of {uid}")
                    if status.Status not in STORED:
                        comment = getattr(status, "ErrorComment", "")
                        raise StoreRefused(
                            f"{destination} refused to store {uid} (SOP class "
                            f"{ds.SOPClassUID}): status 0x{status.Status:04X}"
                            + (f" {comment}" if comment else ""),
                            status.Status,
                            uid,
                        )
                    sent.append(Sent(uid, str(ds.SOPClassUID), status.Status))
                    attempt = 0  # progress: the next failure starts a fresh backoff
        except StoreRefused:
            raise
        except ContextsRefused as err:
            uid = str(datasets[len(sent)].SOPInstanceUID)
            raise StoreRefused(f"{err} (storing {uid})", None, uid) from None
        except PeerError as err:
            if attempt >= retries:
                raise PeerError(
                    f"{err} (gave up after {attempt + 1} attempt(s); {len(sent)} of "
                    f"{len(datasets)} object(s) stored)"
                ) from None
            wait = min(backoff * 2**attempt, max_backoff)
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, wait, err)
            else:
                log.warning("%s; retry %d/%d in %.1f s", err, attempt, retries, wait)
            time.sleep(wait)
    return sent
