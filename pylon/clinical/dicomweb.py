"""DICOMweb through dicomweb-client: ``dicomweb://`` locations, credentials from the
environment or a netrc file, QIDO-RS search, WADO-RS retrieval into a folder (atomic, resumable),
STOW-RS storage, and retries with backoff while the server is unreachable or busy.

Locations are written ``dicomweb://HOST:PORT/PATH?study=UID&series=UID`` (plain HTTP) or
``dicomwebs://HOST:PORT/PATH?...`` (HTTPS: TLS, the system's CA certificates or
``$REQUESTS_CA_BUNDLE``); ``PATH`` is the service root (Orthanc: ``/dicom-web``). ``http://`` and
``https://`` URLs are accepted as well. Besides ``study`` and ``series``, any QIDO attribute
filter (``Modality=DX``, ``PatientID=...``) selects the instances to retrieve.

Credentials: ``$PYLON_DICOMWEB_USER`` and ``$PYLON_DICOMWEB_PASSWORD`` (HTTP basic auth), else a
netrc entry for the host (``~/.netrc`` or ``$NETRC``, read by requests). A URL carrying a
password is refused: it would show in shell histories, process lists and logs. Messages never
contain the password.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pylon.clinical import require

log = logging.getLogger(__name__)

SCHEMES = {"dicomweb": "http", "dicomwebs": "https", "http": "http", "https": "https"}
USER_ENV, PASSWORD_ENV = "PYLON_DICOMWEB_USER", "PYLON_DICOMWEB_PASSWORD"
RETRIES_ENV, BACKOFF_ENV = "PYLON_DICOMWEB_RETRIES", "PYLON_DICOMWEB_BACKOFF"
DEFAULT_RETRIES, DEFAULT_BACKOFF, DEFAULT_TIMEOUT = 4, 1.0, 60.0
RETRIED_STATUS = {408, 429, 500, 502, 503, 504}  # a busy or restarting server: try again
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # also keeps a server's answer out of file paths
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\"\])]+)")
_SSL_TEXT = re.compile(r"\[SSL: [A-Z_]+\] ([^('\"]+)")
DICOMWEB_CACHE = "dicomweb"  # pylon predict's folder in --out for the retrieved inputs
# Tags of the QIDO answers (DICOM JSON keys)
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


class DicomwebError(ConnectionError):
    """The DICOMweb server could not be reached, refused the credentials or the request, or did
    not store what was sent; the message names the server and what to do.

    Attributes:
        status: the HTTP status, or None where there was no answer.
        exit_code: 1 on the command line (a machine problem, not a wrong command line).
    """

    exit_code = 1

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def is_dicomweb_url(text: str | os.PathLike) -> bool:
    """Whether ``text`` is a ``dicomweb://`` or ``dicomwebs://`` location (not a file path)."""
    return str(text).lower().startswith(("dicomweb://", "dicomwebs://"))


@dataclass(frozen=True)
class DicomwebLocation:
    """A DICOMweb service and, for inputs, what to take from it.

    Attributes:
        url: the service root as an ``http(s)://`` URL (no credentials).
        study: StudyInstanceUID to retrieve, or None.
        series: SeriesInstanceUID to retrieve (needs ``study``), or None.
        filters: further QIDO attribute filters (keyword: value).
        written: the location as the user wrote it (for messages and records).
    """

    url: str
    study: str | None = None
    series: str | None = None
    filters: dict[str, str] = field(default_factory=dict)
    written: str = ""

    @property
    def host(self) -> str:
        """The server's host name, as a netrc entry names it."""
        return urlsplit(self.url).hostname or ""

    @property
    def selects(self) -> bool:
        """Whether it says which instances to take (a study, series or a filter)."""
        return bool(self.study or self.series or self.filters)

    def __str__(self) -> str:
        return self.written or self.url


