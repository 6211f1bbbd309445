"""Decoding a data set's images into rows of uint8 pixels, in parallel, with progress on stderr.

A pool of forked workers splits the files between them; each writes its rows straight into the destination (the
cache file's map, or shared anonymous memory), so no process ever holds the decoded set, and only the indices
of unreadable images travel back. Forked, not spawned: the workers inherit the data set and its face detector
as they are, with nothing pickled. Small sets decode in the calling process, where a pool would cost more than
it saves.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .base import FERDataset, ImageReadError

MIN_PARALLEL = 256  # images; below this a pool's start-up costs more than the decode it shares out


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which a job scheduler narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pil_to_array(im: Image.Image, size: int, grayscale: bool, source_size: int | None = None) -> np.ndarray:
    """The preprocessing resize: RGB PIL -> (C, size, size) uint8, through ``source_size`` when the crop is
    larger than that (``Preprocessing.source_size``)."""
    im = im.convert("L") if grayscale else im.convert("RGB")
    if source_size is not None and max(im.size) > source_size:
        im = im.resize((source_size, source_size), Image.BILINEAR)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if grayscale else arr.transpose(2, 0, 1)


# The decode in progress, set before the pool forks so that its workers inherit it: (data set, destination rows,
# size, grayscale, source_size).
_JOB: tuple[FERDataset, np.ndarray, int, bool, int | None] | None = None


def _decode_range(bounds: tuple[int, int]) -> tuple[int, list[tuple[int, str]]]:
    """Decode samples ``[start, stop)`` of the current job into its rows; returns how many were tried and the
    (index, reason) of those that could not be read (in strict mode the range stops at the first)."""
    assert _JOB is not None
    ds, rows, size, grayscale, source_size = _JOB
    failed = []
    for i in range(*bounds):
        try:
            rows[i] = pil_to_array(ds.load(i), size, grayscale, source_size)
        except ImageReadError as exc:
            failed.append((i, str(exc)))
            if ds.on_error == "strict":
                break
    return bounds[1] - bounds[0], failed


def _init_worker() -> None:
    torch.set_num_threads(1)  # a face detector's torch ops: one thread per worker, the pool fills the cores


class _Progress:
    """``decoding NAME: i/N (p %), r img/s, ETA`` on stderr: redrawn in place on a terminal, else a line every
    ``every`` seconds (none for a decode shorter than that)."""

    def __init__(self, label: str, total: int, workers: int, every: float = 10.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.tty = sys.stderr.isatty()
        self.t0 = self.last = time.monotonic()
        self.done = 0
        print(f"decoding {label}: {total} images, {workers} worker process{'es' if workers > 1 else ''}",
              file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < (0.5 if self.tty else self.every) and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(1e-9, now - self.t0)
        eta = (self.total - self.done) / max(rate, 1e-9)
        line = (f"decoding {self.label}: {self.done}/{self.total} ({100 * self.done / max(1, self.total):.0f} %), "
                f"{rate:.0f} img/s, ETA {eta:.0f} s")
        if self.tty:
            print(f"\r{line}", end="\n" if self.done >= self.total else "", file=sys.stderr, flush=True)
        elif now - self.t0 >= self.every:
            print(line, file=sys.stderr, flush=True)


def decode_rows(ds: FERDataset, rows: np.ndarray, size: int, grayscale: bool, source_size: int | None = None,
                workers: int | None = None) -> dict[int, str]:
    """Decode every sample of ``ds`` into ``rows[i]`` ((N, C, size, size) uint8, shared memory or a file map);
    returns {index: reason} of the unreadable ones. ``workers``: processes (None: every available core). In
    ``on_error="strict"`` mode the first unreadable image is a :class:`DataError` naming the file."""
    global _JOB
    n = len(ds)
    workers = available_cores() if workers is None else workers
    if workers < 1:
        raise DataError(f"decode workers must be >= 1, got {workers}")
    workers = min(workers, max(1, n // (MIN_PARALLEL // 2)))
    if "fork" not in mp.get_all_start_methods():
        workers = 1
    chunk = int(np.clip(n // (workers * 16), 16, 256))
    ranges = [(a, min(n, a + chunk)) for a in range(0, n, chunk)]
    progress = _Progress(f"{ds.name}/{ds.split}", n, workers)
    failed: dict[int, str] = {}
    _JOB = (ds, rows, size, grayscale, source_size)
    try:
        if workers == 1:
            results = map(_decode_range, ranges)
            pool = None
        else:
            pool = mp.get_context("fork").Pool(workers, initializer=_init_worker)
            results = pool.imap_unordered(_decode_range, ranges)
        try:
            for tried, bad in results:
                failed.update(bad)
                if bad and ds.on_error == "strict":
                    i, why = min(bad)
                    s = ds.samples[i]
                    raise DataError(f"{ds.name}: {s.path or s.id}: {why}")
                progress.update(tried)
        except BaseException:
            if pool is not None:
                pool.terminate()
            raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    finally:
        _JOB = None
    return dict(sorted(failed.items()))


def compact_rows(rows: np.ndarray, keep: np.ndarray, chunk: int = 1024) -> int:
    """Move rows ``keep`` (ascending indices) to the front of ``rows``, in place and a chunk at a time, so the
    unreadable images leave no gaps; returns how many rows are kept."""
    moved = np.flatnonzero(keep != np.arange(len(keep)))
    start = int(moved[0]) if len(moved) else len(keep)
    for j in range(start, len(keep), chunk):
        src = keep[j:j + chunk]
        rows[j:j + len(src)] = rows[src]  # src >= destination, ascending: nothing read later is overwritten
    return len(keep)
