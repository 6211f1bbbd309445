"""Evaluation: batched prediction over a uint8 tensor set (sharded across DDP ranks, every sample counted
once), and :func:`evaluate_checkpoint`, the library form of ``fdrl eval``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..checkpoint import LoadedCheckpoint, load_checkpoint
from ..config import DataConfig, TrainConfig, from_dict
from ..data.loading import build_split, training_ids
from ..data.preprocess import BatchTransform, tta_views
from ..data.tensors import TensorSet
from ..errors import ConfigError, DataError
from ..runtime import amp_dtype, resolve_device
from .decomposition import latent_face_stats
from .report import classification_metrics, evaluation_metrics, write_report


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def predict(model: nn.Module, data: TensorSet, transform: BatchTransform, device: torch.device,
            batch_size: int = 256, tta: str = "none", amp: str = "none", channels_last: bool = False,
            keep_features: bool = True, temperature: float = 1.0) -> dict[str, Any]:
    """Predictions for every sample of ``data`` (rank r handles samples r, r+W, ...; results gathered); the
    probabilities are softmax(logits / ``temperature``), averaged over the ``tta`` views."""
    rank, world = _dist()
    was_training = model.training
    model.eval()
    idx = torch.arange(rank, len(data), world)
    probs, alphas, feats, lat_cos, lat_rank = [], [], [], [], []
    dtype = amp_dtype(amp, device)
    for start in range(0, len(idx), batch_size):
        bi = idx[start:start + batch_size]
        x = transform(data.rows(bi).to(device, non_blocking=True), train=False)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        p = 0
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            views = tta_views(x, tta)
            for k, v in enumerate(views):
                out = model(v)
                p = p + F.softmax(out.logits.float() / temperature, -1)
                if k == 0:
                    first = out
        probs.append((p / len(views)).cpu())
        if first.alpha is not None:
            alphas.append(first.alpha.float().cpu())
        if first.latent is not None:
            cos, rank = latent_face_stats(first.latent)
            lat_cos.append(cos)
            lat_rank.append(rank)
        if keep_features:
            feats.append(first.feature.float().cpu())
    local = {
        "index": idx,
        "probs": torch.cat(probs) if probs else torch.zeros(0, 1),
        "alpha": torch.cat(alphas) if alphas else None,
        "features": torch.cat(feats) if feats else None,
        "latent_cosine": torch.cat(lat_cos) if lat_cos else None,
        "latent_rank": torch.cat(lat_rank) if lat_rank else None,
    }
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, local)
        parts = gathered
    else:
        parts = [local]
    order = torch.cat([p["index"] for p in parts])
    inv = torch.empty_like(order)
    inv[order] = torch.arange(len(order))

    def cat(key: str) -> np.ndarray | None:
        if parts[0][key] is None:
            return None
        return torch.cat([p[key] for p in parts])[inv].numpy()

    prob = cat("probs")
    model.train(was_training)
    return {
        "probs": prob,
        "preds": prob.argmax(1),
        "labels": data.labels.numpy(),
        "alpha": cat("alpha"),
        "features": cat("features"),
        "latent_cosine": cat("latent_cosine"),
        "latent_rank": cat("latent_rank"),
        "ids": list(data.ids),
        "index_seen": np.sort(order.numpy()),
    }


def tta_metrics(model: nn.Module, data: TensorSet, transform: BatchTransform, device: torch.device,
                batch_size: int, tta: str, amp: str = "none", channels_last: bool = False) -> dict[str, float]:
    """Accuracy and mean class accuracy with test-time augmentation, keyed to sit beside the plain figures."""
    res = predict(model, data, transform, device, batch_size, tta, amp, channels_last, keep_features=False)
    m = classification_metrics(res["preds"], res["labels"], data.classes)
    return {f"accuracy_tta_{tta}": m["accuracy"], f"mean_class_accuracy_tta_{tta}": m["mean_class_accuracy"]}


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], dataset: str, root: str | None, split: str = "test", *,
                        options: dict[str, Any] | None = None, face_detector: str | None = None, tta: str = "none",
                        device: str = "auto", batch_size: int = 256, out: str | os.PathLike[str] | None = None,
                        check_overlap: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``dataset``/``split`` (``root`` as its publisher lays it out), as
    ``fdrl eval`` reports them; with ``out``, also the report folder (metrics.json and plots).

    The split is built as training builds it: the checkpoint's preprocessing (size, face crop; ``face_detector``
    overrides the detector), its run's ``seed``/``val_fraction`` (so ``val`` or ``train/holdout`` are the same
    samples), and its decode cache settings. ``options`` are the data set's options (e.g. ``label_mode``).
    When ``dataset`` is the one the checkpoint was trained on, samples of its training split found in ``split``
    are counted (``train_overlap``) and warned about, as they make the figure optimistic (``check_overlap=False``
    skips listing the training split).
    """
    dev = resolve_device(device)  # a device this machine lacks fails before any image is decoded
    loaded = load_checkpoint(checkpoint)
    run, d, data = checkpoint_split(loaded, dataset, root, split, options=options, face_detector=face_detector,
                                    log=log)
    prep = d.preprocessing
    extra: dict[str, Any] = {"tta": "none", "skipped": len(data.skipped)}
    overlap = _training_overlap(run, d, data, log) if check_overlap and loaded.config else 0
    if overlap:
        extra["train_overlap"] = overlap
        log(f"warning: {overlap} of the {len(data)} samples of {dataset}/{split} are in the checkpoint's "
            f"training split")
    model, transform = loaded.model.to(dev), BatchTransform(prep.mean, prep.std)
    res = predict(model, data, transform, dev, batch_size)
    if tta != "none":
        extra.update(tta_metrics(model, data, transform, dev, batch_size, tta))
    if out is None:
        return evaluation_metrics(res, data.classes, split, os.fspath(checkpoint), extra)
    return write_report(Path(out), res, data.classes, split, os.fspath(checkpoint), extra=extra)