def parse_dicomweb_url(
    text: str | os.PathLike, what: str = "DICOMweb location"
) -> DicomwebLocation:
    """Read ``dicomweb[s]://HOST[:PORT]/PATH[?study=UID&series=UID&KEYWORD=VALUE...]``.

    Args:
        text: the location; ``http(s)://`` URLs are accepted too.
        what: how messages name the value (an argument or option).

    Returns:
        The :class:`DicomwebLocation` (``dicomweb`` becomes ``http``, ``dicomwebs`` ``https``).

    Raises:
        ValueError: another scheme, no host, a password in the URL, a malformed UID, ``series``
            without ``study``, or a query key that is neither ``study``, ``series`` nor a DICOM
            keyword.
    """
    from pydicom.datadict import tag_for_keyword

    text = str(text)
    parts = urlsplit(text)
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(
            f"{what} {text!r}: expected dicomweb://HOST:PORT/PATH (dicomwebs:// for HTTPS), "
            "e.g. dicomweb://127.0.0.1:8042/dicom-web?study=1.2.3"
        )
    if parts.password is not None or parts.username is not None:
        raise ValueError(
            f"{what}: credentials in the URL are refused (they would show in process lists and "
            f"logs): set {USER_ENV}/{PASSWORD_ENV} or a netrc entry for {parts.hostname}"
        )
    try:
        parts.port  # noqa: B018  (raises for a port out of range)
    except ValueError:
        raise ValueError(f"{what} {text!r}: the port is not a number from 1 to 65535") from None
    study = series = None
    filters: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("study", "series"):
            if not _UID.match(value) or len(value) > 64:
                raise ValueError(f"{what}: {key}={value!r} is not a DICOM UID (digits and dots)")
            if key == "study":
                study = value
            else:
                series = value
        elif tag_for_keyword(key) is not None:
            filters[key] = value
        else:
            raise ValueError(
                f"{what}: unknown query key {key!r}: expected study=UID, series=UID or a DICOM "
                "keyword as a QIDO filter (e.g. Modality=DX)"
            )
    if series and not study:
        raise ValueError(f"{what}: series={series} needs study=UID as well (WADO-RS retrieves "
                         "series within their study)")  # fmt: skip
    url = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return DicomwebLocation(url, study, series, filters, written=text)


def credentials_session():
    """A requests ``Session`` carrying the credentials: basic auth from
    ``$PYLON_DICOMWEB_USER``/``$PYLON_DICOMWEB_PASSWORD`` where set, else none on the session, so
    that requests takes the host's netrc entry (``~/.netrc`` or ``$NETRC``) per request.

    Raises:
        ValueError: only one of the two variables is set.
    """
    import requests

    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    session = requests.Session()
    if user and password:
        session.auth = (user, password)
    elif user or password:
        missing = PASSWORD_ENV if user else USER_ENV
        raise ValueError(
            f"{missing} is not set: set both {USER_ENV} and {PASSWORD_ENV}, or neither"
        )
    return session


def _credentials_hint(host: str) -> str:
    source = f"{USER_ENV}/{PASSWORD_ENV}" if os.environ.get(USER_ENV) else f"no {USER_ENV} set"
    return f"set {USER_ENV}/{PASSWORD_ENV} or a netrc entry for {host} (used: {source})"


def _reason(err: Exception) -> str:
    """The innermost reason of a requests connection error ("Connection refused")."""
    found = _SSL_TEXT.findall(str(err)) or _ERRNO_TEXT.findall(str(err))
    if found:
        return found[-1].strip()
    if "timed out" in str(err).lower():
        return "timed out"
    return type(err).__name__


def _env_number(name: str, default: float, kind=float):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"${name}={value!r}: expected a number") from None
    if number < 0:
        raise ValueError(f"${name}={value!r}: expected a number >= 0")
    return number


