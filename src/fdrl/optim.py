"""Optimiser parameter groups and the paper's schedule.

Groups are explicit and named so that nothing relies on "the first group is the decayed one":
backbone / heads, each split into decay and no-decay (biases, norms, 1-D tensors), plus the learned centres
(never decayed) when ``centre_update="learned"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .literals import check_literal_fields


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # spec §5.7: 0 (paper); 5e-4 is CDNet's
    backbone_lr_scale: float = 1.0  # lr multiplier for the trunk
    grad_clip: float | None = None  # max global gradient norm (None: no clipping, as in the paper)

    def __post_init__(self) -> None:
        check_literal_fields(self)
        self.betas = tuple(self.betas)  # type: ignore[assignment]  # YAML gives a list


@dataclass
class SchedConfig:
    name: Literal["multistep", "cosine", "constant", "plateau"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [10, 18, 25, 32])
    gamma: float = 0.1  # multistep and plateau: lr factor
    warmup_epochs: int = 0
    patience: int = 3  # plateau: epochs without a validation-accuracy gain before the lr drops

    def __post_init__(self) -> None:
        check_literal_fields(self)
        if self.name == "plateau" and self.warmup_epochs:
            raise ValueError("sched.warmup_epochs is not supported with sched.name=plateau")


def _no_decay(name: str, param: nn.Parameter, norm_params: set[int]) -> bool:
    return param.ndim <= 1 or name.endswith("bias") or id(param) in norm_params


def param_groups(model: nn.Module, criterion: nn.Module | None, cfg: OptimConfig) -> list[dict]:
    """Named groups; every trainable parameter of model and criterion is in exactly one."""
    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm)
        for p in m.parameters(recurse=False)
    }
    trunk = {id(p) for p in model.backbone.parameters()}  # by identity, whatever the parameter names
    buckets: dict[str, list[nn.Parameter]] = {
        "backbone_decay": [], "backbone_no_decay": [], "heads_decay": [], "heads_no_decay": []
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "backbone" if id(p) in trunk else "heads"
        buckets[f"{part}_{'no_decay' if _no_decay(name, p, norm_params) else 'decay'}"].append(p)
    groups = []
    for gname, params in buckets.items():
        if not params:
            continue
        lr = cfg.lr * (cfg.backbone_lr_scale if gname.startswith("backbone") else 1.0)
        wd = 0.0 if gname.endswith("no_decay") else cfg.weight_decay
        groups.append({"name": gname, "params": params, "lr": lr, "weight_decay": wd})
    if criterion is not None:
        centres = [p for p in criterion.parameters() if p.requires_grad]
        if centres:
            groups.append({"name": "centres", "params": centres, "lr": cfg.lr, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, criterion: nn.Module | None, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, criterion, cfg)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """An epoch-stepped schedule: ``step()`` once per epoch (``plateau``: ``step(val_accuracy)``)."""
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.gamma,
                                                          patience=cfg.patience)
    if cfg.name == "multistep":
        main = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    elif cfg.name == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs - cfg.warmup_epochs))
    else:
        main = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if cfg.warmup_epochs <= 0:
        return main
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=cfg.warmup_epochs)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[cfg.warmup_epochs])
