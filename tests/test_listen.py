"""``pylon listen`` as a DICOM node between a modality (a pynetdicom client here) and a real PACS
(Orthanc): results arrive once per image, across a SIGKILL, a SIGTERM and a destination that is
down; refused callers and SOP classes are told so and logged."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_files import write_dx
from orthanc import orthanc  # noqa: F401
from pydicom.uid import CTImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from viewer_runs import write_cam_weights

from pylon.clinical.journal import read_journal

SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A CAM resnet18 at 64 px with 2 classes, rebuilt from its file by the listener."""
    path = tmp_path_factory.mktemp("weights") / "cam.safetensors"
    return write_cam_weights(path, ("effusion", "nodule"))


def radiographs(folder: Path, count: int, modality: str = "DX") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(list(folder.iterdir())))
    paths = []
    for _ in range(count):
        pixels = rng.integers(0, 4096, (80, 96), dtype=np.uint16)
        path = folder / f"{len(list(folder.iterdir())):03d}.dcm"
        paths.append(write_dx(path, pixels, modality=modality))
    return paths


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def store(port: int, paths, calling: str = "MODALITY") -> list[int]:
    """C-STORE files to the listener as a modality would; the statuses, in order."""
    datasets = [p if isinstance(p, pydicom.Dataset) else pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="PYLON")
    assert assoc.is_established, f"association to the listener as {calling} failed"
    statuses = [assoc.send_c_store(ds).Status for ds in datasets]
    assoc.release()
    return statuses


class Listener:
    """``pylon listen`` in a subprocess, on the port Orthanc knows as PYLON."""

    def __init__(self, weights: Path, server, spool: Path, *options: str):
        self.spool, self.log = spool, spool.parent / f"{spool.name}.log"
        command = [sys.executable, "-m", "pylon.cli.main", "listen", str(weights)]
        command += ["--send-to", f"ORTHANC@127.0.0.1:{server.dicom_port}"]
        command += ["--port", str(server.pylon_port), "--spool", str(spool), *options]
        started = self.log.read_text().count("listening as") if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        self.wait_for(lambda: self.log.read_text().count("listening as") > started, "start", 60)

    def records(self, event: str | None = None) -> list[dict]:
        records = read_journal(self.spool / "journal.jsonl")
        return [r for r in records if event is None or r["event"] == event]

    def wait_for(self, condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"listener exited: {self.log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s: {self.log.read_text()}")
            time.sleep(0.1)

    def wait_sent(self, uids, timeout: float = 30.0) -> None:
        self.wait_for(
            lambda: set(uids) <= {r["sop_instance_uid"] for r in self.records("sent")},
            f"'sent' records for {len(uids)} image(s)",
            timeout,
        )

    def stop(self, sig=signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)


