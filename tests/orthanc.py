"""A real PACS for the tests: Debian's Orthanc with its DICOMweb plugin, one server per module.

``from orthanc import orthanc  # noqa: F401`` in a test module gives it the ``orthanc`` fixture:
an :class:`Orthanc` started in the module's tmp dir on free ports (HTTP with a test user, DICOM
with AE title ``ORTHANC``), which knows pylon's AE title ``PYLON`` at ``orthanc.pylon_port`` (a
free port reserved for a listener the test starts) and can be stopped and started again with the
same storage (a destination that goes down and comes back).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "pylon-test", "s3cret-test"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc server process.

    Args:
        folder: where its configuration, storage and log go.
        pylon_port: the port of the ``PYLON`` modality it knows (a listener of the test's).
    """

    aet = "ORTHANC"

    def __init__(self, folder: Path, pylon_port: int | None = None):
        self.folder = Path(folder)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.pylon_port = pylon_port or free_port()
        self.user, self.password = USER, PASSWORD
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.config = self.folder / "orthanc.json"
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "pylon-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {"pylon": ["PYLON", "127.0.0.1", self.pylon_port]},
            "DicomAlwaysAllowFind": True,
            "SaveJobs": False,
        }
        self.config.write_text(json.dumps(config, indent=2))
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Orthanc:
        """Start the server and wait until ``GET /system`` answers and its DICOM port accepts
        connections."""
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115  (the child keeps it)
        self.process = subprocess.Popen([ORTHANC, str(self.config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()}")
            try:
                if self.get("/system").ok and self._dicom_listening():
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Orthanc not ready after {timeout} s")

    def _dicom_listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for it: the ports are free afterwards."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def get(self, path: str, **kwargs) -> requests.Response:
        """``GET`` a REST path (``/system``, ``/instances``, ...) as the test user."""
        return requests.get(self.url + path, auth=(self.user, self.password), timeout=10, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, auth=(self.user, self.password), timeout=30, **kwargs)

    def upload(self, path: str | Path) -> str:
        """Store a DICOM file through the REST API; returns Orthanc's instance id."""
        response = self.post("/instances", data=Path(path).read_bytes())
        response.raise_for_status()
        return response.json()["ID"]

    def instances(self, **query: str) -> list[dict]:
        """The stored instances' main DICOM tags (``MainDicomTags`` plus the series' Modality and
        SOPClassUID), optionally only those whose tag equals a value (``Modality="SR"``)."""
        found = []
        for orthanc_id in self.get("/instances").json():
            tags = self.get(f"/instances/{orthanc_id}/simplified-tags").json()
            tags["OrthancID"] = orthanc_id
            if all(tags.get(key) == value for key, value in query.items()):
                found.append(tags)
        return found

    def file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file of an instance."""
        return self.get(f"/instances/{orthanc_id}/file").content

    def clear(self) -> None:
        """Delete every patient (and so every stored instance)."""
        for patient in self.get("/patients").json():
            requests.delete(
                f"{self.url}/patients/{patient}", auth=(self.user, self.password), timeout=10
            )


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A started :class:`Orthanc`, stopped at the end of the module."""
    if not Path(ORTHANC).exists() or not Path(DICOMWEB_PLUGIN).exists():
        pytest.fail(
            "Orthanc with its DICOMweb plugin is needed: `make test` installs the Debian "
            "packages orthanc and orthanc-dicomweb (as root)"
        )
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()
    shutil.rmtree(server.folder / "storage", ignore_errors=True)
