"""pylon.clinical.dicomweb against a real Orthanc: locations, credentials (env, netrc, refused),
WADO-RS retrieval by study and series into a folder, STOW-RS then QIDO-RS, retries while the
server is down, clear errors for 401/404/unreachable, and the password never in a message or log."""

import json
import logging
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
from brightness_model import brightness_weights
from dicom_files import write_dx
from orthanc import free_port, orthanc  # noqa: F401
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.clinical.codes import finding_code
from pylon.clinical.dicomweb import (
    Dicomweb,
    DicomwebError,
    credentials_session,
    is_dicomweb_url,
    parse_dicomweb_url,
)
from pylon.inference import Predictor


def location(server, **query):
    """``dicomweb://`` for the test server, with ``query`` (study=..., series=...)."""
    text = server.dicomweb_url.replace("http://", "dicomweb://")
    if query:
        text += "?" + "&".join(f"{key}={value}" for key, value in query.items())
    return text


@pytest.fixture
def credentials(orthanc, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PYLON_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("PYLON_DICOMWEB_PASSWORD", orthanc.password)
    monkeypatch.delenv("NETRC", raising=False)


@pytest.fixture
def study(orthanc, tmp_path):  # noqa: F811
    """Three DX images uploaded: two in one series, one in another series of the same study;
    and one image of another study. Returns {name: path}."""
    rng = np.random.default_rng(0)
    study_uid, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    files = {}
    for name, series, number in (("a1", series_a, 1), ("a2", series_a, 2), ("b1", series_b, 1)):
        files[name] = write_dx(
            tmp_path / f"{name}.dcm",
            rng.integers(0, 4096, (48, 40)),
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series,
            InstanceNumber=number,
        )
    files["other"] = write_dx(tmp_path / "other.dcm", rng.integers(0, 4096, (32, 32)))
    for path in files.values():
        orthanc.upload(path)
    return files


def test_locations_map_to_http_and_https_and_refuse_passwords():
    plain = parse_dicomweb_url(
        "dicomweb://pacs.example.org:8042/dicom-web?study=1.2.3&series=1.2.4"
    )
    assert (plain.url, plain.study, plain.series, plain.host) == (
        "http://pacs.example.org:8042/dicom-web", "1.2.3", "1.2.4", "pacs.example.org"
    )  # fmt: skip
    tls = parse_dicomweb_url("dicomwebs://pacs.example.org/wado/rs/?Modality=DX&PatientID=P1")
    assert tls.url == "https://pacs.example.org/wado/rs"
    assert tls.filters == {"Modality": "DX", "PatientID": "P1"} and tls.study is None
    assert parse_dicomweb_url("https://h/dicom-web").url == "https://h/dicom-web"
    assert is_dicomweb_url("dicomwebs://h/x") and not is_dicomweb_url("images/dicomweb.dcm")
    with pytest.raises(ValueError, match="credentials in the URL are refused"):
        parse_dicomweb_url("dicomweb://user:hunter2@h:8042/dicom-web")
    with pytest.raises(ValueError, match="needs study=UID"):
        parse_dicomweb_url("dicomweb://h/dicom-web?series=1.2")
    with pytest.raises(ValueError, match="not a DICOM UID"):
        parse_dicomweb_url("dicomweb://h/dicom-web?study=../../etc")
    with pytest.raises(ValueError, match="unknown query key 'studdy'"):
        parse_dicomweb_url("dicomweb://h/dicom-web?studdy=1.2")
    with pytest.raises(ValueError, match="expected dicomweb://HOST:PORT/PATH"):
        parse_dicomweb_url("ftp://h/dicom-web")


def test_fetch_by_study_and_by_series_gives_the_stored_files(orthanc, study, credentials, tmp_path):  # noqa: F811
    source = {name: pydicom.dcmread(path) for name, path in study.items()}
    a1 = source["a1"]
    cache = tmp_path / "cache"
    files = Dicomweb(location(orthanc, study=a1.StudyInstanceUID)).fetch(cache)
    assert len(files) == 3
    by_sop = {pydicom.dcmread(f).SOPInstanceUID: f for f in files}
    for name in ("a1", "a2", "b1"):
        ds = source[name]
        path = by_sop[ds.SOPInstanceUID]
        assert (
            path == cache / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        )
        assert path.read_bytes() == study[name].read_bytes()  # as stored, not transcoded
    # one series of the study; a rerun fetches nothing again (the files are not rewritten)
    before = {f: f.stat().st_mtime_ns for f in files}
    series = Dicomweb(
        location(orthanc, study=a1.StudyInstanceUID, series=a1.SeriesInstanceUID)
    ).fetch(cache)
    assert sorted(series) == sorted(by_sop[source[n].SOPInstanceUID] for n in ("a1", "a2"))
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert not list(cache.rglob(".*.tmp"))


def test_stow_then_qido_finds_what_was_stored(orthanc, study, credentials):  # noqa: F811
    a1 = pydicom.dcmread(study["a1"])
    new_series = generate_uid()
    copies = []
    for number in (1, 2):
        ds = pydicom.dcmread(study["a1"])
        ds.SeriesInstanceUID, ds.SOPInstanceUID = new_series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Modality, ds.SOPClassUID = "CR", pydicom.uid.ComputedRadiographyImageStorage
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.InstanceNumber = number
        copies.append(ds)
    web = Dicomweb(location(orthanc))
    assert web.store(copies) == [ds.SOPInstanceUID for ds in copies]
    found = web.search(study=a1.StudyInstanceUID, series=new_series)
    assert sorted(ds.SOPInstanceUID for ds in found) == sorted(ds.SOPInstanceUID for ds in copies)
    # and Orthanc itself (its REST API, not DICOMweb) has them, as CR
    stored = {t["SOPInstanceUID"] for t in orthanc.instances(SeriesInstanceUID=new_series)}
    assert stored == {ds.SOPInstanceUID for ds in copies}


def test_wrong_password_is_a_clear_401_and_never_shown_or_logged(
    orthanc,  # noqa: F811
    study,
    tmp_path,
    monkeypatch,
    caplog,
):
    wrong = "not-the-password-1234"
    monkeypatch.setenv("PYLON_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("PYLON_DICOMWEB_PASSWORD", wrong)
    a1 = pydicom.dcmread(study["a1"])
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DicomwebError) as raised:
        Dicomweb(location(orthanc, study=a1.StudyInstanceUID)).fetch(tmp_path / "cache")
    assert raised.value.status == 401
    assert "rejected the credentials (401): set PYLON_DICOMWEB_USER/PYLON_DICOMWEB_PASSWORD or a " \
        "netrc entry for 127.0.0.1" in str(raised.value)  # fmt: skip
    assert not (tmp_path / "cache").exists()
    # the right password, logged at DEBUG by every library: still never in the log
    monkeypatch.setenv("PYLON_DICOMWEB_PASSWORD", orthanc.password)
    Dicomweb(location(orthanc, study=a1.StudyInstanceUID)).fetch(tmp_path / "cache")
    assert caplog.text and wrong not in caplog.text and orthanc.password not in caplog.text
    assert wrong not in str(raised.value)


def test_netrc_credentials_for_the_host(orthanc, study, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("PYLON_DICOMWEB_USER", raising=False)
    monkeypatch.delenv("PYLON_DICOMWEB_PASSWORD", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin {orthanc.user}\npassword {orthanc.password}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    a1 = pydicom.dcmread(study["a1"])
    files = Dicomweb(location(orthanc, study=a1.StudyInstanceUID, series=a1.SeriesInstanceUID))
    assert len(files.fetch(tmp_path / "cache")) == 2
    netrc.write_text("machine elsewhere.example.org\nlogin x\npassword y\n")
    with pytest.raises(DicomwebError, match=r"\(401\).*used: no PYLON_DICOMWEB_USER set"):
        Dicomweb(location(orthanc)).search(study=a1.StudyInstanceUID)
    monkeypatch.setenv("PYLON_DICOMWEB_USER", "only-the-user")
    with pytest.raises(ValueError, match="PYLON_DICOMWEB_PASSWORD is not set"):
        credentials_session()


def test_wrong_path_is_a_clear_404(orthanc, credentials):  # noqa: F811
    wrong = orthanc.url.replace("http://", "dicomweb://") + "/not-dicom-web"
    with pytest.raises(DicomwebError, match=r"not found \(404\).*check the service root"):
        Dicomweb(wrong, retries=0).search(study="1.2.3")


def test_unreachable_is_retried_with_backoff_then_a_clear_error(credentials, tmp_path):
    port = free_port()  # nothing listens there
    waits = []
    web = Dicomweb(
        f"dicomweb://127.0.0.1:{port}/dicom-web?study=1.2.3",
        retries=3,
        backoff=0.05,
        on_retry=lambda attempt, wait, reason: waits.append((attempt, wait, reason)),
    )
    with pytest.raises(DicomwebError, match=rf"cannot reach http://127.0.0.1:{port}/dicom-web .*"
                       r"Connection refused; gave up after 4 attempt"):  # fmt: skip
        web.fetch(tmp_path / "cache")
    assert waits == [(1, 0.05, "Connection refused"), (2, 0.1, "Connection refused"),
                     (3, 0.2, "Connection refused")]  # fmt: skip


def test_store_waits_for_a_server_that_comes_back(orthanc, study, credentials):  # noqa: F811
    ds = pydicom.dcmread(study["b1"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    orthanc.stop()
    restarted = threading.Timer(1.0, orthanc.start)
    retried = []
    try:
        restarted.start()
        web = Dicomweb(location(orthanc), retries=8, backoff=0.25,
                       on_retry=lambda *args: retried.append(args))  # fmt: skip
        assert web.store([ds]) == [ds.SOPInstanceUID]
    finally:
        restarted.join()
        if orthanc.process is None:
            orthanc.start()
    assert retried  # it was down when the store began
    assert orthanc.instances(SOPInstanceUID=ds.SOPInstanceUID)


# --- predict's glue, through the API: fetch the inputs, predict, store the findings, read back ---

SIZE = 64
FINDING, ABSENT = "Nodule", "Hernia"  # a SNOMED-coded class and one the model never finds


@pytest.fixture
def weights(tmp_path):
    """Class FINDING's map is the 4x4 average-pooled input (it peaks on the brightest square);
    ABSENT's is a constant -4 (probability sigmoid(-4), never reported at 0.5)."""
    path = tmp_path / "brightness.safetensors"
    return brightness_weights(path, [FINDING, ABSENT], SIZE, weight=[1.0, 0.0], bias=[0.0, -4.0])


# (x0, y0) of each image's bright 24-pixel square in a 128 x 96 (rows x columns) DX
SQUARES = {"left": (10, 70), "right": (60, 20)}
SIDE = 24


def bright_square_dx(path, x0, y0, **attributes):
    pixels = np.full((128, 96), 300, dtype=np.uint16)
    pixels[y0 : y0 + SIDE, x0 : x0 + SIDE] = 3800
    return write_dx(path, pixels, **attributes)


@pytest.fixture
def square_study(orthanc, tmp_path):  # noqa: F811
    """Two DX images of one series, each with a bright square where SQUARES says; uploaded."""
    study_uid, series_uid = generate_uid(), generate_uid()
    files = {}
    for number, (name, (x0, y0)) in enumerate(SQUARES.items(), start=1):
        uids = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        files[name] = bright_square_dx(
            tmp_path / f"{name}.dcm", x0, y0, InstanceNumber=number, **uids
        )
        orthanc.upload(files[name])
    return {name: pydicom.dcmread(path) for name, path in files.items()}


def check_findings_srs(server, square_study, folder, records=None):
    """The SRs on ``server`` for ``square_study``'s images (found by QIDO, modality SR, retrieved
    by WADO-RS into ``folder``, read with highdicom) reference their image and report the finding
    inside its square, with the probability of ``records`` (image SOP UID -> prediction record)
    if given."""
    study_uid = square_study["left"].StudyInstanceUID
    files = Dicomweb(location(server, study=study_uid, Modality="SR")).fetch(folder)
    assert len(files) == len(square_study)
    by_image = {}
    for path in files:
        sr = hd.sr.srread(path)
        by_image[sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                 .ReferencedSOPSequence[0].ReferencedSOPInstanceUID] = sr  # fmt: skip
    assert set(by_image) == {ds.SOPInstanceUID for ds in square_study.values()}
    for name, source in square_study.items():
        sr = by_image[source.SOPInstanceUID]
        assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == "PYLON-TEST-1"
        groups = sr.content.get_planar_roi_measurement_groups()
        assert {g.finding_type for g in groups} == {finding_code(FINDING)}  # not ABSENT
        (peak,) = [g for g in groups if g.roi.graphic_type.value == "POINT"]
        (image,) = peak.roi.ContentSequence  # the IMAGE the SCOORD is selected from
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        (column, row), (x0, y0) = peak.roi.value[0], SQUARES[name]
        assert x0 <= column <= x0 + SIDE and y0 <= row <= y0 + SIDE
        (probability,) = peak.get_measurements()
        assert probability.value == pytest.approx(1 / (1 + np.exp(-2.0)), abs=0.05)  # (1-.5)/.25
        if records is not None:
            assert probability.value == pytest.approx(
                records[source.SOPInstanceUID]["probabilities"][FINDING], abs=1e-6)  # fmt: skip


def test_fetch_predict_and_store_the_findings_through_the_api(
    orthanc,  # noqa: F811
    square_study,
    credentials,
    weights,
    tmp_path,  # noqa: F811
):
    from pylon.clinical.dicomweb import DicomwebSink, fetch_inputs
    from pylon.clinical.predict_dicom import FindingsWriter

    study_uid = square_study["left"].StudyInstanceUID
    paths = fetch_inputs([location(orthanc, study=study_uid)], tmp_path / "cache")
    assert len(paths) == 2
    writer = FindingsWriter(DicomwebSink(location(orthanc)), kinds=("sr",), threshold=0.5)
    predictor = Predictor(weights, threshold=0.5, precision="fp32")
    records = {}
    for result in predictor.iter_predict(paths):
        written = writer.write(result)
        assert [(r["kind"], r["url"]) for r in written] == [("sr", orthanc.dicomweb_url)]
        records[pydicom.dcmread(result.path).SOPInstanceUID] = result.to_dict()
    check_findings_srs(orthanc, square_study, tmp_path / "srs", records)


def test_a_destination_with_a_study_is_refused(orthanc, credentials):  # noqa: F811
    from pylon.clinical.dicomweb import DicomwebSink

    with pytest.raises(ValueError, match="a destination takes no study"):
        DicomwebSink(location(orthanc, study="1.2.3"))


def predict(weights, *args, out):
    command = ["predict", str(weights), *map(str, args), "--out", str(out)]
    return CliRunner().invoke(app, [*command, "--precision", "fp32", "--no-progress"])


def test_pylon_predict_from_and_to_dicomweb_end_to_end(
    orthanc,  # noqa: F811
    square_study,
    credentials,
    weights,
    tmp_path,
):
    study_uid = square_study["left"].StudyInstanceUID
    out = tmp_path / "out"
    args = (location(orthanc, study=study_uid), "--dicom-out", location(orthanc))
    result = predict(weights, *args, "--dicom-objects", "sr", out=out)
    assert result.exit_code == 0, result.output
    assert "predicted 2 image(s)" in result.output and "2 DICOM object(s)" in result.output
    assert orthanc.password not in result.output
    for path in out.rglob("*"):  # nor in any file written (settings, records, CSV)
        assert not path.is_file() or orthanc.password.encode() not in path.read_bytes()
    lines = (out / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    by_image = {pydicom.dcmread(r["path"]).SOPInstanceUID: r for r in records}
    check_findings_srs(orthanc, square_study, tmp_path / "srs", by_image)
    # each record names its SR on the server
    stored = {t["SOPInstanceUID"] for t in orthanc.instances(Modality="SR")}
    for record in records:
        (sr,) = record["dicom_objects"]
        assert (sr["kind"], sr["url"]) == ("sr", orthanc.dicomweb_url)
        assert sr["sop_instance_uid"] in stored
    # the retrieved images are a cache in --out: a rerun neither fetches nor stores again
    cached = sorted((out / "dicomweb" / study_uid).rglob("*.dcm"))
    assert len(cached) == 2
    result = predict(weights, *args, "--dicom-objects", "sr", out=out)
    assert result.exit_code == 0, result.output
    assert "resuming: 2 image(s) already" in result.output
    assert len(Dicomweb(location(orthanc)).search(study=study_uid, Modality="SR")) == 2


def test_pylon_predict_with_a_wrong_password_stops_before_any_work(
    orthanc,  # noqa: F811
    square_study,
    weights,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("PYLON_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("PYLON_DICOMWEB_PASSWORD", "wrong-password-5678")
    study_uid = square_study["left"].StudyInstanceUID
    n_before = len(orthanc.instances())
    for args in (
        (location(orthanc, study=study_uid),),  # the input's server
        (study_dx(tmp_path), "--dicom-out", location(orthanc)),  # the destination
    ):
        out = tmp_path / f"out{len(args)}"
        result = predict(weights, *args, out=out)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert "rejected the credentials (401): set PYLON_DICOMWEB_USER/" in lines[0]
        assert "wrong-password-5678" not in result.output
        assert not (out / "predictions.jsonl").exists()
    assert len(orthanc.instances()) == n_before


def study_dx(tmp_path):
    return bright_square_dx(tmp_path / "local.dcm", 5, 5)


def test_pylon_predict_with_an_unreachable_server_is_a_clear_error(
    credentials, weights, tmp_path, monkeypatch
):
    monkeypatch.setenv("PYLON_DICOMWEB_RETRIES", "2")
    monkeypatch.setenv("PYLON_DICOMWEB_BACKOFF", "0.05")
    port = free_port()
    result = predict(
        weights, f"dicomweb://127.0.0.1:{port}/dicom-web?study=1.2.3", out=tmp_path / "o"
    )
    assert result.exit_code == 1, result.output
    assert f"error: cannot reach http://127.0.0.1:{port}/dicom-web" in result.output
    assert "Connection refused; gave up after 3 attempt(s)" in result.output
    result = predict(weights, "dicomweb://h/dicom-web?series=1.2", out=tmp_path / "o")
    assert result.exit_code == 2 and "needs study=UID" in result.output


# --- TLS: dicomwebs:// through an HTTPS front of the test server ---
# Debian's Orthanc 1.10 crashes on its own HTTPS ("SslEnabled"); a PACS behind an HTTPS reverse
# proxy is the common deployment anyway.


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made now with openssl (no key is committed):
    ``key.pem``, ``cert.pem`` (also the CA bundle that trusts it) in the returned folder."""
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder


class _Forward(BaseHTTPRequestHandler):
    """Forwards each request to ``self.server.target`` (plain HTTP) and answers its response;
    once ``self.server.posts_left`` (None: no limit) POSTs went through, a POST gets 503."""

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.command == "POST" and self.server.posts_left is not None:
            if self.server.posts_left <= 0:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.server.posts_left -= 1
        hop = {"host", "connection", "transfer-encoding", "content-length"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
        answer = requests.request(self.command, self.server.target + self.path, headers=headers,
                                  data=body, timeout=30)  # fmt: skip
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in hop | {"content-encoding"}:  # requests decoded the body
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, *args):
        pass


def start_front(orthanc, *, tls=None):  # noqa: F811
    """A server on 127.0.0.1 forwarding to the test Orthanc (HTTPS with the certificate folder
    ``tls``); stop it with ``shutdown()`` and ``server_close()``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forward)
    server.target, server.posts_left = orthanc.url, None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls / "cert.pem", tls / "key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def https_front(orthanc, tls):  # noqa: F811
    """An HTTPS server in front of the test Orthanc; yields its port."""
    server = start_front(orthanc, tls=tls)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def front(orthanc):  # noqa: F811
    """A plain HTTP server in front of the test Orthanc (``posts_left`` to make STOW fail)."""
    server = start_front(orthanc)
    yield server
    server.shutdown()
    server.server_close()


def test_a_destination_failing_mid_run_loses_nothing(
    front,
    orthanc,  # noqa: F811
    square_study,
    credentials,
    weights,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("PYLON_DICOMWEB_RETRIES", "2")
    monkeypatch.setenv("PYLON_DICOMWEB_BACKOFF", "0.05")
    study_uid = square_study["left"].StudyInstanceUID
    destination = f"dicomweb://127.0.0.1:{front.server_address[1]}/dicom-web"
    args = (location(orthanc, study=study_uid), "--dicom-out", destination, "--batch-size", 1)
    out = tmp_path / "out"
    front.posts_left = 1  # the first image's SR is stored, then the server answers 503
    result = predict(weights, *args, "--dicom-objects", "sr", out=out)
    assert result.exit_code == 1, result.output
    assert "answered storing (STOW-RS) with HTTP 503" in result.output
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1
    front.posts_left = None  # back: the rerun stores the second image's SR only
    result = predict(weights, *args, "--dicom-objects", "sr", out=out)
    assert result.exit_code == 0, result.output
    assert "resuming: 1 image(s) already" in result.output
    check_findings_srs(orthanc, square_study, tmp_path / "srs")  # one SR per image, no more


def test_dicomwebs_is_https_with_the_certificate_checked(
    https_front,
    tls,
    orthanc,  # noqa: F811
    study,
    credentials,
    tmp_path,
    monkeypatch,
):
    a1 = pydicom.dcmread(study["a1"])
    where = f"dicomwebs://127.0.0.1:{https_front}/dicom-web?study={a1.StudyInstanceUID}"
    # a certificate no trusted authority signed: refused at once, not retried, with the remedy
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    retried = []
    refused = r"TLS failed with https://127.0.0.1:\d+/dicom-web .*certificate verify failed"
    with pytest.raises(DicomwebError, match=refused + ".*set REQUESTS_CA_BUNDLE"):
        Dicomweb(where, on_retry=lambda *a: retried.append(a)).fetch(tmp_path / "cache")
    assert not retried
    # trusted (a private CA, as hospitals have): the same files as over plain HTTP
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls / "cert.pem"))
    files = Dicomweb(where).fetch(tmp_path / "cache")
    assert sorted(f.read_bytes() for f in files) == sorted(
        study[name].read_bytes() for name in ("a1", "a2", "b1")
    )
    copy = pydicom.dcmread(study["a1"])
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    web = Dicomweb(f"dicomwebs://127.0.0.1:{https_front}/dicom-web")
    assert web.store([copy]) == [copy.SOPInstanceUID]
    assert orthanc.instances(SOPInstanceUID=copy.SOPInstanceUID)
