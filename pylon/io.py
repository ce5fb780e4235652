"""Atomic file writes: every result and checkpoint goes through a temp file and a rename."""

from __future__ import annotations

import contextlib
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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv_atomic(frame, path: str | os.PathLike, **to_csv_kwargs) -> None:
    """Write a pandas DataFrame to CSV atomically (``index=False`` unless given)."""
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)
