"""``pylon listen``: pylon as a node on the DICOM network (a storage SCP through pynetdicom).

A modality or PACS sends radiographs with C-STORE; each is written atomically to the spool
(:mod:`pylon.clinical.spool`) before the success status goes back; a worker predicts the spooled
images in batches (as soon as ``batch_size`` arrived, or ``batch_wait`` seconds after the first
of a batch); the findings (:func:`pylon.clinical.objects.findings_objects`: SR, SC) go to the
outbox and a sender C-STOREs them to the destination (:func:`pylon.clinical.dimse.send_datasets`),
retrying a destination that is down with exponential backoff until it is back. Every outcome is
one log line and one record of ``SPOOL/journal.jsonl`` (:mod:`pylon.clinical.journal`).

Threads: pynetdicom's server (one per association) only spools and queues; one worker decodes
and predicts; one builder writes the results of the batch predicted last (highdicom, while the
next batch is in the model); one sender sends. A bounded queue between the server and the worker
slows a sender that is faster than the model down (its C-STORE answers wait) instead of growing
memory; the spool, not the queues, is what survives a crash: an image stays in ``incoming/``
until its results are in the outbox.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pylon.clinical import require
from pylon.clinical.journal import Journal
from pylon.clinical.spool import Spool, check_uid

# Radiographs: CR, DX (for presentation and for processing), digital mammography (same single
# grayscale frame), and secondary capture (a radiograph digitised or exported as an SC).
ACCEPTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
# C-STORE statuses (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000


@dataclass
class NodeSettings:
    """What ``pylon listen`` was asked to do.

    Attributes:
        ae_title: our AE title (called AE title of the senders, calling AE title of our sends).
        host: the address to listen on (127.0.0.1: this machine only).
        port: the DICOM port to listen on.
        send_to: the destination of the results, ``AET@HOST:PORT``.
        calling_aets: the AE titles allowed to associate (empty: any).
        kinds: which DICOM objects to send (``"sr"``, ``"sc"``; see
            :func:`pylon.clinical.objects.findings_objects`).
        threshold: findings at or above this probability are reported.
        batch_size: images per forward pass; a batch starts as soon as this many arrived.
        batch_wait: seconds a batch waits for more images after its first one.
        queue_size: images received but not yet taken by the worker before C-STORE answers wait.
        retry_wait: seconds before the first retry of a failed send (doubled each time).
        retry_max_wait: the longest wait between sends to a destination that is down.
        send_timeout: seconds for the destination's connection, association and each answer.
    """

    ae_title: str = "PYLON"
    host: str = "127.0.0.1"
    port: int = 11112
    send_to: str = ""
    calling_aets: Sequence[str] = ()
    kinds: Sequence[str] = ("sr", "sc")
    threshold: float = 0.5
    batch_size: int = 8
    batch_wait: float = 1.0
    queue_size: int = 0  # 0: 4 batches
    retry_wait: float = 1.0
    retry_max_wait: float = 60.0
    send_timeout: float = 30.0


def transfer_syntaxes() -> list[str]:
    """The transfer syntaxes whose pixel data pydicom can decode here (uncompressed ones, and
    JPEG, JPEG-LS, JPEG 2000, RLE where their plugins are installed), uncompressed first."""
    from pydicom.pixels import get_decoder
    from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS
    from pynetdicom import DEFAULT_TRANSFER_SYNTAXES

    syntaxes = list(DEFAULT_TRANSFER_SYNTAXES)
    for uid in _PIXEL_DATA_DECODERS:
        decoder = get_decoder(uid)
        if uid not in syntaxes and decoder is not None and decoder.is_available:
            syntaxes.append(str(uid))
    return syntaxes


class StorageNode:
    """The storage SCP, the prediction worker and the sender, around one spool folder.

    Args:
        predictor: a :class:`pylon.inference.Predictor` (its ``batch_size`` is used per forward).
        spool: the spool folder (the caller holds its lock: one node per spool).
        settings: :class:`NodeSettings`.

    Use :meth:`start`, then :meth:`stop` (e.g. on SIGTERM); :meth:`start` predicts and sends
    what an earlier process left in the spool.
    """

    def __init__(self, predictor, spool: Spool, settings: NodeSettings):
        from pylon.clinical.dimse import parse_peer

        self.predictor = predictor
        self.spool = spool
        self.settings = settings
        self.destination = parse_peer(settings.send_to, "--send-to")
        self.journal = Journal(spool.journal_path)
        size = settings.queue_size or 4 * settings.batch_size
        self._queue: queue.Queue[Path] = queue.Queue(maxsize=size)
        # predicted images whose results the builder writes (while the next batch runs)
        self._to_build: queue.Queue = queue.Queue(maxsize=2 * settings.batch_size)
        self._building: set[str] = set()  # their SOP Instance UIDs
        self._stopping = threading.Event()
        self._outbox_ready = threading.Event()
        self._backlog: list[Path] = []
        self._threads: list[threading.Thread] = []
        self._ae = None
        self._server = None
        self._batches = 0  # batches predicted by this process (the journal's batch numbers)

    # life cycle
    def start(self) -> None:
        """Recover the spool, start the worker and the sender, then listen.

        Raises:
            OSError: the port cannot be listened on (in use, not allowed).
        """
        s = self.settings
        undone = self.spool.recover()
        self._backlog = self.spool.pending_images()
        pending = self.spool.pending_results()
        self.journal.record(
            "started",
            f"started: spool {self.spool.folder}: {len(self._backlog)} image(s) to predict "
            f"({len(undone)} of them half-predicted when the last process ended), "
            f"{len(pending)} image(s) with results to send",
            to_predict=len(self._backlog),
            to_send=len(pending),
        )
        for target, name in (
            (self._work, "pylon-predict"),
            (self._build_loop, "pylon-build"),
            (self._send, "pylon-send"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._outbox_ready.set()
        self._ae = self._make_ae()
        self._server = self._ae.start_server(
            (s.host, s.port), block=False, evt_handlers=self._handlers()
        )
        allowed = ", ".join(s.calling_aets) if s.calling_aets else "any AE title"
        logging.getLogger("pylon.listen").info(
            "listening as %s on %s:%d (calling AE titles allowed: %s); results to %s",
            s.ae_title,
            s.host,
            s.port,
            allowed,
            self.destination,
        )

    def stop(self) -> None:
        """Stop accepting associations (open ones are aborted), let the worker finish the batch
        it is predicting (the images it had not started stay in the spool) and the sender the
        send it is making (bounded by ``send_timeout``), then record what is left. A kill
        meanwhile loses nothing either: every step is an atomic rename."""
        if self._server is not None:
            self._server.shutdown()  # no new association
            for assoc in self._ae.active_associations:  # a peer's open one would keep us alive
                assoc.abort()
            self._server = None
        self._stopping.set()
        self._outbox_ready.set()
        if self._threads:
            worker, builder, sender = self._threads
            worker.join()  # its last batch goes to the builder
            self._to_build.put(None)
            builder.join()
            sender.join()
        left_images = len(self.spool.pending_images())
        left_results = len(self.spool.pending_results())
        self.journal.record(
            "stopped",
            f"stopped: {left_images} image(s) to predict and {left_results} image(s) with "
            "results to send stay in the spool for the next start",
            to_predict=left_images,
            to_send=left_results,
        )
        self.journal.close()

    # the storage SCP
    def _make_ae(self):
        pynetdicom = require("pynetdicom", "pylon listen")
        from pynetdicom.sop_class import Verification

        ae = pynetdicom.AE(ae_title=self.settings.ae_title)
        syntaxes = transfer_syntaxes()
        for uid in ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(uid, syntaxes)
        ae.add_supported_context(Verification)
        ae.require_calling_aet = list(self.settings.calling_aets)
        return ae

    def _handlers(self):
        from pynetdicom import evt

        return [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ACCEPTED, self._on_accepted),
        ]

    def _on_rejected(self, event) -> None:
        requestor = event.assoc.requestor
        calling = requestor.ae_title
        address = f"{requestor.address}:{requestor.port}"
        if self.settings.calling_aets and calling not in self.settings.calling_aets:
            reason = (
                f"calling AE title {calling!r} is not allowed (--calling-aets "
                f"{','.join(self.settings.calling_aets)})"
            )
        else:
            reason = "association rejected"
        self.journal.record(
            "refused",
            f"refused association from {calling} at {address}: {reason}",
            level=logging.WARNING,
            calling_aet=calling,
            address=address,
            reason=reason,
        )

    def _on_accepted(self, event) -> None:
        from pydicom.uid import UID

        rejected = [cx for cx in event.assoc.rejected_contexts if cx.abstract_syntax]
        for cx in rejected:
            name = UID(cx.abstract_syntax).name
            reason = (
                f"SOP class {name} ({cx.abstract_syntax}) is not accepted: only "
                + ", ".join(ACCEPTED_SOP_CLASSES.values())
                if cx.abstract_syntax not in ACCEPTED_SOP_CLASSES
                else f"none of the transfer syntaxes offered for {name} can be decoded here"
            )
            self.journal.record(
                "refused",
                f"refused presentation context from {event.assoc.requestor.ae_title}: {reason}",
                level=logging.WARNING,
                calling_aet=event.assoc.requestor.ae_title,
                sop_class_uid=str(cx.abstract_syntax),
                reason=reason,
            )

    def _on_store(self, event) -> int:
        request = event.request
        calling = event.assoc.requestor.ae_title
        uid = str(request.AffectedSOPInstanceUID)
        sop_class = str(request.AffectedSOPClassUID)
        fields = {"sop_instance_uid": uid, "sop_class_uid": sop_class, "calling_aet": calling}
        if sop_class not in ACCEPTED_SOP_CLASSES:  # cannot happen through the contexts: defence
            return self._refuse_store(
                DOES_NOT_MATCH_SOP_CLASS, f"SOP class {sop_class} is not accepted", fields
            )
        try:
            check_uid(uid)
        except ValueError as err:
            return self._refuse_store(CANNOT_UNDERSTAND, str(err), fields)
        try:
            path = self.spool.receive(uid, lambda tmp: tmp.write_bytes(event.encoded_dataset()))
        except OSError as err:
            return self._refuse_store(OUT_OF_RESOURCES, f"cannot spool it: {err}", fields)
        self.journal.record(
            "received",
            f"received {uid} ({ACCEPTED_SOP_CLASSES[sop_class]}) from {calling}",
            **fields,
        )
        while not self._stopping.is_set():  # a full queue: the sender waits (backpressure)
            try:
                self._queue.put(path, timeout=0.5)
                break
            except queue.Full:
                continue
        return 0x0000

    def _refuse_store(self, status: int, reason: str, fields: dict) -> int:
        self.journal.record(
            "failed",
            f"refused C-STORE of {fields['sop_instance_uid']} from {fields['calling_aet']} "
            f"(status 0x{status:04X}): {reason}",
            level=logging.WARNING,
            status=status,
            reason=reason,
            **fields,
        )
        return status

    # the prediction worker
    def _next_batch(self) -> list[Path]:
        """Up to ``batch_size`` spooled images: the backlog of an earlier process first, then
        what arrives, waiting ``batch_wait`` after a batch's first image for more."""
        size = self.settings.batch_size
        if self._backlog:
            batch, self._backlog = self._backlog[:size], self._backlog[size:]
            return batch
        batch: list[Path] = []
        deadline = None
        while len(batch) < size and not self._stopping.is_set():
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if deadline is not None and wait <= 0:
                break
            try:
                path = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            if path not in batch:
                batch.append(path)
            if deadline is None:
                deadline = time.monotonic() + self.settings.batch_wait
        if self._stopping.is_set():
            return []  # not started: it stays in the spool
        return batch

    def _work(self) -> None:
        while not self._stopping.is_set():
            batch = [path for path in self._next_batch() if path.exists()]
            if batch:
                try:
                    self._predict(batch)
                except Exception as err:  # noqa: BLE001  a node keeps serving; the images stay
                    self.journal.record(
                        "failed",
                        f"prediction of {len(batch)} image(s) failed; they stay in the spool "
                        f"for the next start: {type(err).__name__}: {err}",
                        level=logging.ERROR,
                        sop_instance_uids=[p.stem for p in batch],
                        reason=f"{type(err).__name__}: {err}",
                        traceback=traceback.format_exc(),
                    )

    def _predict(self, batch: list[Path]) -> None:
        """Decode and predict a batch; its results are built by the builder thread meanwhile the
        next batch runs (the forward releases the GIL; building is Python)."""
        start = time.perf_counter()
        inputs = []
        for path in batch:
            uid = path.stem
            if uid in self._building:  # received again while its results are being written
                continue  # the builder moves the file that is there now: same SOP instance
            if self.spool.is_pending_results(uid):
                path.unlink()  # received again while its results wait: they are sent once
                self.journal.record(
                    "failed",
                    f"{uid} was received again while its results wait to be sent: not predicted "
                    "twice",
                    sop_instance_uid=uid,
                    reason="duplicate",
                )
                continue
            try:
                inputs.append(self.predictor.to_input(path, uid))
            except (ValueError, OSError) as err:
                self._fail(path, f"cannot read the image: {err}")
        decoded = time.perf_counter()
        predictions = self.predictor.predict_inputs(inputs) if inputs else []
        self._batches += 1
        timing = {
            "batch": self._batches,
            "batch_images": len(inputs),
            "batch_decode_s": round(decoded - start, 4),
            "batch_model_s": round(time.perf_counter() - decoded, 4),
        }
        for item, prediction in zip(inputs, predictions, strict=True):
            self._building.add(item.image_id)
            self._to_build.put((Path(item.path), prediction, timing))

    def _build_loop(self) -> None:
        while (job := self._to_build.get()) is not None:
            try:
                self._build(*job)
            finally:
                self._building.discard(job[0].stem)

    def _build(self, path: Path, prediction, timing: dict) -> None:
        try:
            self._build_one(path, prediction, timing)
        except Exception as err:  # noqa: BLE001  the image stays in the spool
            self.journal.record(
                "failed",
                f"{path.stem}: building its results failed; it stays in the spool for the "
                f"next start: {type(err).__name__}: {err}",
                level=logging.ERROR,
                sop_instance_uid=path.stem,
                reason=f"{type(err).__name__}: {err}",
                traceback=traceback.format_exc(),
            )

    def _build_one(self, path: Path, prediction, timing: dict) -> None:
        """Write one predicted image's results to the outbox (moving the image with them)."""
        import pydicom

        from pylon.clinical.objects import findings_objects, object_file_name

        uid = path.stem
        start = time.perf_counter()
        try:
            source = pydicom.dcmread(path)
            objects = findings_objects(
                source,
                prediction,
                kinds=tuple(self.settings.kinds),
                threshold=self.settings.threshold,
            )
            results = [
                (f"{k:02d}-{object_file_name(obj)}", _writer(obj.dataset))
                for k, obj in enumerate(objects, start=1)
            ]
            self.spool.predicted(path, results)
        except Exception as err:  # noqa: BLE001  one bad image must not stop the node
            self._fail(path, f"cannot build its results: {type(err).__name__}: {err}")
            return
        found = list(prediction.selected)
        self.journal.record(
            "predicted",
            f"predicted {uid}: "
            + (", ".join(f"{c} {prediction.probabilities[c]:.2f}" for c in found) or "nothing")
            + f" at or above {self.settings.threshold:g}; {len(objects)} result(s) to send",
            sop_instance_uid=uid,
            study_instance_uid=str(source.get("StudyInstanceUID", "")),
            probabilities=prediction.probabilities,
            selected=found,
            results=[
                {
                    "kind": o.kind,
                    "class": o.class_name,
                    "sop_class_uid": o.sop_class_uid,
                    "sop_instance_uid": o.sop_instance_uid,
                }
                for o in objects
            ],
            objects_s=round(time.perf_counter() - start, 4),
            **timing,
        )
        self._outbox_ready.set()

    def _fail(self, path: Path, reason: str) -> None:
        uid = path.stem
        try:
            kept = self.spool.fail(path)
        except FileNotFoundError:  # moved meanwhile (received twice): nothing to keep
            kept = None
        self.journal.record(
            "failed",
            f"{uid} not predicted: {reason}" + (f" (kept as {kept})" if kept else ""),
            level=logging.WARNING,
            sop_instance_uid=uid,
            reason=reason,
        )

    # the sender
    def _send(self) -> None:
        wait = self.settings.retry_wait
        while not self._stopping.is_set():
            self._outbox_ready.wait(1.0)
            self._outbox_ready.clear()
            failed = False
            for folder in self.spool.pending_results():
                if self._stopping.is_set():
                    return
                if not self._send_folder(folder, wait):
                    failed = True
                    break
            if failed:
                self._stopping.wait(wait)  # back off; a stop ends the wait
                wait = min(wait * 2, self.settings.retry_max_wait)
                self._outbox_ready.set()
            else:
                wait = self.settings.retry_wait

    def _send_folder(self, folder: Path, wait: float) -> bool:
        """Send one image's results; ``False`` when the destination is down (retry later)."""
        import pydicom

        from pylon.clinical.dimse import PeerError, StoreRefused, send_datasets

        uid = folder.name
        files = self.spool.result_files(folder)
        datasets = [pydicom.dcmread(path) for path in files]
        try:
            if datasets:
                send_datasets(
                    datasets,
                    self.destination,
                    calling_aet=self.settings.ae_title,
                    retries=0,  # the backoff is ours: a stop must not wait for it
                    timeout=self.settings.send_timeout,
                )
        except StoreRefused as err:
            kept = self.spool.refused(folder)
            self.journal.record(
                "failed",
                f"results of {uid} refused by {self.destination}: {err} (kept as {kept}, "
                "not retried)",
                level=logging.ERROR,
                sop_instance_uid=uid,
                reason=str(err),
                status=err.status,
            )
            return True
        except PeerError as err:
            self.journal.record(
                "failed",
                f"cannot send the results of {uid} to {self.destination}: {err}; kept in the "
                f"outbox, retry in {wait:g} s",
                level=logging.WARNING,
                sop_instance_uid=uid,
                reason=str(err),
                retry_in_s=wait,
            )
            return False
        for path in files:
            self.spool.sent(path)
        self.spool.all_sent(folder)
        self.journal.record(
            "sent",
            f"sent {len(datasets)} result(s) of {uid} to {self.destination}",
            sop_instance_uid=uid,
            results=[str(ds.SOPInstanceUID) for ds in datasets],
            destination=str(self.destination),
        )
        return True


def _writer(dataset):
    def write(path: Path) -> None:
        dataset.save_as(path, enforce_file_format=True)

    return write