def sr_references(server) -> collections.Counter:
    """How many SRs stored in Orthanc reference each SOP instance."""
    counts: collections.Counter = collections.Counter()
    for tags in server.instances(Modality="SR"):
        sr = pydicom.dcmread(pydicom.filebase.DicomBytesIO(server.file(tags["OrthancID"])))
        assert sr.SOPClassUID == SR_STORAGE
        referenced = {str(e.value) for e in sr.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
        counts.update(referenced)
    return counts


@pytest.mark.slow  # ~20 s: a listener subprocess
def test_results_arrive_in_the_pacs_and_refusals_are_clear(weights, orthanc, tmp_path):  # noqa: F811
    """2 DX and 1 CR C-STOREd by an allowed modality each come back as one SR (and one SC per
    finding: threshold 0 reports both classes) in Orthanc, with received / predicted / sent
    records; a caller not in --calling-aets is rejected and CT is not accepted, each with a log
    line and a journal record."""
    images = radiographs(tmp_path / "in", 2) + radiographs(tmp_path / "in", 1, modality="CR")
    uids = [uid_of(p) for p in images]
    listener = Listener(
        weights,
        orthanc,
        tmp_path / "spool",
        *("--calling-aets", "MODALITY,OTHER", "--threshold", "0"),
        *("--batch-size", "2", "--batch-wait", "0.3"),
    )
    try:
        assert store(orthanc.pylon_port, images) == [0x0000] * 3
        listener.wait_sent(uids)

        # an image whose SOP Instance UID is not a UID cannot name a spool file: 0xC000
        odd = pydicom.dcmread(images[0])
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):
            odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = "1.2.x-ray"
            assert store(orthanc.pylon_port, [odd]) == [0xC000]
        (refused,) = listener.records("failed")
        assert refused["sop_instance_uid"] == "1.2.x-ray" and refused["status"] == 0xC000
        assert "is not a DICOM UID" in refused["reason"]

        references = sr_references(orthanc)
        assert all(references[uid] == 1 for uid in uids), references
        for uid in uids:
            events = [r["event"] for r in listener.records() if r.get("sop_instance_uid") == uid]
            assert events == ["received", "predicted", "sent"], events
            (predicted,) = [
                r for r in listener.records("predicted") if r["sop_instance_uid"] == uid
            ]
            assert [(r["kind"], r["class"]) for r in predicted["results"]] == [
                ("sr", None),
                ("sc", "effusion"),
                ("sc", "nodule"),
            ]
            sc_uids = [r["sop_instance_uid"] for r in predicted["results"][1:]]
            stored = {t["SOPInstanceUID"] for t in orthanc.instances()}
            assert set(sc_uids) <= stored
        assert not list((listener.spool / "incoming").iterdir())
        assert not list((listener.spool / "outbox").iterdir())

        # a caller that is not allowed
        intruder = AE(ae_title="INTRUDER")
        intruder.add_requested_context(Verification)
        assoc = intruder.associate("127.0.0.1", orthanc.pylon_port, ae_title="PYLON")
        assert assoc.is_rejected
        listener.wait_for(lambda: listener.records("refused"), "refusal record")
        (refusal,) = listener.records("refused")
        assert refusal["calling_aet"] == "INTRUDER"
        assert "'INTRUDER' is not allowed" in refusal["reason"]

        # a SOP class that is not accepted: CT
        modality = AE(ae_title="MODALITY")
        modality.add_requested_context(CTImageStorage)
        modality.add_requested_context(Verification)
        assoc = modality.associate("127.0.0.1", orthanc.pylon_port, ae_title="PYLON")
        assert assoc.is_established
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [Verification]
        assert assoc.send_c_echo().Status == 0x0000
        ct = pydicom.Dataset()
        ct.SOPClassUID, ct.SOPInstanceUID = CTImageStorage, pydicom.uid.generate_uid()
        ct.file_meta = pydicom.dataset.FileMetaDataset()
        ct.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        with pytest.raises(ValueError, match="No presentation context"):
            assoc.send_c_store(ct)
        listener.wait_for(lambda: len(listener.records("refused")) == 2, "CT refusal record")
        assert "CT Image Storage" in listener.records("refused")[1]["reason"]
    finally:
        assert listener.stop() == 0  # SIGTERM, with the modality's association still open
    assert assoc.is_aborted
    log = listener.log.read_text()
    assert f"listening as PYLON on 127.0.0.1:{orthanc.pylon_port}" in log  # the default --host
    assert "refused association from INTRUDER" in log
    assert "SOP class CT Image Storage (1.2.840.10008.5.1.4.1.1.2) is not accepted" in log
    for uid in uids:
        assert f"received {uid}" in log and f"predicted {uid}" in log and f"of {uid} to" in log


