"""Freezing a trunk: which parameters train, and frozen norm layers kept on their running statistics.

One rule for every trunk with ``stages`` (its residual stages, input side first): ``none`` trains everything,
``all`` nothing, ``all_but_last`` only the last stage. A frozen parameter has ``requires_grad=False``, so the
optimiser never sees it (:func:`fdrl.optim.param_groups` skips it) and it stays bit-identical; a batch norm whose
parameters are frozen is also kept in eval mode, or training would still move its running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

FreezeMode = Literal["none", "all", "all_but_last"]
FREEZE_MODES: tuple[str, ...] = ("none", "all", "all_but_last")


def freeze_stages(trunk: nn.Module, stages: Sequence[nn.Module], mode: FreezeMode) -> None:
    """Set ``requires_grad`` of ``trunk``'s parameters for ``mode``; ``stages[-1]`` is the last stage."""
    if mode not in FREEZE_MODES:
        raise ValueError(f"freeze mode must be 'none', 'all' or 'all_but_last', got {mode!r}")
    for p in trunk.parameters():
        p.requires_grad_(mode == "none")
    if mode == "all_but_last":
        for p in stages[-1].parameters():
            p.requires_grad_(True)


def keep_frozen_norms_in_eval(module: nn.Module) -> None:
    """Put every batch norm whose parameters are all frozen in eval mode (call after ``module.train()``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
