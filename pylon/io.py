"""Atomic file writes: every result and checkpoint goes through a temp file and a rename."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask: from /proc where it can be read without changing it (thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete temp files that an interrupted :func:`atomic_path` write of ``folder/name`` left.

    Args:
        folder: the folder the file lives in.
        name: the file's name (e.g. ``"last.ckpt"``); only ``.<name>.*.tmp`` files are removed.

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(f"{TEMP_PREFIX}{name}.*{TEMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    A crash while writing leaves the previous file (if any) untouched and no partial file. The
    file gets the permissions a plain ``open()`` would give it under the current umask (mkstemp
    alone would make it private, 0600), so colleagues on a shared server can read results.

    Args:
        path: the destination file.

    Returns:
        A context manager yielding the temporary path to write.

    Raises:
        OSError: a failed write (a full disk, a quota, a read-only folder) names ``path``, the
            file the user asked for, not the hidden temporary file or no file at all (a library
            error that is a full disk, e.g. torch.save's RuntimeError, becomes ``ENOSPC`` naming
            ``path``); errors about other files raised in the block pass unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
        )
        tmp_path = Path(tmp)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as err:
        if _about(err, path):
            raise _naming(err, path) from err
        raise
    except Exception as err:
        # torch.save and safetensors report a full disk as RuntimeError / SafetensorError
        if _disk_full(err, path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _about(err: OSError, path: Path) -> bool:
    """Whether ``err`` is about writing ``path``: it names no file, ``path`` or one of its
    temporary files."""
    if not isinstance(err.filename, str | bytes | os.PathLike):
        return True  # None, or a file descriptor
    named = Path(os.fsdecode(err.filename))
    return named == path or (
        named.parent == path.parent and named.name.startswith(f"{TEMP_PREFIX}{path.name}.")
    )


def _disk_full(err: Exception, folder: Path) -> bool:
    """Whether a library's non-OSError ``err`` is a full disk: its text says so, or ``folder``'s
    file system has no block left for us."""
    if not isinstance(err, RuntimeError) and type(err).__module__ == "builtins":
        return False  # a KeyError or TypeError is a bug, whatever the disk
    text = str(err)
    if "No space left on device" in text or "StorageFull" in text:
        return True
    try:
        return os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):
        return False


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` again (same errno, hence the same subclass) naming ``path``: ``[Errno 28] No space
    left on device`` alone does not say which of a command's outputs could not be written."""
    return OSError(err.errno, err.strerror or str(err) or type(err).__name__, str(path))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv_atomic(frame, path: str | os.PathLike, **to_csv_kwargs) -> None:
    """Write a pandas DataFrame to CSV atomically (``index=False`` unless given)."""
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)