class Dicomweb:
    """A DICOMweb service: QIDO-RS, WADO-RS into a folder, STOW-RS.

    Args:
        location: a :class:`DicomwebLocation` or a location as written.
        retries: further attempts after a failed request (connection refused or reset, timeout,
            HTTP 408/429/5xx); default ``$PYLON_DICOMWEB_RETRIES`` or 4.
        backoff: seconds before the first retry, doubled each time (at most 60 s); default
            ``$PYLON_DICOMWEB_BACKOFF`` or 1.
        timeout: seconds to wait for a connection and for each answer.
        session: a requests ``Session`` (default :func:`credentials_session`).
        on_retry: called as ``on_retry(attempt, wait_seconds, reason)`` before each wait;
            default: a warning on this module's logger.

    Raises:
        ValueError: a malformed location or half-set credentials.
    """

    def __init__(
        self,
        location: DicomwebLocation | str,
        *,
        retries: int | None = None,
        backoff: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        session=None,
        on_retry: Callable[[int, float, str], None] | None = None,
    ):
        web = require("dicomweb_client", "DICOMweb")
        if not isinstance(location, DicomwebLocation):
            location = parse_dicomweb_url(location)
        self.location = location
        self.retries = (
            _env_number(RETRIES_ENV, DEFAULT_RETRIES, int) if retries is None else retries
        )
        self.backoff = _env_number(BACKOFF_ENV, DEFAULT_BACKOFF) if backoff is None else backoff
        self.on_retry = on_retry
        self.client = web.DICOMwebClient(
            url=location.url,
            session=session if session is not None else credentials_session(),
            timeout=timeout,
        )
        self.client.set_http_retry_params(retry=False)  # ours below also covers connections

    def _failure(self, what: str, status: int, err: Exception) -> DicomwebError:
        host, where = self.location.host, self.location.url
        if status == 401:
            text = f"{where} rejected the credentials (401): {_credentials_hint(host)}"
        elif status == 403:
            text = (
                f"{where} refused {what} (403 Forbidden): the user it knows from "
                f"{USER_ENV} or the netrc entry for {host} may not do this"
            )
        elif status == 404:
            text = (
                f"{where}: not found (404) during {what}: check the service root (Orthanc: "
                "/dicom-web) and the study/series UIDs"
            )
        else:
            body = ""
            response = getattr(err, "response", None)
            if response is not None and response.text:
                body = ": " + " ".join(response.text.split())[:200]
            text = f"{where} answered {what} with HTTP {status}{body}"
        return DicomwebError(text, status)

    def _call(self, what: str, function, *args, **kwargs):
        """``function(*args, **kwargs)`` with retries; failures become :class:`DicomwebError`."""
        import requests

        attempt = 0
        while True:
            try:
                return function(*args, **kwargs)
            except requests.exceptions.SSLError as err:
                raise DicomwebError(
                    f"TLS failed with {self.location.url} during {what}: {_reason(err)} (a "
                    "private certificate authority: set REQUESTS_CA_BUNDLE to its certificate)"
                ) from None
            except requests.HTTPError as err:
                status = err.response.status_code if err.response is not None else 0
                if status not in RETRIED_STATUS or attempt >= self.retries:
                    raise self._failure(what, status, err) from None
                reason = f"HTTP {status}"
            except (requests.ConnectionError, requests.Timeout) as err:
                if attempt >= self.retries:
                    raise DicomwebError(
                        f"cannot reach {self.location.url} ({what}): {_reason(err)}; gave up "
                        f"after {attempt + 1} attempt(s)"
                    ) from None
                reason = _reason(err)
            wait = min(self.backoff * 2**attempt, 60.0)
            attempt += 1
            if self.on_retry is not None:
                self.on_retry(attempt, wait, reason)
            else:
                log.warning(
                    "%s: %s during %s; retry %d/%d in %.1f s",
                    self.location.url, reason, what, attempt, self.retries, wait,
                )  # fmt: skip
            time.sleep(wait)

    def check(self) -> None:
        """One small authenticated request (a study search, limit 1): the server answers and
        takes the credentials, before any work is done.

        Raises:
            DicomwebError: unreachable after the retries, 401, 403, 404, ...
        """
        self._call("a check (QIDO-RS)", self.client.search_for_studies, limit=1)

    def search(
        self, *, study: str | None = None, series: str | None = None, **filters: str
    ) -> list:
        """QIDO-RS: the instances matching, all pages.

        Args:
            study: StudyInstanceUID, or None for all studies.
            series: SeriesInstanceUID (with ``study``), or None.
            filters: attribute filters (``Modality="SR"``, ``PatientID=...``).

        Returns:
            pydicom ``Dataset`` objects with the server's instance-level attributes (at least
            the study, series and SOP instance UIDs).
        """
        from pydicom.dataset import Dataset

        found = self._call(
            "a search (QIDO-RS)",
            self.client.search_for_instances,
            study_instance_uid=study,
            series_instance_uid=series,
            search_filters=filters or None,
            get_remaining=True,
        )
        return [Dataset.from_json(item) for item in found]

    def fetch(self, folder: str | os.PathLike) -> list[Path]:
        """WADO-RS: retrieve the instances this location selects into
        ``folder/<study>/<series>/<sop>.dcm``, each written atomically; instances already there
        are not fetched again (a rerun after an interruption resumes).

        Args:
            folder: the cache folder.

        Returns:
            The files, in the server's order.

        Raises:
            ValueError: the location selects nothing (no study, series or filter: it would
                retrieve the whole archive).
            DicomwebError: the server failed, or matched no instance.
        """
        from pydicom import dcmwrite

        from pylon.io import atomic_path

        where = self.location
        if not where.selects:
            raise ValueError(
                f"{where}: say what to retrieve: ?study=UID[&series=UID] or a QIDO filter such "
                "as ?PatientID=ID (not the whole archive)"
            )
        found = self.search(study=where.study, series=where.series, **where.filters)
        if not found:
            raise DicomwebError(f"{where}: no instance matches on {where.url}")
        paths = []
        for item in found:
            uids = [str(item.get(key, "")) for key in ("StudyInstanceUID", "SeriesInstanceUID",
                                                        "SOPInstanceUID")]  # fmt: skip
            if not all(_UID.match(uid) for uid in uids):
                raise DicomwebError(f"{where.url}: the search answered an invalid UID in {uids}")
            study, series, sop = uids
            path = Path(folder) / study / series / f"{sop}.dcm"
            if not path.is_file():
                ds = self._call(
                    f"the retrieval (WADO-RS) of {sop}",
                    self.client.retrieve_instance,
                    study,
                    series,
                    sop,
                    media_types=(("application/dicom", "*"),),  # as stored: no transcoding
                )
                with atomic_path(path) as tmp:
                    dcmwrite(tmp, ds, enforce_file_format=True)
            paths.append(path)
        return paths

    def store(self, datasets: Sequence) -> list[str]:
        """STOW-RS: store ``datasets`` (retried like every request; storing an instance again
        is harmless).

        Args:
            datasets: pydicom datasets with file meta (e.g. highdicom SR/SC/SEG objects).

        Returns:
            The SOP Instance UIDs the server confirmed, in order.

        Raises:
            DicomwebError: the server refused one or more (their UIDs and reasons named) or
                failed.
        """
        if not datasets:
            return []
        answer = self._call("storing (STOW-RS)", self.client.store_instances, list(datasets))
        failed = [
            f"{item.get('ReferencedSOPInstanceUID', '?')} (reason {item.get('FailureReason', '?')})"
            for item in answer.get("FailedSOPSequence", [])
        ]
        stored = {str(item.ReferencedSOPInstanceUID)
                  for item in answer.get("ReferencedSOPSequence", [])}  # fmt: skip
        missing = [
            str(ds.SOPInstanceUID) for ds in datasets if str(ds.SOPInstanceUID) not in stored
        ]
        if failed or missing:
            raise DicomwebError(
                f"{self.location.url} did not store {len(missing)} of {len(datasets)} object(s)"
                + (f": failed {', '.join(failed)}" if failed else f": {', '.join(missing)}")
            )
        return [str(ds.SOPInstanceUID) for ds in datasets]


