"""Batched prediction over a uint8 tensor set, sharded across DDP ranks with every sample counted once."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data.tensors import BatchTransform, TensorSet, tta_views
from .amp import amp_dtype, resolve_amp


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def predict(model: nn.Module, data: TensorSet, transform: BatchTransform, device: torch.device,
            batch_size: int = 256, tta: str = "none", amp: str = "none", channels_last: bool = False,
            keep_features: bool = True) -> dict[str, Any]:
    """Predictions for every sample of ``data`` (rank r handles samples r, r+W, ...; results gathered)."""
    rank, world = _dist()
    was_training = model.training
    model.eval()
    idx = torch.arange(rank, len(data), world)
    probs, alphas, feats = [], [], []
    dtype = amp_dtype(resolve_amp(amp, device))
    for start in range(0, len(idx), batch_size):
        bi = idx[start:start + batch_size]
        x = transform(data.images[bi].to(device, non_blocking=True), train=False)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        p = 0
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            views = tta_views(x, tta)
            for k, v in enumerate(views):
                out = model(v)
                p = p + F.softmax(out.logits.float(), -1)
                if k == 0:
                    first = out
        probs.append((p / len(views)).cpu())
        if first.alpha is not None:
            alphas.append(first.alpha.float().cpu())
        if keep_features:
            feats.append(first.feature.float().cpu())
    local = {
        "index": idx,
        "probs": torch.cat(probs) if probs else torch.zeros(0, 1),
        "alpha": torch.cat(alphas) if alphas else None,
        "features": torch.cat(feats) if feats else None,
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
        "ids": list(data.ids),
        "index_seen": np.sort(order.numpy()),
    }


def tta_metrics(model: nn.Module, data: TensorSet, transform: BatchTransform, device: torch.device,
                batch_size: int, tta: str, amp: str = "none", channels_last: bool = False) -> dict[str, float]:
    """Accuracy and mean class accuracy with test-time augmentation, keyed to sit beside the plain figures."""
    from .report import classification_metrics

    res = predict(model, data, transform, device, batch_size, tta, amp, channels_last, keep_features=False)
    m = classification_metrics(res["preds"], res["labels"], data.classes)
    return {f"accuracy_tta_{tta}": m["accuracy"], f"mean_class_accuracy_tta_{tta}": m["mean_class_accuracy"]}