def checkpoint_split(loaded: LoadedCheckpoint, dataset: str, root: str | None, split: str, *,
                     options: dict[str, Any] | None = None, face_detector: str | None = None,
                     log: Callable[[str], None] = print) -> tuple[TrainConfig, DataConfig, TensorSet]:
    """``dataset``/``split`` decoded as the checkpoint's training built its splits (its preprocessing, with
    ``face_detector`` overriding the detector; its run's seed and val_fraction; its cache settings); returns
    the run config, the data config used and the split. Refuses a data set whose classes differ."""
    run = _run_config(loaded.config, log)
    prep = dataclasses.replace(loaded.preprocessing, face_detector=face_detector or loaded.preprocessing.face_detector)
    d = dataclasses.replace(run.data, dataset=dataset, root=root, options=dict(options or {}), max_samples=None,
                            preprocessing=prep)
    data = build_split(d, split, run.split_seed, split, log=log)
    if list(data.classes) != list(loaded.classes):
        raise ConfigError(f"checkpoint classes {loaded.classes} differ from {dataset} classes {data.classes}")
    return run, d, data


def _run_config(raw: dict[str, Any] | None, log: Callable[[str], None]) -> TrainConfig:
    """The checkpoint's training config; defaults when it has none or one this version cannot read."""
    try:
        return from_dict(TrainConfig, raw) if raw else TrainConfig()
    except ConfigError as exc:
        log(f"warning: the checkpoint's training config is not readable here ({exc}); using defaults")
        return TrainConfig()


def _training_overlap(run: TrainConfig, d: DataConfig, data: TensorSet, log: Callable[[str], None]) -> int:
    """How many samples of ``data`` (built from ``d``) the run trained on; 0 for another data set."""
    if run.data.dataset != d.dataset:
        return 0
    try:
        return len(training_ids(run, d.root) & set(data.ids))
    except DataError as exc:  # the run's split cannot be listed from this copy: say so, evaluate anyway
        log(f"warning: could not check which samples the checkpoint trained on ({exc})")
        return 0
