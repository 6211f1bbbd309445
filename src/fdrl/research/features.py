"""Pooled features of a frozen trunk, computed once per image (plain and horizontally flipped) and cached.

With ``trunk.freeze=all`` nothing before the head changes during training, so the trunk's pooled feature of each
image is a constant: computing it once turns a head-only run into seconds per epoch instead of a trunk forward
per image per epoch. The flipped view is the training augmentation the cache can keep (each epoch picks one of
the two views per image). The cache file is keyed like the image cache — data set, split, input size, colour, a
digest of the decoded images and labels — plus the normalisation, the trunk's name and a digest of its weights,
so another trunk, other weights or other images never read a stale file.

``level="last_stage_input"`` caches instead the maps entering the trunk's last stage (fp16, half the bytes), for a
last-stage fine-tune (``trunk.freeze=all_but_last``) that runs only that stage per epoch
(:func:`fdrl.models.trunks.from_last_stage`); its file name says the level.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from ..checkpoint import atomic_save
from ..config import Preprocessing
from ..data.preprocess import BatchTransform
from ..data.tensors import TensorSet
from ..models.trunks import last_stage_input
from ..runtime import weights_digest

FORMAT = "fdrl-features-v1"
FeatureLevel = Literal["pooled", "last_stage_input"]
FEATURE_LEVELS: tuple[str, ...] = get_args(FeatureLevel)


@dataclass
class FeatureSet:
    """The trunk features of every image of a split: ``plain`` and ``flipped``, (N, num_features) pooled or
    (N, C, H, W) maps entering the last stage."""

    plain: torch.Tensor
    flipped: torch.Tensor
    targets: torch.Tensor  # (N,) class indices, or (N, K) soft targets
    labels: torch.Tensor  # (N,) hard labels
    classes: list[str]
    stats: dict[str, Any] = field(default_factory=dict)  # how it was obtained: cache hit, seconds, img/s, bytes

    def __len__(self) -> int:
        return self.plain.shape[0]


def content_digest(data: TensorSet) -> str:
    """A digest of the decoded images and their targets: equal digests mean the same inputs. The images are read
    by rows, a few MiB at a time (a set may be larger than memory, or joined from cached parts)."""
    h = hashlib.sha1()
    h.update(str((data.images.dtype, tuple(data.images.shape))).encode())
    step = max(1, 2**26 // max(1, data.images.shape[1:].numel()))  # rows in 64 MiB
    for start in range(0, len(data), step):
        h.update(data.rows(torch.arange(start, min(start + step, len(data)))).numpy())
    for t in (data.targets, data.labels):
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.contiguous().numpy())  # the buffer itself, no copy
    return h.hexdigest()[:16]


def feature_cache_path(cache_dir: str | os.PathLike[str], dataset: str, split: str, prep: Preprocessing,
                       trunk_name: str, trunk: nn.Module, data: TensorSet, level: FeatureLevel = "pooled") -> Path:
    """The cache file of ``data``'s features under ``trunk`` (see the module docstring for the key)."""
    norm = hashlib.sha1(f"{tuple(prep.mean)}|{tuple(prep.std)}".encode()).hexdigest()[:6]
    tag = "" if level == "pooled" else f"-{level}"  # pooled files keep the names they had before levels
    name = (f"{dataset}-{split.replace('/', '_')}-{prep.input_size}{'g' if prep.grayscale else 'c'}-{norm}-"
            f"{trunk_name}-{weights_digest(trunk)[:12]}-{content_digest(data)}{tag}.features.pt")
    return Path(cache_dir) / name


@torch.no_grad()
def extract_features(trunk: nn.Module, data: TensorSet, transform: BatchTransform, device: torch.device,
                     batch_size: int = 256, level: FeatureLevel = "pooled") -> tuple[torch.Tensor, torch.Tensor]:
    """(plain, flipped) features, the trunk in eval mode: pooled (N, num_features) in fp32, or the last stage's
    input maps (N, C, H, W) in fp16."""
    if level not in FEATURE_LEVELS:
        raise ValueError(f"feature level must be one of {FEATURE_LEVELS}, got {level!r}")
    was_training = trunk.training
    trunk.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        return trunk(x).float().cpu() if level == "pooled" else last_stage_input(trunk, x).half().cpu()

    plain, flipped = [], []
    for start in range(0, len(data), batch_size):
        x = transform(data.rows(torch.arange(start, min(start + batch_size, len(data)))).to(device), train=False)
        plain.append(run(x))
        flipped.append(run(x.flip(-1)))
    trunk.train(was_training)
    return torch.cat(plain), torch.cat(flipped)


def cached_features(trunk: nn.Module, trunk_name: str, data: TensorSet, dataset: str, split: str,
                    prep: Preprocessing, device: torch.device, cache_dir: str | None, batch_size: int = 256,
                    log=print, level: FeatureLevel = "pooled") -> FeatureSet:
    """``data``'s features from the cache when present, else extracted (and cached when ``cache_dir``)."""
    path = (feature_cache_path(cache_dir, dataset, split, prep, trunk_name, trunk, data, level) if cache_dir
            else None)
    if path is not None and path.is_file():
        d = torch.load(path, weights_only=True)
        return FeatureSet(d["plain"], d["flipped"], data.targets, data.labels, data.classes,
                          {"cached": True, "path": str(path), "bytes": path.stat().st_size})
    t0 = time.perf_counter()
    plain, flipped = extract_features(trunk, data, BatchTransform(prep.mean, prep.std), device, batch_size, level)
    seconds = time.perf_counter() - t0
    stats: dict[str, Any] = {"cached": False, "seconds": round(seconds, 2),
                             "images_per_second": round(2 * len(data) / max(seconds, 1e-9), 1)}
    if path is not None:
        atomic_save({"format": FORMAT, "plain": plain, "flipped": flipped}, path)  # concurrent runs may share it
        stats.update(path=str(path), bytes=path.stat().st_size)
    log(f"{dataset}/{split}: {len(data)} images x 2 views -> features {tuple(plain.shape)} in {seconds:.1f} s "
        f"({stats['images_per_second']} img/s)" + (f", cached in {path}" if path else ""))
    return FeatureSet(plain, flipped, data.targets, data.labels, data.classes, stats)
