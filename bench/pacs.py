"""Benchmark ``pylon listen`` end to end on this CPU against a local Orthanc.

Starts an Orthanc (the test fixture's :class:`Orthanc`, tests/orthanc.py) and ``pylon listen``
(a subprocess, as deployed) sending its results there, C-STOREs ``--images`` synthetic DX images
of ``--side`` px to the listener in one association (as a modality would), and waits until every
image's results are stored in Orthanc (its ``sent`` record in the journal: the C-STORE was
acknowledged). Prints images/s from the first image's receipt to the last stored result, the
latency of each image (received -> stored), and the share of that time spent in the model
(resize, forward and peaks of each batch, from the journal's ``batch_model_s``), in decoding and
in building the results (``objects_s``; it overlaps the next batch's forward).
Weights are random PYLON-resnet50 (speed does not depend on them) whose head is biased to find
``--findings`` classes per image (the SR's size, and so its build time, grows with the findings).
Run: ``.venv/bin/python bench/pacs.py [--images 32 --batch 8 --side 1024 --objects sr]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import torch
from pynetdicom import AE

from pylon import create_model, save_weights
from pylon.clinical.journal import read_journal
from pylon.data.preprocessing import make_preprocessing

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _from_tests(name: str):
    """A helper module of tests/ (the Orthanc fixture's server class, the DX writer)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seconds(record: dict) -> float:
    return datetime.fromisoformat(record["time"]).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batch-wait", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=256, help="the model's input size")
    parser.add_argument("--side", type=int, default=1024, help="DX image side in pixels")
    parser.add_argument("--objects", default="sr", help="--dicom-objects of pylon listen")
    parser.add_argument(
        "--findings",
        type=int,
        default=2,
        help="classes found per image (as a trained model "
        "finds a few; the random head's output is scaled down and biased to give this many)",
    )
    args = parser.parse_args()
    Orthanc = _from_tests("orthanc").Orthanc
    write_dx = _from_tests("dicom_files").write_dx

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = folder / "pylon_r50.safetensors"
        model = create_model("pylon", encoder="resnet50", num_classes=14)
        with torch.no_grad():  # a random head saturates: every class 0 or 1 (13 findings)
            head = model.net.segmentation_head[0]
            head.weight.mul_(1e-5)
            head.bias.fill_(-4.0)
            head.bias[: args.findings] = 4.0
        record = make_preprocessing(
            "xray", args.size, 1, [0.4984], [0.2483], [f"class{k}" for k in range(14)]
        )
        save_weights(model, weights, metadata=record.to_metadata())
        rng = np.random.default_rng(0)
        datasets = []
        for k in range(args.images):
            pixels = rng.integers(0, 4096, (args.side, args.side), dtype=np.uint16)
            datasets.append(pydicom.dcmread(write_dx(folder / f"{k:03d}.dcm", pixels)))

        server = Orthanc(folder / "orthanc").start()
        spool = folder / "spool"
        command = [sys.executable, "-m", "pylon.cli.main", "listen", str(weights)]
        command += ["--send-to", f"ORTHANC@127.0.0.1:{server.dicom_port}"]
        command += ["--port", str(server.pylon_port), "--spool", str(spool)]
        command += ["--batch-size", str(args.batch), "--batch-wait", str(args.batch_wait)]
        command += ["--dicom-objects", args.objects]
        log = open(folder / "listen.log", "wb")  # noqa: SIM115
        listener = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            while "listening as" not in (folder / "listen.log").read_text():
                if listener.poll() is not None:
                    raise SystemExit((folder / "listen.log").read_text())
                time.sleep(0.1)
            ae = AE(ae_title="MODALITY")
            ae.add_requested_context(str(datasets[0].SOPClassUID))
            assoc = ae.associate("127.0.0.1", server.pylon_port, ae_title="PYLON")
            for ds in datasets:
                assert assoc.send_c_store(ds).Status == 0x0000
            assoc.release()
            while len(
                [r for r in read_journal(spool / "journal.jsonl") if r["event"] == "sent"]
            ) < (args.images):
                if listener.poll() is not None:
                    raise SystemExit((folder / "listen.log").read_text())
                time.sleep(0.1)
            stored = len(server.instances(Modality="SR"))
        finally:
            listener.terminate()
            listener.wait()
            log.close()
            server.stop()
        records = read_journal(spool / "journal.jsonl")

    def by_event(event: str) -> dict[str, dict]:
        return {r["sop_instance_uid"]: r for r in records if r["event"] == event}

    received, predicted, sent = by_event("received"), by_event("predicted"), by_event("sent")
    start = min(_seconds(r) for r in received.values())
    end = max(_seconds(r) for r in sent.values())
    latencies = [_seconds(sent[uid]) - _seconds(received[uid]) for uid in received]
    batches = {r["batch"]: r for r in predicted.values()}
    model_s = sum(r["batch_model_s"] for r in batches.values())
    decode_s = sum(r["batch_decode_s"] for r in batches.values())
    objects_s = sum(r["objects_s"] for r in predicted.values())
    findings = statistics.mean(len(r["selected"]) for r in predicted.values())
    total = end - start
    print(
        f"pylon listen -> Orthanc, PYLON-resnet50 at {args.size} px, {args.images} DX images of "
        f"{args.side} px, --batch-size {args.batch} --batch-wait {args.batch_wait:g}, "
        f"--dicom-objects {args.objects}, {torch.get_num_threads()} threads"
    )
    print(f"stored in Orthanc     : {stored} SR(s) for {args.images} image(s)")
    print(
        f"throughput            : {args.images / total:6.2f} images/s (first receipt to last "
        "stored result)"
    )
    print(
        f"latency per image     : median {statistics.median(latencies):5.2f} s, max "
        f"{max(latencies):5.2f} s (received -> stored)"
    )
    print(
        f"in the model          : {model_s:6.2f} s of {total:.2f} s ({model_s / total:.0%}) "
        f"in {len(batches)} batch(es)"
    )
    print(f"decoding the DICOMs   : {decode_s:6.2f} s ({decode_s / total:.0%})")
    print(
        f"building the results  : {objects_s:6.2f} s ({objects_s / total:.0%}; SR/SC written to "
        f"the outbox, {findings:.1f} finding(s) per image on average)"
    )
    print("(a batch's results are built while the next batch is in the model: shares overlap)")


if __name__ == "__main__":
    main()