def input_location(text: str | os.PathLike) -> DicomwebLocation:
    """An input location: :func:`parse_dicomweb_url` that also refuses one selecting nothing.

    Raises:
        ValueError: malformed, or no study, series or filter (it would retrieve the archive).
    """
    where = parse_dicomweb_url(text, what="input")
    if not where.selects:
        raise ValueError(
            f"input {where}: say what to retrieve: ?study=UID[&series=UID] or a QIDO filter "
            "such as ?PatientID=ID (not the whole archive)"
        )
    return where


def fetch_inputs(
    inputs: Sequence[str | os.PathLike], cache: str | os.PathLike, **client
) -> list[Path]:
    """``pylon predict``'s inputs with each ``dicomweb[s]://`` location replaced by the files
    it selects, retrieved into ``cache/<study>/<series>/<sop>.dcm`` (:meth:`Dicomweb.fetch`:
    atomic, what is already there is not fetched again); other inputs are kept as paths.

    Args:
        inputs: files, folders and locations, in the command's order.
        cache: the folder retrieved files go into (``pylon predict``: ``OUT/dicomweb``).
        client: options of :class:`Dicomweb` (``retries``, ``backoff``, ``timeout``).

    Returns:
        The paths, in order.

    Raises:
        ValueError: a malformed location, or one that selects nothing.
        DicomwebError: a server that fails (after the retries), refuses the credentials or
            matches no instance.
    """
    paths: list[Path] = []
    for item in inputs:
        if is_dicomweb_url(item):
            paths += Dicomweb(input_location(item), **client).fetch(cache)
        else:
            paths.append(Path(item))
    return paths