@pytest.mark.slow  # ~35 s: three listener subprocesses, Orthanc stopped and started
def test_nothing_is_lost_or_sent_twice_across_a_kill_a_stop_and_a_pacs_that_is_down(
    weights,
    orthanc,  # noqa: F811
    tmp_path,
):
    """Images spooled but not predicted (a batch waiting for more) survive a SIGKILL; a
    restarted listener predicts them while Orthanc is stopped: each send fails with a 'failed'
    record naming the reason, the results stay in the outbox and are retried; SIGTERM exits 0
    and keeps them; a third listener, still facing a stopped Orthanc, retries until it is back,
    and each image's SR arrives exactly once."""
    images = radiographs(tmp_path / "in", 3)
    uids = sorted(uid_of(p) for p in images)
    spool = tmp_path / "spool"
    options = ("--dicom-objects", "sr", "--batch-size", "50", "--retry-max-wait", "1")
    listener = Listener(weights, orthanc, spool, *options, "--batch-wait", "600")
    assert store(orthanc.pylon_port, images) == [0x0000] * 3
    assert len(listener.records("received")) == 3
    assert listener.stop(signal.SIGKILL) == -signal.SIGKILL
    assert not listener.records("predicted")
    assert sorted(p.stem for p in (spool / "incoming").glob("*.dcm")) == uids

    orthanc.stop()
    try:
        listener = Listener(weights, orthanc, spool, *options, "--batch-wait", "0.1")
        assert listener.records("started")[-1]["to_predict"] == 3
        listener.wait_for(lambda: len(listener.records("failed")) >= 2, "retried failures")
        failed = listener.records("failed")
        assert {r["sop_instance_uid"] for r in failed} <= set(uids)
        assert all("cannot connect to ORTHANC@127.0.0.1" in r["reason"] for r in failed)
        assert all(r["retry_in_s"] <= 1 for r in failed)
        assert "kept in the outbox, retry in" in listener.log.read_text()
        assert listener.stop() == 0  # SIGTERM
        assert listener.records("stopped")[-1]["to_send"] == 3
        assert sorted(p.name for p in (spool / "outbox").iterdir()) == uids
        assert not list((spool / "incoming").iterdir())

        listener = Listener(weights, orthanc, spool, *options)
        assert listener.records("started")[-1]["to_send"] == 3
        listener.wait_for(lambda: len(listener.records("failed")) > len(failed), "a retry")
    finally:
        orthanc.start()
    try:
        listener.wait_sent(uids)
    finally:
        assert listener.stop() == 0
    references = sr_references(orthanc)
    assert [references[uid] for uid in uids] == [1, 1, 1], references
    assert len(listener.records("predicted")) == 3 and len(listener.records("sent")) == 3
    assert not list((spool / "outbox").iterdir())


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--send-to", "orthanc:4242", "--send-to 'orthanc:4242': expected AET@HOST:PORT"),
        ("--ae-title", "A" * 17, "--ae-title 'AAAAAAAAAAAAAAAAA': expected an AE title"),
        ("--calling-aets", "MODALITY,", None),  # a trailing comma is fine
        ("--dicom-objects", "sr,pdf", "--dicom-objects 'sr,pdf': expected a comma-separated"),
        ("--voi", "stored", "--voi"),
    ],
)
def test_wrong_options_exit_2_and_a_busy_port_exits_1(weights, tmp_path, option, value, message):
    """Wrong command-line values exit 2 before the model is loaded; a port already in use exits
    1 naming it (a busy port stands in for every valid-options case here)."""
    import socket

    from typer.testing import CliRunner

    from pylon.cli.main import app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        arguments = ["listen", str(weights), "--send-to", "ORTHANC@127.0.0.1:4242"]
        arguments += ["--port", str(port), "--spool", str(tmp_path / "spool"), option, value]
        result = CliRunner().invoke(app, arguments)
    output = " ".join(result.output.split())
    if message is None:
        assert result.exit_code == 1, output
        assert f"cannot listen on 127.0.0.1:{port}" in output
    else:
        assert result.exit_code == 2, output
        assert message in output
        assert not (tmp_path / "spool").exists()
