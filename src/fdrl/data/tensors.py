"""Decode once into a memory-mapped uint8 cache; augment whole batches on the training device.

Every split is decoded once, at the model's input size, into one cache file (``cachefile.py``) that each process
maps instead of loading: epochs after the first never touch JPEG/PNG decoding, the ranks of a node share one copy
of the pixels, and a set larger than memory trains from the page cache. Augmentation runs batched on tensors (on
the GPU when there is one) instead of per sample in PIL.

What happens to the pixels (resize, normalisation, augmentation) is :mod:`fdrl.data.preprocess`'s, which inference
shares.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import FERDataset
from .cachefile import SUFFIX, CacheFileError, RowReader, RowWriter, read_rows
from .decode import RowSink, SharedRows, available_cores, decode_rows
from .ranks import decode_once, in_process_group


@dataclass
class TensorSet:
    # (N, C, S, S) uint8, C = 1 (grayscale) or 3; mapped from the cache file when cached. For a set joined from
    # parts of which one is cached (concat_sets), a tensor on the "meta" device: its shape, no pixels (read rows()).
    images: torch.Tensor
    targets: torch.Tensor  # (N,) int64, or (N, K) float soft targets
    labels: torch.Tensor  # (N,) int64 hard labels (argmax of soft targets)
    ids: list[str]
    classes: list[str]
    skipped: list[tuple[str, str]]
    reader: RowReader | ConcatRows | None = None  # the cache file's rows (or the parts'), read by batch (see rows)

    def __len__(self) -> int:
        return self.images.shape[0]

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """``images[index]`` in the order asked: the batches of training and evaluation. From a cache file they
        are read in ascending row order, a run of consecutive rows at a time, without mapping their pages into
        this process (:class:`~fdrl.data.cachefile.RowReader`)."""
        order = torch.argsort(index)
        ascending = index[order]
        got = self.images[ascending] if self.reader is None else torch.from_numpy(self.reader.read(ascending.numpy()))
        out = torch.empty_like(got)
        out[order] = got
        return out


class ConcatRows:
    """The rows of several tensor sets one after another, read as one set's: each run of the rows asked goes to
    the part that holds it, which reads it from its cache file (or its memory), so no part is loaded whole."""

    def __init__(self, parts: list[TensorSet]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0, *(len(p) for p in parts)])  # part k holds rows starts[k] .. starts[k + 1] - 1
        self.row_shape = tuple(parts[0].images.shape[1:])

    def read(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (ascending) as a (B, C, H, W) uint8 array."""
        out = np.empty((len(index), *self.row_shape), np.uint8)
        cuts = np.searchsorted(index, self.starts)  # index[cuts[k]:cuts[k + 1]] lie in part k
        for k, part in enumerate(self.parts):
            a, b = int(cuts[k]), int(cuts[k + 1])
            if b > a:
                out[a:b] = part.rows(torch.from_numpy(index[a:b] - self.starts[k])).numpy()
        return out