class DicomwebSink:
    """A :class:`pylon.clinical.sink.DicomSink` that stores each image's objects on a DICOMweb
    server with STOW-RS (``pylon predict --dicom-out dicomweb://...``).

    Each image's objects go in one request, retried like every request; the records name the
    server (``url``) instead of a file. A run killed between storing an image's objects and
    appending its record stores them again when it resumes (new SOP instance UIDs: the server
    then holds both; the records list the ones of the final run).

    Args:
        location: the service (``dicomweb[s]://HOST:PORT/PATH``, no study or filter).
        check: make one request now (:meth:`Dicomweb.check`), so that bad credentials or an
            unreachable server stop the command before any prediction.
        client: options of :class:`Dicomweb` (``retries``, ``backoff``, ``timeout``).

    Raises:
        ValueError: a malformed location, or one that selects a study/series (``--dicom-out``).
        DicomwebError: ``check`` failed.
    """

    def __init__(self, location: DicomwebLocation | str, *, check: bool = True, **client):
        if not isinstance(location, DicomwebLocation):
            location = parse_dicomweb_url(location, what="--dicom-out")
        if location.selects:
            raise ValueError(
                f"--dicom-out {location}: a destination takes no study, series or filter (the "
                "objects go into their source's study)"
            )
        self.location = location
        self.web = Dicomweb(location, **client)
        if check:
            self.web.check()

    @property
    def setting(self) -> str:
        return self.location.url

    @property
    def local_folders(self) -> list[Path]:
        return []

    def write(self, objects: Sequence, stem: str) -> list[dict]:
        """STOW-RS the objects of one image (``stem`` is not used: the server files them by
        their UIDs).

        Returns:
            One record per object: ``kind``, ``class``, ``url``, ``sop_class_uid``,
            ``sop_instance_uid``, ``series_instance_uid``, ``study_instance_uid``.
        """
        self.web.store([obj.dataset for obj in objects])
        return [
            {
                "kind": obj.kind,
                "class": obj.class_name,
                "url": self.location.url,
                "sop_class_uid": str(obj.dataset.SOPClassUID),
                "sop_instance_uid": str(obj.dataset.SOPInstanceUID),
                "series_instance_uid": str(obj.dataset.SeriesInstanceUID),
                "study_instance_uid": str(obj.dataset.StudyInstanceUID),
            }
            for obj in objects
        ]

    def discard(self, stem: str) -> None:
        """Nothing to do: objects on the server are not removed (see the class notes)."""
