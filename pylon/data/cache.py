"""Resized-image cache: one uint8 memmap per dataset, size, interpolation and source list.

Decoding a 1024 px PNG costs far more than augmenting a 256 px array, so every image is decoded
and resized once into ``<cache_dir>/<key>.npy`` (N x S x S x C) with an index ``<key>.json``
holding the image ids and original sizes; loaders then read slices of the memmap.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from rich.progress import Progress

from pylon.data.images import read_image
from pylon.io import atomic_path, write_text_atomic

CACHE_VERSION = 1
_INTERPOLATION_NAMES = {
    cv2.INTER_NEAREST: "nearest",
    cv2.INTER_LINEAR: "linear",
    cv2.INTER_CUBIC: "cubic",
    cv2.INTER_AREA: "area",
    cv2.INTER_LANCZOS4: "lanczos",
}


def default_cache_dir() -> Path:
    """``$PYLON_CACHE`` if set, else ``~/.cache/pylon``."""
    return Path(os.environ.get("PYLON_CACHE") or Path.home() / ".cache" / "pylon")


def source_hash(paths: Sequence[Path]) -> str:
    """Hash of the source files' paths, sizes and modification times, in order."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{Path(path).resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def resize_image(
    path: Path, size: int, channels: int, interpolation: int
) -> tuple[np.ndarray, int, int]:
    """Decode ``path`` and resize it to ``size`` x ``size``; also return its original (H, W)."""
    image = read_image(path, channels)
    height, width = image.shape[:2]
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    return resized.reshape(size, size, channels), height, width


def _resize_many(args: tuple[list[Path], int, int, int]) -> list[tuple[np.ndarray, int, int]]:
    paths, size, channels, interpolation = args
    return [resize_image(p, size, channels, interpolation) for p in paths]


class ImageCache:
    """Read-only view of a built cache; the memmap is opened lazily in each process."""

    def __init__(self, array_path: Path, image_ids: list[str], original_sizes: np.ndarray):
        self.array_path = Path(array_path)
        self.image_ids = image_ids
        self.original_sizes = original_sizes  # (N, 2) int: height, width of each source image
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return np.array(self._array[index])

    def __getstate__(self) -> dict:
        # Worker processes reopen the memmap rather than receiving a pickled copy of it.
        return {**self.__dict__, "_array": None}

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
    ) -> ImageCache:
        """Open the cache for exactly these source files, building it first if needed.

        ``workers`` decoding processes build it (default: up to 8, one per CPU; 0 = in-process).
        """
        if workers is None:
            workers = min(8, os.cpu_count() or 1)
        if len(image_ids) != len(paths):
            raise ValueError("image_ids and paths must have the same length")
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        digest = source_hash(paths)
        interp = _INTERPOLATION_NAMES.get(interpolation, str(interpolation))
        stem = f"{name}-{size}px-{channels}ch-{interp}-{digest[:16]}"
        array_path, index_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        cache = cls._open(array_path, index_path, digest, len(paths))
        if cache is None:
            sizes = _build(
                array_path, list(paths), size, channels, interpolation, workers, progress
            )
            index = {
                "version": CACHE_VERSION,
                "source_hash": digest,
                "image_ids": list(image_ids),
                "original_sizes": sizes.tolist(),
            }
            write_text_atomic(index_path, json.dumps(index))
            cache = cls(array_path, list(image_ids), sizes)
        return cache

    @classmethod
    def _open(cls, array_path: Path, index_path: Path, digest: str, n: int) -> ImageCache | None:
        if not (array_path.is_file() and index_path.is_file()):
            return None
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if (
            index.get("version") != CACHE_VERSION
            or index.get("source_hash") != digest
            or len(index.get("image_ids", ())) != n
        ):
            return None
        sizes = np.asarray(index["original_sizes"], dtype=np.int64).reshape(n, 2)
        return cls(array_path, list(index["image_ids"]), sizes)


def _build(
    array_path: Path,
    paths: list[Path],
    size: int,
    channels: int,
    interpolation: int,
    workers: int,
    progress: bool,
) -> np.ndarray:
    """Write the resized images to ``array_path`` atomically; return the original (H, W) sizes."""
    n = len(paths)
    sizes = np.zeros((n, 2), dtype=np.int64)
    chunk = 64
    jobs = [(paths[i : i + chunk], size, channels, interpolation) for i in range(0, n, chunk)]
    with atomic_path(array_path) as tmp, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"caching {n} images at {size} px", total=n)
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, channels)
        )
        if workers > 0 and len(jobs) > 1:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(_resize_many, jobs)
        else:
            pool, results = None, map(_resize_many, jobs)
        try:
            start = 0
            for batch in results:
                for offset, (image, height, width) in enumerate(batch):
                    out[start + offset] = image
                    sizes[start + offset] = (height, width)
                start += len(batch)
                bar.advance(task, len(batch))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        out.flush()
        del out
    return sizes