def concat_sets(parts: list[TensorSet]) -> TensorSet:
    """One set of ``parts`` (the same classes, row shape and kind of targets), their rows one after another.
    Parts all in memory are joined into one tensor; once a part is read from its cache file, the joined set reads
    its rows through :class:`ConcatRows` and its ``images`` is a shape on the "meta" device, never the pixels."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for p in parts[1:]:
        if (p.classes, p.images.shape[1:], p.targets.dim()) != (first.classes, first.images.shape[1:],
                                                                first.targets.dim()):
            raise DataError(f"cannot join tensor sets of classes {first.classes} and {p.classes}, rows "
                            f"{tuple(first.images.shape[1:])} and {tuple(p.images.shape[1:])}, targets of "
                            f"{first.targets.dim()} and {p.targets.dim()} dimensions")
    n = sum(len(p) for p in parts)
    if all(p.reader is None for p in parts):
        images, reader = torch.cat([p.images for p in parts]), None
    else:
        images, reader = torch.empty((n, *first.images.shape[1:]), dtype=torch.uint8, device="meta"), ConcatRows(parts)
    return TensorSet(images, torch.cat([p.targets for p in parts]), torch.cat([p.labels for p in parts]),
                     [i for p in parts for i in p.ids], list(first.classes), [s for p in parts for s in p.skipped],
                     reader)


def _fingerprint(ds: FERDataset, size: int, grayscale: bool, soft: bool, source_size: int | None = None) -> str:
    crop = getattr(ds.face_crop, "key", "none")
    via = f"|via{source_size}" if source_size is not None else ""  # absent: the keys of older caches still hold
    h = hashlib.sha1(f"{ds.name}|{ds.split}|{size}{via}|{grayscale}|{soft}|{crop}|v1".encode())
    for s in ds.samples:
        h.update(s.id.encode())
        h.update(str(s.label).encode())
        if s.box:
            h.update(str(s.box).encode())
        if s.path:
            st = os.stat(s.path) if os.path.exists(s.path) else None
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode() if st else b"absent")
        elif s.pixels is not None:
            h.update(hashlib.sha1(s.pixels.tobytes()).digest())
    return h.hexdigest()[:16]


def cache_path(cache_dir: str | os.PathLike[str], ds: FERDataset, size: int, grayscale: bool, soft: bool = False,
               source_size: int | None = None) -> Path:
    """The cache file of ``ds`` decoded at ``size`` (its name says data set, split, size and colour; the key
    hashes the preprocessing, the face crop and every sample's id, label and file size and time)."""
    key = _fingerprint(ds, size, grayscale, soft, source_size)
    return Path(cache_dir) / f"{ds.name}-{ds.split.replace('/', '_')}-{size}{'g' if grayscale else 'c'}-{key}{SUFFIX}"


def _report_skipped(ds: FERDataset, skipped: list[tuple[str, str]], log: Callable[[str], None]) -> None:
    """Images that failed to decode (beyond those the listing already skipped): one log line with the count and
    the first; a :class:`DataError` in ``on_error="strict"`` mode, for skips read from a cache that a lenient run
    built (a fresh strict decode stops at the first unreadable image)."""
    fresh = skipped[len(ds.skipped):]
    if not fresh:
        return
    if ds.on_error == "strict":
        where, why = fresh[0]
        raise DataError(f"{ds.name}: {where}: {why}")
    log(f"{ds.name}/{ds.split}: skipped {len(fresh)} unreadable image(s), e.g. {fresh[0]}")


def _decode_into(ds: FERDataset, sink: RowSink, size: int, grayscale: bool, soft: bool,
                 source_size: int | None, workers: int | None) -> dict[str, Any]:
    """Decode ``ds`` into ``sink``, readable images first and in order; returns the meta of the rows kept (ids,
    labels, targets, soft) and every skip (the listing's, then the decode's)."""
    failed = decode_rows(ds, sink, size, grayscale, source_size, workers)
    keep = np.array([i for i in range(len(ds)) if i not in failed], dtype=np.int64)
    skipped = [*map(list, ds.skipped), *([ds.samples[i].path or ds.samples[i].id, why] for i, why in failed.items())]
    if not len(keep):
        raise DataError(f"{ds.name}/{ds.split}: no readable images ({len(skipped)} skipped)")
    sink.compact(keep)
    labels = [ds.target(int(i)) for i in keep]  # hard label (argmax of the soft target where there is no label)
    soft = soft and ds.has_soft_targets
    targets = np.stack([ds.target(int(i), soft=True) for i in keep]).tolist() if soft else labels
    return {"ids": [ds.samples[i].id for i in keep], "labels": labels, "targets": targets, "soft": soft,
            "skipped": skipped}


def _tensor_set(images: np.ndarray, reader: RowReader | None, meta: dict[str, Any], classes: list[str]) -> TensorSet:
    labels = torch.tensor(meta["labels"], dtype=torch.int64)
    targets = torch.tensor(meta["targets"], dtype=torch.float32) if meta["soft"] else labels
    return TensorSet(torch.from_numpy(images), targets, labels, list(meta["ids"]), classes,
                     [(str(w), str(r)) for w, r in meta["skipped"]], reader)


def decode_dataset(ds: FERDataset, size: int, grayscale: bool, soft: bool = False,
                   cache_dir: str | None = None, log: Callable[[str], None] = print, source_size: int | None = None,
                   workers: int | None = None) -> TensorSet:
    """Decode every image of ``ds`` (or map the cache); unreadable images are skipped and reported. ``workers``:
    decode processes (None: every available core). Under ``torchrun`` one rank per node decodes, the others map
    its file (``ranks.py``)."""
    if ds.face_crop is not None and not hasattr(ds.face_crop, "key"):
        cache_dir = None  # a crop function without a ``key`` cannot be told apart from another: never cached
    shape = (len(ds), 1 if grayscale else 3, size, size)
    if not cache_dir:
        if workers is None and in_process_group():  # every rank of the node decodes its own copy: share the cores
            workers = max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        sink = SharedRows(shape)
        meta = _decode_into(ds, sink, size, grayscale, soft, source_size, workers)
        out = _tensor_set(sink.rows[:len(meta["ids"])], None, meta, ds.classes)
        _report_skipped(ds, out.skipped, log)
        return out
    path = cache_path(cache_dir, ds, size, grayscale, soft, source_size)

    def read() -> TensorSet:
        return _tensor_set(*read_rows(path, shape[1:]), ds.classes)

    def build() -> TensorSet:
        try:
            return read()
        except FileNotFoundError:
            pass
        except CacheFileError as exc:
            log(f"{exc}: decoding again")
        old = path.with_suffix(".pt")
        if old.is_file():
            log(f"note: {old} is a cache in the format of earlier versions, no longer read; delete it to free "
                f"{old.stat().st_size / 2**20:.0f} MiB")
        with RowWriter(path, shape) as w:  # concurrent runs may build the same cache: each renames a whole file
            meta = _decode_into(ds, w, size, grayscale, soft, source_size, workers)
            w.commit(len(meta["ids"]), meta)
        return read()

    out = decode_once(path, build, read)
    _report_skipped(ds, out.skipped, log)  # a cache built by a lenient run must not make a strict one lenient
    return out
