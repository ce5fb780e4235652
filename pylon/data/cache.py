"""Resized-image cache: one uint8 ``.npy`` array per dataset split, size, layout, interpolation
and sources.

Decoding a 1024 px PNG costs far more than augmenting a 256 px array, so every image is decoded
and resized once into ``<cache_dir>/<key>.npy`` (N x S x S x C) with an index ``<key>.json``
holding the image ids, original sizes and what the cache is. Two layouts: ``square`` (each image
resized to S x S: exactly what the evaluation transform's resize gives) and ``fit`` (each image
scaled uniformly so that its longer side is at most S, never up-sampled, kept at the top left of
its S x S slot: training augmentation then sees the image's own shape, as the reference's
augmentation of the original file does). Building streams bounded chunks to
the file (memory does not grow with the cache); reads are file-backed (``pread`` of one image,
served from the OS page cache once hot), so loaders never hold the array in their own memory.

The cache folder may be shared with other files (``--cache-dir`` pointed at a project folder):
``pylon cache list``/``clear`` only touch files named as pylon names them whose index says
pylon wrote them. The index is written (marked ``building``) before the array, so an
interrupted build's temp file is recognised by its name and that index.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import cv2
import numpy as np

from pylon.data.images import DATASET_PNG16, read_image
from pylon.io import TEMP_PREFIX, TEMP_SUFFIX, atomic_path, write_text_atomic
from pylon.locks import alive_here
from pylon.progress import Progress

CACHE_VERSION = 2
CACHE_ENV = "PYLON_CACHE"
BUFFER_BYTES = 32 * 2**20  # pixels per decoding job (and so per write)
RESERVE_BYTES = 512 * 2**20  # free space left over after a build
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # write errors that name no file
# A cache's file stem (see ImageCache.open_or_build) and the temp files of its atomic writes.
_STEM = re.compile(r".+-[0-9]+px(?:-fit)?-[0-9]+ch-[a-z0-9]+-(?P<digest>[0-9a-f]{16})")
_TEMP = re.compile(
    re.escape(TEMP_PREFIX) + r"(?P<stem>.+)\.(?:npy|json)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX)
)
_INTERPOLATION_NAMES = {
    cv2.INTER_NEAREST: "nearest",
    cv2.INTER_LINEAR: "linear",
    cv2.INTER_CUBIC: "cubic",
    cv2.INTER_AREA: "area",
    cv2.INTER_LANCZOS4: "lanczos",
}
LAYOUTS = ("square", "fit")


class CacheSpaceError(ValueError):
    """The cache would not fit in the free space of its folder."""


def default_cache_dir() -> Path:
    """``$PYLON_CACHE`` if set, else ``~/.cache/pylon``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pylon")


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many small lasting objects (a
    split's records, a cache index): each few hundred of them would otherwise trigger a
    collection, and the older generations' rescans of a heap holding torch and pandas cost more
    than the objects themselves (78k records: 0.5 s instead of 0.05 s). Nothing is freed late:
    the objects are kept, and the collector resumes (as it was) on exit."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def stat_sources(paths: Sequence[str | os.PathLike]) -> tuple[str, list[int]]:
    """One ``os.stat`` per source file: the hash that keys the cache and the missing files.

    The hash covers each file's absolute path (``os.path.abspath``: no symlink resolution),
    size and modification time, in order, so a changed, added, removed or reordered file gives
    another hash (78k files take ~0.5 s, most of it the ``stat`` calls).

    Args:
        paths: the source files.

    Returns:
        The hex digest over the files found, and the indices of the paths that are missing or
        not regular files.
    """
    lines, missing = [], []
    for i, path in enumerate(paths):
        name = os.fspath(path)
        if not _is_normal_absolute(name):
            name = os.path.abspath(name)
        try:
            info = os.stat(name)
        except (FileNotFoundError, NotADirectoryError):
            missing.append(i)
            continue
        if not S_ISREG(info.st_mode):
            missing.append(i)
            continue
        lines.append(f"{name}\t{info.st_size}\t{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), missing


def _is_normal_absolute(name: str | bytes) -> bool:
    """Whether ``os.path.abspath(name) == name`` for sure, checked faster than abspath: absolute,
    no ``.``/``..`` component (nor a name starting with a dot), no ``//`` and no trailing slash
    (POSIX; elsewhere always ``False``, so abspath decides)."""
    return (
        os.sep == "/"
        and isinstance(name, str)
        and name[:1] == "/"
        and "/." not in name
        and "//" not in name
        and name[-1:] != "/"
    )


def source_hash(paths: Sequence[str | os.PathLike]) -> str:
    """Hash of the source files' absolute paths, sizes and modification times, in order
    (:func:`stat_sources`).

    Raises:
        FileNotFoundError: naming up to three missing files and how many are missing.
    """
    digest, missing = stat_sources(paths)
    if missing:
        first = ", ".join(os.path.abspath(paths[i]) for i in missing[:3])
        raise FileNotFoundError(f"{len(missing)} image file(s) not found, first: {first}")
    return digest


def estimate_bytes(n: int, size: int, channels: int, image_ids: Sequence[str] | None = None) -> int:
    """Bytes of a cache of ``n`` images of ``size`` x ``size`` x ``channels``.

    Args:
        n: the number of images.
        size: side of the cached square images.
        channels: 1 or 3.
        image_ids: the ids kept in the JSON index; when given, the index is counted too (the
            ids as JSON, 16 characters per original size, 1 KiB for the other fields).

    Returns:
        The pixels plus the array's 4 KiB header (plus the index when ``image_ids`` is given).
    """
    pixels = n * size * size * channels + 4096
    if image_ids is None:
        return pixels
    return pixels + len(json.dumps(list(image_ids))) + 16 * n + 1024


def check_free_space(cache_dir: Path, needed: int, what: str) -> int:
    """Refuse (:class:`CacheSpaceError`) when ``needed`` bytes would not fit in ``cache_dir``.

    Args:
        cache_dir: where the cache goes (created if missing).
        needed: its size in bytes.
        what: what is cached, for the message.

    Returns:
        The free bytes there.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir).free
    if needed + RESERVE_BYTES > free:
        raise CacheSpaceError(
            f"the image cache for {what} needs {format_bytes(needed)} in {cache_dir}, plus "
            f"{format_bytes(RESERVE_BYTES)} pylon leaves free for other programs, but only "
            f"{format_bytes(free)} is free there; free some space, or put the cache on a bigger "
            f"disk with {CACHE_ENV}=/path/to/dir or --set data.cache_dir=/path/to/dir (or "
            "--set data.options.cache=false to decode every image on the fly, ~10x slower); "
            "`pylon cache list` shows the caches there and `pylon cache clear` removes them"
        )
    return free


def fit_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The (H, W) of a ``height`` x ``width`` image in a ``fit`` cache of side ``size``: scaled
    uniformly so that the longer side is at most ``size`` (never up-sampled)."""
    scale = min(1.0, size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(
    path: Path, size: int, channels: int, interpolation: int, layout: str = "square"
) -> tuple[np.ndarray, int, int]:
    """Decode ``path`` into a ``size`` x ``size`` x ``channels`` slot; also return its original
    (H, W).

    Args:
        path: the image file.
        size: the slot's side.
        channels: 1 or 3.
        interpolation: OpenCV flag of the resize.
        layout: ``"square"`` resizes to ``size`` x ``size``; ``"fit"`` resizes to
            :func:`fit_shape` and zero-pads the slot's bottom and right.

    Returns:
        The uint8 slot ``(size, size, channels)`` and the original height and width.
    """
    image = read_image(path, channels, png16=DATASET_PNG16)
    height, width = image.shape[:2]
    if layout == "square":
        resized = cv2.resize(image, (size, size), interpolation=interpolation)
        return resized.reshape(size, size, channels), height, width
    fit_height, fit_width = fit_shape(height, width, size)
    if (fit_height, fit_width) != (height, width):
        image = cv2.resize(image, (fit_width, fit_height), interpolation=interpolation)
    slot = np.zeros((size, size, channels), np.uint8)
    slot[:fit_height, :fit_width] = image.reshape(fit_height, fit_width, channels)
    return slot, height, width


def _resize_many(args: tuple[list[Path], int, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    paths, size, channels, interpolation, layout = args
    pixels = np.empty((len(paths), size, size, channels), np.uint8)
    sizes = np.empty((len(paths), 2), np.int64)
    for i, path in enumerate(paths):
        pixels[i], sizes[i, 0], sizes[i, 1] = resize_image(
            path, size, channels, interpolation, layout
        )
    return pixels, sizes


def _one_opencv_thread() -> None:
    """Decoding processes' start-up: one OpenCV thread each (one process per CPU already). Not
    done in ``_resize_many`` itself, which also runs in the caller's process for a one-chunk
    build and left the caller with one OpenCV thread for good."""
    cv2.setNumThreads(1)


def _array_offset(array_path: Path) -> tuple[int, tuple[int, ...]]:
    """Byte offset of the pixels in a ``.npy`` file and the array's shape."""
    with open(array_path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(fh)
        if fortran or dtype != np.uint8:
            raise ValueError(f"{array_path}: not a pylon image cache")
        return fh.tell(), tuple(shape)


class ImageCache:
    """Read-only view of a built cache; each process opens the file itself and reads one image
    at a time (``pread``), so memory does not grow with the cache. An item is the image as
    cached: ``size`` x ``size`` (``square``) or its :func:`fit_shape` (``fit``)."""

    def __init__(
        self,
        array_path: Path,
        image_ids: list[str],
        original_sizes: np.ndarray,
        layout: str = "square",
    ):
        self.array_path = Path(array_path)
        self.image_ids = image_ids
        self.original_sizes = original_sizes  # (N, 2) int: height, width of each source image
        self.layout = layout
        self.offset, shape = _array_offset(self.array_path)
        self.image_shape = shape[1:]  # the slot: (S, S, C)
        self.image_bytes = int(np.prod(self.image_shape))
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.image_ids):
            raise IndexError(f"cache index {index} out of range for {len(self.image_ids)} images")
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.array_path, os.O_RDONLY), os.getpid()
        side, _, channels = self.image_shape
        height, width = side, side
        if self.layout == "fit":
            height, width = fit_shape(*self.original_sizes[index], side)
        image = np.empty((height, side, channels), np.uint8)  # only the rows the image fills
        got = os.preadv(self._fd, [image], self.offset + index * self.image_bytes)
        if got != image.nbytes:
            raise OSError(f"{self.array_path}: truncated cache (image {index}); delete it")
        return image if width == side else np.ascontiguousarray(image[:, :width])

    def __getstate__(self) -> dict:
        # Worker processes open the file themselves rather than inheriting a descriptor.
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    @classmethod
    def open_or_build(
        cls,
        name: str,
        image_ids: Sequence[str],
        paths: Sequence[Path],
        *,
        size: int,
        channels: int,
        interpolation: int,
        cache_dir: str | os.PathLike | None = None,
        workers: int | None = None,
        progress: bool = True,
        split: str = "",
        digest: str | None = None,
        layout: str = "square",
    ) -> ImageCache:
        """Open the cache for exactly these source files, building it first if needed.

        Args:
            name: the dataset's name (part of the file name).
            image_ids: one id per image, kept in the index.
            paths: the source files; their paths, sizes and mtimes key the cache, so a changed
                file gives a new cache.
            size: side of the cached square images.
            channels: 1 or 3.
            interpolation: OpenCV flag of the resize.
            cache_dir: where caches live (default :func:`default_cache_dir`).
            workers: decoding processes (default: one per available CPU, at most 8; 0 =
                in-process).
            progress: print where the cache goes and the build's progress (a bar in a terminal,
                plain count/rate/ETA lines in a log).
            split: the split's name (part of the file name, shown by ``pylon cache list``).
            digest: :func:`stat_sources`'s hash of ``paths`` when the caller has just computed
                it (a dataset checking its files exist), so that each file is stat-ed once.
            layout: ``"square"`` or ``"fit"`` (see the module's docstring).

        Returns:
            The opened cache.

        Raises:
            CacheSpaceError: the cache would not fit in ``cache_dir``'s free space.
        """
        if workers is None:
            from pylon.data.workers import available_cpus

            workers = min(8, available_cpus())
        if len(image_ids) != len(paths):
            raise ValueError("image_ids and paths must have the same length")
        if layout not in LAYOUTS:
            raise ValueError(f"cache layout must be one of {LAYOUTS}, got {layout!r}")
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        digest = source_hash(paths) if digest is None else digest
        interp = _INTERPOLATION_NAMES.get(interpolation, str(interpolation))
        label = f"{name}-{split}" if split else name
        shape = f"{size}px" if layout == "square" else f"{size}px-fit"
        stem = f"{label}-{shape}-{channels}ch-{interp}-{digest[:16]}"
        array_path, index_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        cache = cls._open(array_path, index_path, digest, len(paths), layout)
        if cache is not None:
            return cache
        what = f"{name} {split}".strip()
        needed = estimate_bytes(len(paths), size, channels, image_ids)
        free = check_free_space(cache_dir, needed, what)
        if progress:
            at = f"{size} px" if layout == "square" else f"at most {size} px"
            print(
                f"caching {what}: {len(paths)} images at {at} -> {array_path} "
                f"({format_bytes(needed)}; {format_bytes(free)} free there)",
                file=sys.stderr,
                flush=True,
            )
        index = {
            "version": CACHE_VERSION,
            "source_hash": digest,
            "name": name,
            "split": split,
            "size": size,
            "layout": layout,
            "channels": channels,
            "interpolation": interp,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        # Written first, so that a killed build's files are still recognisably pylon's.
        building = {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            write_text_atomic(index_path, json.dumps({**index, "building": building}))
            sizes = _build(
                array_path,
                list(paths),
                size,
                channels,
                interpolation,
                workers,
                progress,
                what,
                layout,
            )
            index.update(image_ids=list(image_ids), original_sizes=sizes.tolist())
            write_text_atomic(index_path, json.dumps(index))
        except BaseException as err:
            index_path.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno in _FULL and err.filename is None:
                # "[Errno 28] No space left on device" alone does not say where
                raise OSError(err.errno, f"cannot write: {err.strerror}", str(array_path)) from err
            raise
        return cls(array_path, list(image_ids), sizes, layout)

    @classmethod
    def _open(
        cls, array_path: Path, index_path: Path, digest: str, n: int, layout: str
    ) -> ImageCache | None:
        if not (array_path.is_file() and index_path.is_file()):
            return None
        try:
            with gc_paused():
                index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if (
            index.get("version") != CACHE_VERSION
            or "building" in index
            or index.get("source_hash") != digest
            or len(index.get("image_ids", ())) != n
            or index.get("layout", "square") != layout
        ):
            return None
        sizes = np.asarray(index["original_sizes"], dtype=np.int64).reshape(n, 2)
        try:
            cache = cls(array_path, list(index["image_ids"]), sizes, layout)
        except (OSError, ValueError):
            return None
        expected = cache.offset + n * cache.image_bytes
        return cache if array_path.stat().st_size == expected else None


def _build(
    array_path: Path,
    paths: list[Path],
    size: int,
    channels: int,
    interpolation: int,
    workers: int,
    progress: bool,
    what: str,
    layout: str,
) -> np.ndarray:
    """Write the resized images to ``array_path`` atomically; return the original (H, W) sizes.

    Chunks of at most :data:`BUFFER_BYTES` are decoded (by ``workers`` processes, at most
    ``workers + 1`` chunks in flight) and appended to the file in order, so memory stays bounded
    whatever the number of images.
    """
    n = len(paths)
    sizes = np.zeros((n, 2), dtype=np.int64)
    chunk = max(1, min(256, BUFFER_BYTES // (size * size * channels)))
    jobs = [
        (paths[i : i + chunk], size, channels, interpolation, layout) for i in range(0, n, chunk)
    ]
    header = {"descr": "|u1", "fortran_order": False, "shape": (n, size, size, channels)}
    pool = None
    if workers > 0 and len(jobs) > 1:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_one_opencv_thread)
    with (
        atomic_path(array_path) as tmp,
        open(tmp, "wb") as fh,
        Progress(f"caching {what}", total=n, enabled=progress) as bar,
    ):
        np.lib.format.write_array_header_2_0(fh, header)
        try:
            pending: deque = deque()
            queue = iter(jobs)
            start = 0
            while True:
                while pool is not None and len(pending) < workers + 1:
                    job = next(queue, None)
                    if job is None:
                        break
                    pending.append(pool.submit(_resize_many, job))
                if pool is None:
                    job = next(queue, None)
                    if job is None:
                        break
                    pixels, chunk_sizes = _resize_many(job)
                elif pending:
                    pixels, chunk_sizes = pending.popleft().result()
                else:
                    break
                fh.write(memoryview(pixels).cast("B"))
                sizes[start : start + len(chunk_sizes)] = chunk_sizes
                start += len(chunk_sizes)
                bar.advance(len(chunk_sizes))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        fh.flush()
    return sizes


@dataclass
class CacheEntry:
    """One cache on disk, as ``pylon cache list`` shows it."""

    stem: str
    files: list[Path]
    bytes: int
    name: str = "?"
    split: str = ""
    size: int = 0
    layout: str = "square"
    channels: int = 0
    interpolation: str = "?"
    images: int = 0
    created: str = ""
    complete: bool = True  # False: an interrupted build, or an older version's cache
    building: str = ""  # "pid N": a build still running on this host (left alone by clear)


def _pylon_index(index_path: Path, stem: str) -> dict | None:
    """The index at ``index_path`` when pylon wrote it for the cache ``stem`` (its source hash
    ends the stem), else ``None`` (missing, unreadable, or someone else's JSON)."""
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        return None
    digest = _STEM.fullmatch(stem)["digest"]
    if not isinstance(index, dict) or str(index.get("source_hash", ""))[:16] != digest:
        return None
    return index


def _live_build(index: dict) -> str:
    """``"pid N"`` when the index's build is still running on this host, else ``""``."""
    building = index.get("building")
    if not isinstance(building, dict):
        return ""
    pid = building.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not alive_here(building.get("host"), pid):
        return ""
    return f"pid {pid}"


def list_caches(cache_dir: str | os.PathLike | None = None) -> list[CacheEntry]:
    """The caches pylon wrote in ``cache_dir`` (default :func:`default_cache_dir`), largest
    first. Other files in the folder are ignored.

    A cache is the ``<stem>.npy`` and ``<stem>.json`` of a stem as pylon names them, whose index
    is pylon's (its source hash ends the stem), plus the temp files of its atomic writes
    (``.<stem>.npy.XXXXXXXX.tmp``: an interrupted build). Temp files so named without an index
    (interrupted builds of versions that wrote the index last) are listed as incomplete too.

    Args:
        cache_dir: the folder.

    Returns:
        One entry per cache.

    Raises:
        NotADirectoryError: ``cache_dir`` exists but is not a folder.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder (expected the cache folder)")
    if not folder.is_dir():
        return []
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        temp = _TEMP.fullmatch(path.name)
        stem = temp["stem"] if temp else path.stem if path.suffix in (".npy", ".json") else ""
        if _STEM.fullmatch(stem) and path.is_file():
            found.setdefault(stem, []).append(path)
    entries = []
    for stem, files in found.items():
        array, index_path = folder / f"{stem}.npy", folder / f"{stem}.json"
        index = _pylon_index(index_path, stem) if index_path in files else None
        if index is None:
            files = [p for p in files if _TEMP.fullmatch(p.name)]
            if not files:
                continue  # a pylon-like name, but nothing says pylon wrote it
        entry = CacheEntry(stem, files, sum(p.stat().st_size for p in files), complete=False)
        if index is not None:
            entry.name = str(index.get("name", "?"))
            entry.split = str(index.get("split", ""))
            entry.size = int(index.get("size", 0))
            entry.layout = str(index.get("layout", "square"))
            entry.channels = int(index.get("channels", 0))
            entry.interpolation = str(index.get("interpolation", "?"))
            entry.images = len(index.get("image_ids", ()))
            entry.created = str(index.get("created", ""))
            entry.building = _live_build(index)
            entry.complete = (
                index.get("version") == CACHE_VERSION and "building" not in index and array in files
            )
        entries.append(entry)
    return sorted(entries, key=lambda e: -e.bytes)


def clear_caches(
    cache_dir: str | os.PathLike | None = None, name: str | None = None
) -> list[CacheEntry]:
    """Delete the caches pylon wrote in ``cache_dir`` (only those of dataset ``name`` if given);
    other files, and builds still running, are left alone.

    Args:
        cache_dir: the folder (default :func:`default_cache_dir`).
        name: a dataset name (``nih14``); leftovers whose index is gone go only when it is
            ``None``.

    Returns:
        The entries removed.
    """
    removed = []
    for entry in list_caches(cache_dir):
        if entry.building or (name is not None and entry.name != name):
            continue
        for path in entry.files:
            path.unlink(missing_ok=True)
        removed.append(entry)
    return removed
