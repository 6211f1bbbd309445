"""The decode cache on disk: one file per split and preprocessing, memory-mapped by every process that uses it.

A file is mapped, never loaded, and batches are read from it with positioned reads (:class:`RowReader`): the
ranks of a node share its pages through the page cache, so a node holds one copy of a split however many
processes train on it, and a process's own memory does not grow with the set.

Layout (little-endian)::

    0      MAGIC (8 bytes)
    8      header length L (uint32)
    12     header: UTF-8 JSON {"format", "shape": [N, C, H, W], "meta_bytes", "meta_sha256"}
    12+L   SHA-256 of the header (32 bytes)
    ...    zeros up to DATA_OFFSET
    4096   N rows of C x H x W uint8 pixels
    ...    meta: UTF-8 JSON {"ids", "labels", "targets", "skipped"}

A file is written under a temporary name and renamed when complete, so a reader never sees one half written; on
opening, the magic, the header's checksum, the shape asked for, the file's size and the meta's checksum are
checked, and any mismatch (a truncated copy, a damaged disk block, another version's file) is a
:class:`CacheFileError` that the caller answers by decoding again. The pixels themselves carry no checksum:
hashing them would read the whole file on every start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

MAGIC = b"FDRLROWS"
FORMAT = 1
DATA_OFFSET = 4096  # the rows start on a page boundary, so a row never straddles the header's page
SUFFIX = ".rows"
_HEAD = struct.Struct("<8sI")


class CacheFileError(DataError):
    """A cache file that cannot be trusted (truncated, damaged, or not of this format): decode again."""


def file_bytes(shape: tuple[int, int, int, int], meta_bytes: int = 0) -> int:
    """Size of a cache file of ``shape`` rows: header block + N x C x H x W bytes + meta."""
    return DATA_OFFSET + int(np.prod(shape)) + meta_bytes


def _pwrite(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:  # a write may be cut short
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class RowWriter:
    """A cache file being written. Rows go in with :meth:`write` (positioned writes on a descriptor that forked
    decode workers inherit: no process maps the file while it grows, so none counts its pages), :meth:`compact`
    closes the gaps of unreadable images, :meth:`commit` appends the meta and renames the file into place. Used
    as a context manager: leaving it without a commit removes the temporary file."""

    def __init__(self, path: Path, shape: tuple[int, int, int, int]) -> None:
        self.path, self.shape = Path(path), shape
        self.row_bytes = int(np.prod(shape[1:]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        need = file_bytes(shape)
        free = shutil.disk_usage(self.path.parent).free
        if need > free:
            raise DataError(f"the decode cache of {self.path.name} needs {need / 2**30:.2f} GiB in {self.path.parent}, "
                            f"which has {free / 2**30:.2f} GiB free; set data.cache_dir to a larger disk "
                            f"(or data.cache=false)")
        self.fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp = Path(tmp)
        try:
            if hasattr(os, "posix_fallocate"):  # reserve the blocks: a full disk is an error now, not a SIGBUS later
                os.posix_fallocate(self.fd, 0, need)
            else:
                os.ftruncate(self.fd, need)
        except OSError as exc:
            self.__exit__()
            raise DataError(f"cannot create the decode cache file in {self.path.parent}: {exc}") from exc

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)

    def write(self, start: int, block: np.ndarray) -> None:
        """Rows ``start .. start + len(block)`` ((B, C, H, W) uint8); safe from several processes at once."""
        _pwrite(self.fd, np.ascontiguousarray(block, dtype=np.uint8).data, DATA_OFFSET + start * self.row_bytes)

    def compact(self, keep: np.ndarray, chunk: int = 256) -> None:
        """Move rows ``keep`` (ascending indices) to the front, a run of consecutive rows at a time."""
        dest = 0
        for run in np.split(keep, np.flatnonzero(np.diff(keep) != 1) + 1) if len(keep) else []:
            if run[0] == dest:
                dest += len(run)
                continue
            for a in range(0, len(run), chunk):  # destination before source: a chunk read is never overwritten
                n = min(chunk, len(run) - a)
                data = os.pread(self.fd, n * self.row_bytes, DATA_OFFSET + int(run[a]) * self.row_bytes)
                _pwrite(self.fd, data, DATA_OFFSET + (dest + a) * self.row_bytes)
            dest += len(run)

    def commit(self, n: int, meta: dict[str, Any]) -> None:
        """Keep rows ``[:n]``; write the meta and the header, flush to disk, rename into place."""
        shape = (n, *self.shape[1:])
        blob = json.dumps(meta, separators=(",", ":")).encode()
        header = json.dumps({"format": FORMAT, "shape": list(shape), "meta_bytes": len(blob),
                             "meta_sha256": hashlib.sha256(blob).hexdigest()}).encode()
        assert _HEAD.size + len(header) + 32 <= DATA_OFFSET, "the header outgrew its block"
        end = file_bytes(shape)
        _pwrite(self.fd, blob, end)
        os.ftruncate(self.fd, end + len(blob))
        _pwrite(self.fd, _HEAD.pack(MAGIC, len(header)) + header + hashlib.sha256(header).digest(), 0)
        os.fsync(self.fd)
        os.fchmod(self.fd, 0o644)  # mkstemp creates 0600; a cache is shared by the users of a machine
        os.replace(self.tmp, self.path)


class RowReader:
    """Rows of a cache file read with positioned reads: through the page cache that a node's processes share,
    without mapping the pages into the reading process. A page touched through a map stays in the process's
    resident set (on recent kernels a whole multi-page folio per row), so an epoch read through the map would show
    the whole file in every rank's RSS; read this way, a rank's RSS holds the batch."""

    def __init__(self, fd: int, row_shape: tuple[int, int, int]) -> None:
        self.fd, self.row_shape = fd, tuple(row_shape)
        self.row_bytes = int(np.prod(row_shape))
        weakref.finalize(self, os.close, fd)

    def read(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (ascending) as a (B, C, H, W) uint8 array; one read per run of consecutive rows."""
        out = np.empty((len(index), *self.row_shape), np.uint8)
        flat = out.reshape(len(index), -1)
        starts = np.flatnonzero(np.diff(index) != 1) + 1
        for a, b in zip([0, *starts], [*starts, len(index)], strict=True):
            if b > a:
                n = os.preadv(self.fd, [flat[a:b]], DATA_OFFSET + int(index[a]) * self.row_bytes)
                if n != (b - a) * self.row_bytes:
                    raise CacheFileError(f"cache file (descriptor {self.fd}): short read at row {int(index[a])}")
        return out


