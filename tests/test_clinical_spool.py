"""The DICOM node's spool and journal: each state change is one rename, a half-done prediction is
undone on restart, a cut journal line is skipped. (The node itself: tests/test_listen.py.)"""

from __future__ import annotations

import json

import pytest

from pylon.clinical.journal import Journal, read_journal
from pylon.clinical.spool import Spool, check_uid

UID = "1.2.826.0.1.3680043.8.498.1"


def _write(data: bytes):
    return lambda path: path.write_bytes(data)


def test_an_image_goes_from_incoming_to_the_outbox_with_its_results_and_is_forgotten_when_sent(
    tmp_path,
):
    spool = Spool(tmp_path)
    image = spool.receive(UID, _write(b"image"))
    assert image == tmp_path / "incoming" / f"{UID}.dcm" and image.read_bytes() == b"image"
    assert spool.pending_images() == [image]
    assert not list((tmp_path / "incoming").glob(".*"))  # no temp file left

    folder = spool.predicted(image, [("01-sr.dcm", _write(b"sr")), ("02-sc.dcm", _write(b"sc"))])
    assert folder == tmp_path / "outbox" / UID
    assert not image.exists() and (folder / "source.dcm").read_bytes() == b"image"
    assert spool.pending_images() == [] and spool.pending_results() == [folder]
    assert spool.is_pending_results(UID)
    results = spool.result_files(folder)
    assert [p.name for p in results] == ["01-sr.dcm", "02-sc.dcm"]

    spool.sent(results[0])  # a crash here: only 02-sc.dcm is sent by the next process
    assert [p.name for p in spool.result_files(folder)] == ["02-sc.dcm"]
    spool.sent(results[1])
    spool.all_sent(folder)
    assert spool.pending_results() == [] and not folder.exists()


def test_recover_puts_a_half_predicted_image_back_and_drops_its_partial_results(tmp_path):
    """A process killed between moving the image into its .partial folder and renaming that
    folder: the image is predicted again, its partial results are never sent."""
    spool = Spool(tmp_path)
    partial = tmp_path / "outbox" / f".{UID}.partial"
    partial.mkdir()
    (partial / "01-sr.dcm").write_bytes(b"sr")
    (partial / "source.dcm").write_bytes(b"image")
    other = tmp_path / "outbox" / ".1.2.3.partial"  # killed before the image was moved in
    other.mkdir()
    (other / "01-sr.dcm").write_bytes(b"sr")
    (tmp_path / "incoming" / ".1.2.3.dcm.abc.tmp").write_bytes(b"cut")  # an interrupted receipt
    (tmp_path / "incoming" / "1.2.3.dcm").write_bytes(b"image 2")

    assert spool.recover() == [UID]
    assert sorted(p.name for p in spool.pending_images()) == sorted(["1.2.3.dcm", f"{UID}.dcm"])
    assert (tmp_path / "incoming" / f"{UID}.dcm").read_bytes() == b"image"
    assert spool.pending_results() == []
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "incoming").iterdir()) == ["1.2.3.dcm", f"{UID}.dcm"]


def test_failed_images_and_refused_results_are_kept_aside(tmp_path):
    spool = Spool(tmp_path)
    image = spool.receive(UID, _write(b"image"))
    assert spool.fail(image) == tmp_path / "failed" / f"{UID}.dcm"
    image = spool.receive("1.2.3", _write(b"image"))
    folder = spool.predicted(image, [("01-sr.dcm", _write(b"sr"))])
    kept = spool.refused(folder)
    assert kept == tmp_path / "failed" / "1.2.3-results"
    assert (kept / "01-sr.dcm").read_bytes() == b"sr"
    assert spool.pending_images() == [] and spool.pending_results() == []


@pytest.mark.parametrize("uid", ["../etc/passwd", "1.2.abc", "", "1." + "2" * 70, "1..2"])
def test_only_dicom_uids_name_spool_files(uid):
    with pytest.raises(ValueError, match="not a DICOM UID"):
        check_uid(uid)


def test_the_journal_appends_whole_lines_and_skips_a_line_cut_by_a_crash(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    with caplog.at_level("INFO", logger="pylon.listen"):
        journal.record("received", "received 1.2", sop_instance_uid="1.2")
    journal.close()
    assert caplog.messages == ["received 1.2"]
    with open(path, "a") as fh:
        fh.write('{"event": "predicted", "sop_ins')  # killed mid-write
    journal = Journal(path)
    journal.record("sent", "sent 1.2", sop_instance_uid="1.2")
    journal.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["event"] == "sent"
    assert [r["event"] for r in read_journal(path)] == ["received", "sent"]
    assert read_journal(path)[0]["sop_instance_uid"] == "1.2"
    with pytest.raises(ValueError, match="unknown journal event"):
        Journal(path).record("done", "x")
