"""Decoding a data set's images into rows of uint8 pixels, in parallel, with progress on stderr.

A pool of forked workers splits the files between them; each writes its rows straight into the destination (the
cache file, or shared anonymous memory when nothing is cached), a block at a time, so no process ever holds the
decoded set, and only the indices of unreadable images travel back. Forked, not spawned: the workers inherit the
data set and its face detector as they are, with nothing pickled. Small sets decode in the calling process, where
a pool would cost more than it saves.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import sys
import time
from typing import Protocol

import numpy as np
import torch

from ..errors import DataError
from .base import FERDataset, ImageReadError
from .preprocess import pil_to_array

MIN_PARALLEL = 256  # images; below this a pool's start-up costs more than the decode it shares out


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which a job scheduler narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class RowSink(Protocol):
    """Where decoded rows go: :class:`SharedRows` or the cache file's :class:`~fdrl.data.cachefile.RowWriter`."""

    def write(self, start: int, block: np.ndarray) -> None: ...

    def compact(self, keep: np.ndarray) -> None: ...


class SharedRows:
    """The destination of a decode that is not cached: (N, C, H, W) uint8 rows in shared anonymous memory, which
    forked decode workers write into; ``rows[:n]`` after :meth:`compact` are the readable images."""

    def __init__(self, shape: tuple[int, int, int, int]) -> None:
        count = int(np.prod(shape))
        self.rows = np.frombuffer(mmap.mmap(-1, max(1, count)), dtype=np.uint8, count=count).reshape(shape)

    def write(self, start: int, block: np.ndarray) -> None:
        self.rows[start:start + len(block)] = block

    def compact(self, keep: np.ndarray, chunk: int = 1024) -> None:
        """Move rows ``keep`` (ascending indices) to the front, in place, a chunk at a time."""
        moved = np.flatnonzero(keep != np.arange(len(keep)))
        for j in range(int(moved[0]) if len(moved) else len(keep), len(keep), chunk):
            src = keep[j:j + chunk]
            self.rows[j:j + len(src)] = self.rows[src]  # src >= destination, ascending: nothing needed is overwritten


# The decode in progress, set before the pool forks so that its workers inherit it: (data set, destination,
# size, grayscale, source_size).
_JOB: tuple[FERDataset, RowSink, int, bool, int | None] | None = None


def _decode_range(bounds: tuple[int, int]) -> tuple[int, list[tuple[int, str]]]:
    """Decode samples ``[start, stop)`` of the current job and write them as one block (an unreadable image
    leaves a row of zeros); returns how many were tried and the (index, reason) of those that could not be read
    (in strict mode the range stops at the first)."""
    assert _JOB is not None
    ds, sink, size, grayscale, source_size = _JOB
    start, stop = bounds
    block = np.zeros((stop - start, 1 if grayscale else 3, size, size), np.uint8)
    failed = []
    for i in range(start, stop):
        try:
            block[i - start] = pil_to_array(ds.load(i), size, grayscale, source_size)
        except ImageReadError as exc:
            failed.append((i, str(exc)))
            if ds.on_error == "strict":
                break
    sink.write(start, block)
    return stop - start, failed


def _init_worker() -> None:
    torch.set_num_threads(1)  # a face detector's torch ops: one thread per worker, the pool fills the cores


class _Progress:
    """A decode's progress on stderr: a first line when it starts (at MIN_PARALLEL images or more; a smaller decode
    only once it has run ``every`` seconds, so evaluating a handful of images prints nothing), then
    ``decoding NAME: i/N (p %), r img/s, ETA`` redrawn in place on a terminal or every ``every`` seconds otherwise,
    and a closing line with the count, time and rate."""

    def __init__(self, label: str, total: int, workers: int, every: float = 10.0) -> None:
        self.label, self.total, self.workers, self.every = label, total, workers, every
        self.tty = sys.stderr.isatty()
        self.t0 = self.last = time.monotonic()
        self.done, self.shown = 0, False
        if total >= MIN_PARALLEL:
            self._start()

    def _start(self) -> None:
        self.shown = True
        print(f"decoding {self.label}: {self.total} images, {self.workers} worker "
              f"process{'es' if self.workers > 1 else ''}", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if not self.shown:
            if now - self.t0 < self.every:
                return
            self._start()
        if now - self.last < (0.5 if self.tty else self.every) or self.done >= self.total:
            return  # the last line is close()'s
        self.last = now
        rate = self.done / max(1e-9, now - self.t0)
        eta = (self.total - self.done) / max(rate, 1e-9)
        line = (f"decoding {self.label}: {self.done}/{self.total} ({100 * self.done / max(1, self.total):.0f} %), "
                f"{rate:.0f} img/s, ETA {eta:.0f} s")
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self, unreadable: int) -> None:
        if not self.shown:
            return
        seconds = time.monotonic() - self.t0
        clear = "\r\033[K" if self.tty else ""  # over the progress line
        print(f"{clear}decoded {self.label}: {self.done} images in {seconds:.1f} s "
              f"({self.done / max(seconds, 1e-9):.0f} img/s), {unreadable} unreadable", file=sys.stderr, flush=True)


def decode_rows(ds: FERDataset, sink: RowSink, size: int, grayscale: bool, source_size: int | None = None,
                workers: int | None = None) -> dict[int, str]:
    """Decode every sample of ``ds`` into row ``i`` of ``sink`` ((C, size, size) uint8 each); returns
    {index: reason} of the unreadable ones. ``workers``: processes (None: every available core). In
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
    _JOB = (ds, sink, size, grayscale, source_size)
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
    progress.close(len(failed))
    return dict(sorted(failed.items()))