def read_rows(path: Path, row_shape: tuple[int, int, int]) -> tuple[np.ndarray, RowReader | None, dict[str, Any]]:
    """The pixels of a cache file, mapped copy-on-write ((N, C, H, W) uint8; writes stay private to the process
    and never reach the file), a :class:`RowReader` of the same file (None for an empty one), and its meta;
    :class:`CacheFileError` naming what does not fit. Everything comes from one open of the file, so a file
    replaced meanwhile is not mixed with the one checked."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(DATA_OFFSET)
        if len(head) < _HEAD.size:
            raise CacheFileError(f"{path}: {size} bytes, shorter than a header")
        magic, n = _HEAD.unpack_from(head)
        if magic != MAGIC:
            raise CacheFileError(f"{path}: not an fdrl row cache (magic {magic!r})")
        if _HEAD.size + n + 32 > len(head):
            raise CacheFileError(f"{path}: header length {n} runs past the header block")
        header = head[_HEAD.size:_HEAD.size + n]
        if hashlib.sha256(header).digest() != head[_HEAD.size + n:_HEAD.size + n + 32]:
            raise CacheFileError(f"{path}: header checksum does not match")
        h = json.loads(header)
        if h.get("format") != FORMAT:
            raise CacheFileError(f"{path}: format {h.get('format')}, this version reads {FORMAT}")
        shape = tuple(h["shape"])
        if len(shape) != 4 or shape[1:] != tuple(row_shape):
            raise CacheFileError(f"{path}: rows of shape {shape[1:]}, expected {tuple(row_shape)}")
        want = file_bytes(shape, h["meta_bytes"])
        if size != want:
            raise CacheFileError(f"{path}: {size} bytes, expected {want} for {shape[0]} rows (truncated?)")
        fh.seek(file_bytes(shape))
        blob = fh.read(h["meta_bytes"])
        if hashlib.sha256(blob).hexdigest() != h["meta_sha256"]:
            raise CacheFileError(f"{path}: meta checksum does not match")
        meta = json.loads(blob)
        if not len(meta["ids"]) == len(meta["labels"]) == len(meta["targets"]) == shape[0]:
            raise CacheFileError(f"{path}: meta lists {len(meta['ids'])} ids for {shape[0]} rows")
        if shape[0] == 0:
            return np.zeros(shape, np.uint8), None, meta
        rows = np.memmap(fh, dtype=np.uint8, mode="c", offset=DATA_OFFSET, shape=shape)
        return rows, RowReader(os.dup(fh.fileno()), row_shape), meta
