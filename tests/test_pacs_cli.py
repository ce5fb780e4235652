"""``pylon pacs echo|find`` against a real Orthanc: an answer, the studies of a patient and the
series of a study; a refused association (an Orthanc that checks the called AE title), nothing
listening, a peer that never answers, and malformed peers: each one clear line."""

import json
import socket
import threading

import numpy as np
import pydicom
import pytest
from dicom_files import write_dx
from orthanc import Orthanc, free_port, orthanc  # noqa: F401
from typer.testing import CliRunner

from pylon.cli.main import app


def pacs(*args):
    return CliRunner().invoke(app, ["pacs", *map(str, args)])


def one_error_line(result, code):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_echo_answers(orthanc):  # noqa: F811
    result = pacs("echo", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}")
    assert result.exit_code == 0, result.output
    assert f"ORTHANC@127.0.0.1:{orthanc.dicom_port} answered C-ECHO from PYLON in" in result.output


def test_find_lists_the_patients_studies_and_the_studys_series(orthanc, tmp_path):  # noqa: F811
    path = write_dx(tmp_path / "a.dcm", np.full((16, 16), 100), StudyDescription="pacs find")
    orthanc.upload(path)
    ds = pydicom.dcmread(path)
    peer = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    result = pacs("find", peer, "--patient", "PYLON-TEST-1")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.splitlines() if "\t" in line]
    ours = [row for row in rows if row[0] == ds.StudyInstanceUID]
    assert ours == [[ds.StudyInstanceUID, "20260101", "DX", "1", "1", "pacs find"]]
    assert f"{len(rows)} study(ies) of patient PYLON-TEST-1 on {peer}" in result.output

    result = pacs("find", peer, "--study", ds.StudyInstanceUID)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.splitlines() if "\t" in line]
    assert rows == [[ds.SeriesInstanceUID, "DX", "1", "1", ""]]

    result = pacs("find", peer, "--patient", "NOBODY")
    assert result.exit_code == 0 and "0 study(ies) of patient NOBODY" in result.output


def test_refused_association_names_the_peer_and_the_ae_titles(tmp_path):
    strict = Orthanc(tmp_path / "strict")
    config = json.loads(strict.config.read_text())
    config["DicomCheckCalledAet"] = True  # refuses a request not addressed to ORTHANC
    strict.config.write_text(json.dumps(config))
    strict.start()
    try:
        line = one_error_line(pacs("echo", f"WRONG@127.0.0.1:{strict.dicom_port}"), 1)
        assert line.startswith(
            f"error: WRONG@127.0.0.1:{strict.dicom_port} rejected the association"
        )
        assert "Called AE title not recognised" in line and "'WRONG' is its AE title" in line
        assert pacs("echo", f"ORTHANC@127.0.0.1:{strict.dicom_port}").exit_code == 0
    finally:
        strict.stop()


def test_nothing_listening_is_a_clear_error():
    port = free_port()
    line = one_error_line(pacs("echo", f"ORTHANC@127.0.0.1:{port}", "--timeout", 2), 1)
    assert line == (
        f"error: cannot connect to ORTHANC@127.0.0.1:{port} (127.0.0.1 port {port}): "
        "Connection refused"
    )
    line = one_error_line(pacs("find", f"ORTHANC@127.0.0.1:{port}", "--patient", "P"), 1)
    assert "Connection refused" in line


def test_a_peer_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result = pacs("echo", f"ANY@127.0.0.1:{port}", "--timeout", 1)
    line = one_error_line(result, 1)
    assert f"ANY@127.0.0.1:{port} did not accept the association within 1 s" in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["echo", "127.0.0.1:4242"], "expected AET@HOST:PORT"),
        (["echo", "A@127.0.0.1:99999"], "expected AET@HOST:PORT"),
        (["echo", "SEVENTEEN_LETTERS@h:1"], "at most 16 characters"),
        (["find", "A@h:1"], "give exactly one of --patient ID and --study UID"),
        (["find", "A@h:1", "--patient", "P", "--study", "1.2"], "give exactly one"),
    ],
)
def test_malformed_command_lines_exit_2(args, expected):
    assert expected in one_error_line(pacs(*args), 2)


# --- pylon.clinical.dimse.send_datasets, the C-STORE that pylon listen sends results with ---


def dx_dataset(tmp_path, name, **attributes):
    return pydicom.dcmread(write_dx(tmp_path / name, np.full((16, 16), 7), **attributes))


def test_send_datasets_waits_for_a_destination_that_comes_back(orthanc, tmp_path):  # noqa: F811
    from pylon.clinical.dimse import send_datasets

    datasets = [dx_dataset(tmp_path, f"{k}.dcm") for k in range(3)]
    peer = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    assert [s.status for s in send_datasets(datasets[:1], peer)] == [0x0000]
    orthanc.stop()
    restarted = threading.Timer(1.0, orthanc.start)
    retried = []
    try:
        restarted.start()
        sent = send_datasets(
            datasets[1:], peer, retries=8, backoff=0.25, on_retry=lambda *a: retried.append(a)
        )
    finally:
        restarted.join()
        if orthanc.process is None:
            orthanc.start()
    assert [s.sop_instance_uid for s in sent] == [ds.SOPInstanceUID for ds in datasets[1:]]
    assert retried and all("Connection refused" in str(error) for _, _, error in retried)
    for ds in datasets:
        assert len(orthanc.instances(SOPInstanceUID=ds.SOPInstanceUID)) == 1


def test_send_datasets_does_not_retry_a_sop_class_the_destination_refuses(orthanc, tmp_path):  # noqa: F811
    from pylon.clinical.dimse import StoreRefused, send_datasets

    good = dx_dataset(tmp_path, "good.dcm")
    odd = dx_dataset(tmp_path, "odd.dcm")
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.8.498.1"
    peer = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    retried = []
    with pytest.raises(
        StoreRefused, match="does not accept the SOP class 1.2.826.0.1.3680043.8.498.1"
    ) as raised:
        send_datasets([good, odd], peer, on_retry=lambda *a: retried.append(a))
    assert raised.value.sop_instance_uid == odd.SOPInstanceUID and not retried
    assert orthanc.instances(SOPInstanceUID=good.SOPInstanceUID)  # the one before is stored
    with pytest.raises(StoreRefused, match="accepts none of the SOP classes asked for"):
        send_datasets([odd], peer, on_retry=lambda *a: retried.append(a))
    assert not retried
