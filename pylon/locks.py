"""Exclusive folder locks: one pylon command at a time owns a run folder or a predict ``--out``.

The lock is an ``fcntl.flock`` on ``<folder>/.pylon.lock``, held for the command's life. The
kernel releases it when the holder exits, however it exits (kill -9 included), so the lock of a
dead process is simply taken over by the next command; the file itself stays (removing it would
race with a command that has just opened it) and records the holder (pid, host, start time, what)
for the message the next command gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".pylon.lock"


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock. Exits 1 with one line, as user errors do."""

    exit_code = 1


def alive_here(host: object, pid: int) -> bool:
    """Whether ``pid`` recorded with ``host`` (as a lock or a build records its holder) is a live
    process of this host. Another user's live process counts as alive."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return True


def _holder_text(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (
        f"{info.get('command', 'a pylon command')} (pid {info.get('pid', '?')} on host "
        f"{info.get('host', '?')}, started {info.get('started', '?')})"
    )


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) while the block runs.

    Args:
        folder: the folder to own, e.g. a run folder or a predict output folder.
        what: a short description of the holder, shown to a second command (e.g.
            ``"pylon train"``).

    Yields:
        The lock file's path (``folder/.pylon.lock``).

    Raises:
        FolderLockedError: another live process holds the lock; the message names the folder
            and the holder's command, pid, host and start time.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = folder / LOCK_NAME
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(
                f"{folder} is in use by {_holder_text(lock_file)}; wait for it to finish or "
                "stop it (a lock of a process that has exited is taken over automatically)"
            ) from None
        record = {
            "command": what,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield lock_file
    finally:
        os.close(fd)  # releases the flock
