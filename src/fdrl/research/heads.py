"""Head-only training on cached trunk features (:mod:`fdrl.research.features`): many seeds in minutes.

The model is the run config's own (FDRL or the baseline, same loss, optimiser and schedule), built with its trunk
frozen; only ``forward_head`` runs, on one of the two cached views per image per epoch (the random horizontal
flip of the ``basic`` augmentation; other augmentations need the images). No selection: the figures are those
of the last epoch, so reporting them on the validation split is not optimistic.

On maps cached at the last stage's input (``level="last_stage_input"``) the model is built with
``trunk.freeze=all_but_last`` and the extraction trunk's weights, and each step runs the last stage, the global
average and the head: a last-stage fine-tune without the rest of the trunk.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig
from ..engine.decomposition import EPOCH_FIGURES, decomposition_metrics, latent_face_stats
from ..engine.report import classification_metrics
from ..engine.trainer import step_scheduler
from ..errors import TrainingError
from ..losses import create_criterion
from ..models import create_model
from ..models.trunks import from_last_stage
from ..optim import build_optimizer, build_scheduler
from .features import FeatureSet


def head_output(model: torch.nn.Module, features: torch.Tensor):
    """``model``'s output for cached features: pooled (B, F) straight into the head, maps (B, C, H, W) through the
    trunk's last stage first."""
    if features.dim() == 4:
        features = from_last_stage(model.backbone, features.float())
    return model.forward_head(features)


@torch.no_grad()
def evaluate_head(model: torch.nn.Module, feats: FeatureSet, batch_size: int = 1024) -> dict[str, float]:
    """Accuracy and mean class accuracy of ``model``'s head on the plain view of ``feats``."""
    model.eval()
    outs = [head_output(model, feats.plain[i:i + batch_size]) for i in range(0, len(feats), batch_size)]
    preds = torch.cat([o.logits.argmax(-1) for o in outs])
    m = classification_metrics(preds.numpy(), feats.labels.numpy(), feats.classes)
    row = {"accuracy": m["accuracy"], "mean_class_accuracy": m["mean_class_accuracy"]}
    if outs[0].alpha is not None:
        stats = [latent_face_stats(o.latent) for o in outs]
        dec = decomposition_metrics(torch.cat([o.alpha for o in outs]).numpy(), feats.labels.numpy(),
                                    len(feats.classes), torch.cat([c for c, _ in stats]).numpy(),
                                    torch.cat([r for _, r in stats]).numpy())
        row.update({k: dec[k] for k in EPOCH_FIGURES})
    return row


def train_head(cfg: TrainConfig, train: FeatureSet, val: FeatureSet, seed: int, epochs: int | None = None,
               trunk_state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Train ``cfg``'s model head from seed ``seed`` on ``train`` features; its last-epoch figures on ``val``.
    On last-stage maps the last stage trains too, starting from ``trunk_state`` (the extraction trunk's weights)."""
    epochs = cfg.train.epochs if epochs is None else epochs
    maps = train.plain.dim() == 4
    if maps and trunk_state is None:
        raise TrainingError("last-stage maps need the weights of the trunk that made them (trunk_state)")
    torch.manual_seed(seed)
    # Pooled features: the trunk never runs, so no weights to load, and frozen so that no optimiser group holds it.
    model = create_model(cfg.model_name, num_classes=len(train.classes),
                         **{**cfg.model_options(), "pretrained_path": None,
                            "freeze": "all_but_last" if maps else "all"})
    if maps:
        model.backbone.load_state_dict(trunk_state)
    elif model.backbone.num_features != train.plain.shape[1]:
        raise TrainingError(f"cached features have {train.plain.shape[1]} dimensions, the trunk of "
                            f"{cfg.model_name} gives {model.backbone.num_features}")
    criterion = create_criterion(model, cfg.loss)
    criterion.set_class_prior(torch.bincount(train.labels, minlength=len(train.classes)))
    optimizer = build_optimizer(model, criterion, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, epochs)
    gen = torch.Generator().manual_seed(seed)
    n, b = len(train), cfg.train.batch_size
    t0 = time.perf_counter()
    row: dict[str, Any] = {}
    for epoch in range(epochs):
        model.train()
        criterion.train()
        perm = torch.randperm(n, generator=gen)
        pick = (torch.rand(n, generator=gen) < 0.5).view(-1, *[1] * (train.plain.dim() - 1))
        view = torch.where(pick, train.flipped, train.plain)
        for start in range(0, max(1, n - b + 1), b):  # the ragged last batch is dropped, as in training
            idx = perm[start:start + b]
            parts = criterion(head_output(model, view[idx]), train.targets[idx])
            if not torch.isfinite(parts["loss"]):
                raise TrainingError(f"non-finite loss at epoch {epoch + 1} (seed {seed}); lower optim.lr")
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimizer.step()
        m = evaluate_head(model, val)
        row = {"epoch": epoch + 1, **{f"val_{k}": v for k, v in m.items()}}
        step_scheduler(scheduler, row)
    return {"seed": seed, **row, "seconds": round(time.perf_counter() - t0, 1)}


def paired_summary(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean and sample std of ``a``, ``b`` and of the per-seed difference a - b."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = x - y

    def ms(v: np.ndarray) -> tuple[float, float]:
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    (ma, sa), (mb, sb), (md, sd) = ms(x), ms(y), ms(d)
    return {"mean_a": ma, "std_a": sa, "mean_b": mb, "std_b": sb, "mean_diff": md, "std_diff": sd,
            "wins": int((d > 0).sum()), "n": len(d)}
